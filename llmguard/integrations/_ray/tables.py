"""Ray Data batches to row dicts, and records to the batch an actor returns."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import llmguard as lg

__all__ = ["COLUMNS", "RowFailed", "raise_failures", "to_rows", "to_table"]

#: Columns of the table a batch turns into (``record`` is the full record as a JSON line).
COLUMNS = ("id", "line", "ok", "model", "deployment", "error_kind", "attempts", "cached",
           "record")


class RowFailed(lg.LLMGuardError):
    """A row's call failed and ``on_error="raise"`` asked for a failed Ray task instead of an
    error record."""


def to_rows(batch: Any) -> list[dict[str, Any]]:
    """A Ray Data batch (pyarrow Table, pandas DataFrame, dict of arrays, list) as row dicts."""
    if hasattr(batch, "to_pylist"):  # pyarrow.Table: plain Python values, the best form
        return batch.to_pylist()
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas.DataFrame
        return batch.to_dict("records")
    if isinstance(batch, Mapping):  # "numpy" / "default": column -> array
        columns = {k: list(v) for k, v in batch.items()}
        n = len(next(iter(columns.values()), []))
        return [{k: v[i] for k, v in columns.items()} for i in range(n)]
    if isinstance(batch, Iterable):
        return [dict(row) for row in batch]
    raise TypeError(f"cannot read rows from a batch of type {type(batch).__name__}")


def raise_failures(records: list[dict[str, Any]]) -> None:
    failed = [r for r in records if not r["ok"]]
    if failed:
        error = failed[0]["error"]
        raise RowFailed(f"{len(failed)} of {len(records)} rows failed; first: row "
                        f"{failed[0]['id']}: {error['type']}: {error['message']} "
                        "(on_error='record' turns failures into records instead)")


def to_table(records: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    schema = pa.schema([("id", pa.string()), ("line", pa.int64()), ("ok", pa.bool_()),
                        ("model", pa.string()), ("deployment", pa.string()),
                        ("error_kind", pa.string()),
                        ("attempts", pa.int64()), ("cached", pa.bool_()),
                        ("record", pa.string())])
    rows = [{"id": r["id"], "line": r["line"], "ok": r["ok"],
             "model": None if r["model"] is None else str(r["model"]),
             "deployment": r.get("deployment"),  # None in records remembered by older releases
             "error_kind": (r["error"] or {}).get("kind"), "attempts": r["attempts"],
             "cached": r["cached"],
             "record": json.dumps(r, ensure_ascii=False, default=str)} for r in records]
    return pa.Table.from_pylist(rows, schema=schema)
