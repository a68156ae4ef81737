"""The one JSONL line parser, as ``llmguard run``, Ray and the jobs API use it."""

from __future__ import annotations

import json

from llmguard._runners.lines import parse_object, parse_text

MESSAGES = [{"role": "user", "content": "a"}]


def chat(content: str, **extra: object) -> dict:
    return {"messages": [{"role": "user", "content": content}], **extra}


def test_both_request_forms_and_the_priority_field() -> None:
    """A plain line keeps its parameters minus metadata; a Batch API line sends its body under
    its custom_id; the priority field is read and removed from what is sent."""
    plain = parse_text(json.dumps(chat("a", model="m", temperature=0, metadata={"k": 1},
                                       prio=7)), 3, priority_field="prio")
    assert (plain.id, plain.line, plain.priority, plain.metadata) == ("line-3", 3, 7, {"k": 1})
    assert plain.request == {"messages": MESSAGES, "model": "m", "temperature": 0}
    batch = parse_text(json.dumps({"custom_id": "x", "method": "POST", "prio": 2,
                                   "url": "/v1/chat/completions", "body": chat("b")}), 4,
                       priority_field="prio")
    assert (batch.id, batch.priority, batch.request) == ("x", 2, chat("b"))
    bad = parse_text(json.dumps(chat("c", prio="high")), 5, priority_field="prio")
    assert bad.request is None and "priority field 'prio' must be a number" in bad.problem


def test_bad_lines_become_problems_naming_the_line() -> None:
    """Not JSON, not an object, no messages: each is a problem naming the line (or "row" when
    the line number is unknown), never an exception."""
    assert parse_text("{oops", 2).problem.startswith("line 2 is not valid JSON")
    assert parse_text("[1]", 3).problem.startswith("line 3 is a JSON list, not an object")
    assert parse_object({"model": "m"}, None, default_id="row-1").problem.startswith(
        "row has no non-empty 'messages' list")
    assert parse_object({"model": "m"}, None, default_id="row-1").id == "row-1"


def test_the_cli_ray_and_jobs_read_a_line_alike(tmp_path) -> None:
    """The same JSONL text read by ``llmguard run``, by Ray (raw text column) and by the jobs
    API gives the same id, request and metadata, and the same problem for a bad line."""
    from llmguard._cli.io import read_jobs
    from llmguard._serve.jobs.records import from_jsonl
    from llmguard.integrations.ray import parse_row

    lines = [json.dumps({"custom_id": "a", "body": chat("x", model="m"), "metadata": {"n": 1}}),
             json.dumps(chat("y", model="m")), "{not json"]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    cli = list(read_jobs(str(path)))
    ray = [parse_row({"line": i, "text": text}, text_column="text")
           for i, text in enumerate(lines, 1)]
    jobs = from_jsonl("\n".join(lines).encode(), None, 10)
    for c, r, j in zip(cli, ray, jobs, strict=True):
        assert (c.id, c.request, c.metadata, c.problem) == (r.id, r.request, r.metadata,
                                                            r.problem)
        assert (j["id"], j.get("request"), j["metadata"], j.get("problem")) == (
            c.id, c.request, c.metadata, c.problem)
