"""Every error path of validate_trace, with its message pinned."""

from __future__ import annotations

import re

import polars as pl
import pytest
from routeplay.datasets import TraceSchemaError, validate_trace


def _base(**overrides: list[object]) -> pl.DataFrame:
    cols: dict[str, list[object]] = {
        "request_id": [0, 1, 2],
        "arrival_s": [0.0, 1.0, 2.0],
        "prompt_tokens": [5, 6, 7],
        "output_tokens": [1, 2, 3],
    }
    cols.update(overrides)
    return pl.DataFrame(cols)


CASES = [
    (
        "unsorted",
        _base(arrival_s=[0.0, 2.0, 1.0]),
        "arrival_s",
        2,
        "column 'arrival_s': row 2 arrives at 1.0 s, before row 1 at 2.0 s; expected arrivals "
        "sorted ascending. Fix: frame.sort(['arrival_s', 'request_id']).",
    ),
    (
        "duplicate",
        _base(request_id=[4, 5, 4]),
        "request_id",
        2,
        "column 'request_id': row 2 repeats id 4 first seen at row 0; expected unique ids.",
    ),
    (
        "null",
        _base(prompt_tokens=[5, None, 7]),
        "prompt_tokens",
        1,
        "column 'prompt_tokens': row 1 is null; expected no missing values.",
    ),
    (
        "zero",
        _base(output_tokens=[1, 0, 3]),
        "output_tokens",
        1,
        "column 'output_tokens': row 1 has value 0; expected an integer >= 1.",
    ),
    (
        "negative",
        _base(prompt_tokens=[5, 6, -7]),
        "prompt_tokens",
        2,
        "column 'prompt_tokens': row 2 has value -7; expected an integer >= 1.",
    ),
    (
        "non-integer",
        _base(output_tokens=[1.0, 2.5, 3.0]),
        "output_tokens",
        1,
        "column 'output_tokens': row 1 has non-integer value 2.5; expected whole numbers >= 1.",
    ),
    (
        "negative arrival",
        _base(arrival_s=[-1.0, 1.0, 2.0]),
        "arrival_s",
        0,
        "column 'arrival_s': row 0 has value -1.0; expected finite seconds >= 0",
    ),
]


@pytest.mark.parametrize(
    ("frame", "column", "row", "msg"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_row_level_errors(frame: pl.DataFrame, column: str, row: int, msg: str) -> None:
    with pytest.raises(TraceSchemaError, match=re.escape(msg)) as info:
        validate_trace(frame)
    assert (info.value.column, info.value.row) == (column, row)
    assert isinstance(info.value, ValueError)


def test_missing_misnamed_extra_columns_and_empty() -> None:
    with pytest.raises(
        TraceSchemaError,
        match=re.escape(
            "trace is missing required column(s) ['prompt_tokens'] (found 'prompt_token': rename "
            "it to 'prompt_tokens')"
        ),
    ):
        validate_trace(_base().rename({"prompt_tokens": "prompt_token"}))
    with pytest.raises(
        TraceSchemaError, match=re.escape("trace is missing required column(s) ['output_tokens']")
    ):
        validate_trace(_base().drop("output_tokens"))
    extra = _base().with_columns(model=pl.lit("x"))
    with pytest.raises(TraceSchemaError, match=re.escape("trace has unknown column(s) ['model']")):
        validate_trace(extra)
    assert validate_trace(extra, allow_extra_columns=True).columns[-1] == "model"
    with pytest.raises(TraceSchemaError, match=re.escape("trace is empty (0 rows)")):
        validate_trace(_base().head(0))
    with pytest.raises(
        TraceSchemaError,
        match=re.escape("column 'prompt_tokens' has dtype String; expected an integer type."),
    ):
        validate_trace(_base(prompt_tokens=["5", "6", "7"]))


def test_valid_trace_is_cast_not_changed() -> None:
    out = validate_trace(_base().lazy())
    assert out.schema["request_id"] == pl.UInt64 and out.schema["output_tokens"] == pl.UInt32
    assert out["prompt_tokens"].to_list() == [5, 6, 7]
