"""The copier made per answer shape (``_cache/copier.py``) and the copies the in-memory store
hands out with it: every caller's answer is its own, whichever way it was copied (the first hit
loads the marshal snapshot, the second plans the shape's copier from it, later ones run it;
objects are deep-copied; immutable answers are shared as they are)."""

import asyncio
import marshal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmguard as lg
from llmguard._cache import copier
from llmguard._cache.copier import plan

COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000,
    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                 "message": {"role": "assistant", "content": "Paris.", "tool_calls": []}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}

leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                   st.text(max_size=5), st.binary(max_size=3))

def containing(inner):
    return st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                     st.dictionaries(st.text(max_size=4), inner, max_size=4))


json_shaped = containing(st.recursive(leaves, containing, max_leaves=30))


def containers(value):
    """Every container (dict, list) in ``value``, tuples looked into."""
    found = []
    if type(value) in (dict, list):
        found.append(value)
    children = value.values() if type(value) is dict else value if type(value) in (
        list, tuple) else ()
    for child in children:
        found.extend(containers(child))
    return found


def vandalise(value):
    """Edit every container of ``value`` in place, nested ones first."""
    for found in reversed(containers(value)):
        if type(found) is dict:
            for key in list(found):
                found[key] = "edited"
            found["new"] = 1
        else:
            found[:] = ["edited"]


@settings(max_examples=300, deadline=None)
@given(json_shaped)
def test_a_copy_is_equal_shares_only_leaves_and_editing_it_changes_no_other(value) -> None:
    """A planned copy equals the value, has no container of the value or of another copy, and
    editing all of it leaves the next copy equal to the value."""
    private = marshal.loads(marshal.dumps(value, 2))
    planned = plan(private)
    assert planned is not None  # JSON-shaped and small: always planned
    make, parts = planned
    first, second = make(parts), make(parts)
    assert first == value == second and type(first) is type(value)
    mine = {id(c) for c in containers(private)}
    assert not mine & {id(c) for c in containers(first)}
    assert not {id(c) for c in containers(first)} & {id(c) for c in containers(second)}
    vandalise(first)
    assert make(parts) == value == private


def nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("value", [
    {1: ["int keys"]}, [object()], {"a": {1, 2}}, nested(40), list(range(300)) + [[]],
])
def test_what_is_not_json_shaped_or_too_large_is_not_planned(value) -> None:
    """Non-str keys, other types, nesting past 32 or more than 256 parts: copied as before."""
    assert plan(value) is None


def test_one_copier_per_shape_and_the_table_is_bounded() -> None:
    """Answers of one shape (any leaves) share a copier; the table of shapes stays bounded."""
    first, _ = plan({"a": "x", "b": [1, {"c": 2}]})
    second, _ = plan({"a": "y", "b": [3, {"c": 4}]})
    assert first is second
    for n in range(copier._COPIERS + 5):
        plan([[None]] * (n + 1))
    assert len(copier._copiers) <= copier._COPIERS


class Reply:
    def __init__(self) -> None:
        self.choices = [{"message": {"content": "hi"}}]


class Answer(dict):
    pass


ANSWERS = {
    "completion": lambda: marshal.loads(marshal.dumps(COMPLETION)),
    "embedding": lambda: {"data": [{"embedding": [0.1, 0.2, 0.3], "index": 0}]},
    "tuple with a list": lambda: ("a", [1, 2]),
    "int keys": lambda: {1: ["one"]},
    "object": Reply,
    "dict subclass": lambda: Answer(choices=[{"text": "hi"}]),
}


@pytest.mark.parametrize("kind", ANSWERS)
async def test_no_caller_editing_its_answer_changes_another_callers(kind: str) -> None:
    """A miss, coalesced joiners, the first hit (a snapshot loaded), the second (the copier
    planned) and later hits (the shape's copier): each gets its own answer; a caller editing every part of it changes nothing any
    later or concurrent caller gets."""
    async def provider(prompt: str):
        await asyncio.sleep(1)
        return ANSWERS[kind]()

    ask = lg.guard(lg.Metrics(), lg.Cache(ttl=60))(provider)
    expected = ANSWERS[kind]()

    def edit(answer):
        if kind == "object":
            answer.choices[0]["message"]["content"] = "edited"
            answer.choices.append(None)
        else:
            vandalise(answer)

    def same(answer):
        if kind == "object":
            return answer.choices == expected.choices
        return answer == expected and type(answer) is type(expected)

    runner, joiner = await asyncio.gather(ask("q"), ask("q"))
    assert runner is not joiner
    edit(runner)
    assert same(joiner)
    edit(joiner)
    for _ in range(3):  # loaded, planned, copied
        answer = await ask("q")
        assert same(answer)
        edit(answer)
    assert same(await ask("q"))


@pytest.mark.parametrize("answer", ["text", b"bytes", 42, 1.5, None, ("a", 1, None),
                                    frozenset({"a"})])
async def test_an_immutable_answer_is_returned_as_it_is(answer) -> None:
    """str, bytes, numbers, None, and tuples and frozensets of them: nothing to copy."""
    async def provider(prompt: str):
        return answer

    ask = lg.guard(lg.Cache(ttl=60))(provider)
    assert await ask("q") is answer
    assert await ask("q") is answer
