"""Loaders: real files (shipped excerpts; full files in the mirror group) and generated
files in each upstream format."""

from __future__ import annotations

import gzip
import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal, assert_series_equal
from routeplay.datasets import (
    TRACE_SCHEMA,
    TraceSchemaError,
    detect_format,
    load_lengths,
    load_trace,
    scan_azure,
    scan_burstgpt,
    scan_mooncake,
    scan_table,
    scan_trace,
    scan_vidur,
    validate_trace,
)

AZURE = "azure-public-dataset/AzureLLMInferenceTrace_{}.csv"


def _write(path: Path, text: str, eol: str = "\n", final_newline: bool = True) -> Path:
    body = eol.join(text.strip("\n").split("\n"))
    path.write_bytes((body + (eol if final_newline else "")).encode())
    return path


# --- Azure ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "n_rows"), [("code", 8819), ("conv", 19366)])
def test_azure_2023_real_matches_vidur_copy(data_dir: Path, kind: str, n_rows: int) -> None:
    trace = load_trace(data_dir / AZURE.format(kind))
    assert trace.height == n_rows
    assert trace["source"].unique().to_list() == [f"AzureLLMInferenceTrace_{kind}.csv"]
    vidur = pl.read_csv(data_dir / f"vidur_traces/splitwise_{kind}.csv")
    # Vidur's arrived_at is the same trace in float seconds (within 1 us).
    assert (trace["arrival_s"] - vidur["arrived_at"]).abs().max() < 1e-6
    assert trace["prompt_tokens"].to_list() == vidur["num_prefill_tokens"].to_list()
    assert trace["output_tokens"].to_list() == vidur["num_decode_tokens"].to_list()
    assert trace["request_id"].to_list() == list(range(n_rows))


def test_azure_2023_format_crlf_no_final_newline_exact_to_100ns(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "a.csv",
        """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:03.9799600,4808,10
2023-11-16 18:17:03.9799601,3180,8
2023-11-16 18:17:05.0000000,7,1""",
        eol="\r\n",
        final_newline=False,
    )
    trace = load_trace(path)
    assert trace.schema["prompt_tokens"] == pl.UInt32
    # 1 tick of 100 ns apart: exact nanosecond arithmetic before the float conversion.
    assert (trace["arrival_s"] * 1e9).round().cast(pl.Int64).to_list() == [0, 100, 1_020_040_000]
    assert trace["output_tokens"].to_list() == [10, 8, 1]


def test_azure_2024_offsets_optional_fraction_and_unsorted_rows(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "week.csv",
        """TIMESTAMP,ContextTokens,GeneratedTokens
2024-05-12 00:00:00.001163+00:00,100,10
2024-05-12 00:00:02+00:00,200,20
2024-05-12 00:00:01.5+00:00,300,30
2024-05-12 00:00:00+00:00,400,40""",
    )
    trace = load_trace(path, source="azure-2024-conv")
    assert trace["arrival_s"].to_list() == [0.0, 0.001163, 1.5, 2.0]
    assert trace["prompt_tokens"].to_list() == [400, 100, 300, 200]
    assert trace["request_id"].to_list() == [0, 1, 2, 3]
    assert trace["source"].to_list() == ["azure-2024-conv"] * 4


def test_azure_2024_non_utc_offset_is_converted(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "tz.csv",
        """TIMESTAMP,ContextTokens,GeneratedTokens
2024-05-12 02:00:00+02:00,1,1
2024-05-12 00:00:03+00:00,1,1""",
    )
    assert load_trace(path)["arrival_s"].to_list() == [0.0, 3.0]


def test_azure_2025_multimodal_keeps_num_images_and_reads_gzip(tmp_path: Path) -> None:
    text = (
        "TIMESTAMP,NumImages,ContextTokens,GeneratedTokens\n"
        "2024-10-15T12:00:00.269Z,2,1500,30\n"
        "2024-10-15T12:00:01Z,0,20,5\n"
    )
    path = tmp_path / "mm.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    trace = load_trace(path)
    assert trace.columns == [
        "request_id",
        "arrival_s",
        "prompt_tokens",
        "output_tokens",
        "source",
        "num_images",
    ]
    assert trace["num_images"].to_list() == [2, 0]
    assert trace.schema["num_images"] == pl.UInt32
    # seconds = integer nanoseconds / 1e9 (polars multiplies by 1e-9: within 1 ulp)
    assert (trace["arrival_s"] * 1e9).round().cast(pl.Int64).to_list() == [0, 731_000_000]


def test_azure_bad_timestamp_names_file_row_and_value(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "bad.csv",
        """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:03.9799600,4808,10
2023-11-16 xx:17:04.0319600,3180,8""",
    )
    msg = (
        f"{path}: column 'TIMESTAMP': row 1 (line 3 of the file) has value "
        "'2023-11-16 xx:17:04.0319600'; expected a timestamp in the file's format "
        "'%Y-%m-%d %H:%M:%S%.f' (from its first row)."
    )
    with pytest.raises(TraceSchemaError, match=re.escape(msg)) as info:
        load_trace(path)
    assert (info.value.column, info.value.row) == ("TIMESTAMP", 1)


def test_azure_non_integer_tokens_and_missing_column(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "f.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,12.5,10",
    )
    with pytest.raises(
        TraceSchemaError,
        match=re.escape(
            "column 'ContextTokens': row 0 (line 2 of the file) has value '12.5'; "
            "expected an integer token count."
        ),
    ):
        load_trace(path)
    bad = _write(
        tmp_path / "m.csv",
        "TIMESTAMP,ContextToken,GeneratedTokens\n2023-11-16 18:17:03.9799600,12,10",
    )
    with pytest.raises(
        TraceSchemaError,
        match=re.escape(
            "missing column(s) ['ContextTokens'] (found 'ContextToken': is the header misspelt?) "
            "for format 'azure'"
        ),
    ):
        scan_azure(bad)


def test_azure_zero_tokens_raise_or_drop_with_warning(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "z.csv",
        """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:03.0000000,10,0
2023-11-16 18:17:04.0000000,10,5
2023-11-16 18:17:05.0000000,0,5""",
    )
    with pytest.raises(
        TraceSchemaError,
        match=re.escape(
            f"{path}: column 'prompt_tokens': row 2 has value 0; expected an integer >= 1."
        ),
    ):
        load_trace(path)
    with pytest.warns(
        UserWarning,
        match=re.escape(
            "drop_zero_tokens=True dropped 2 of 3 rows (1 with prompt_tokens == 0, "
            "1 with output_tokens == 0)"
        ),
    ):
        trace = load_trace(path, drop_zero_tokens=True)
    assert trace["request_id"].to_list() == [1]


def test_scan_is_lazy_and_streams(data_dir: Path) -> None:
    lazy = scan_trace(data_dir / AZURE.format("code"))
    assert isinstance(lazy, pl.LazyFrame)
    total = lazy.select(pl.col("prompt_tokens").sum()).collect(engine="streaming").item()
    assert total == pl.read_csv(data_dir / AZURE.format("code"))["ContextTokens"].sum()


# --- Mooncake ------------------------------------------------------------------------


def test_mooncake_real_prefix_blocks(data_dir: Path) -> None:
    trace = load_trace(data_dir / "mooncake-fast25/synthetic_trace.jsonl")
    assert trace.height == 3993
    assert trace.schema["prefix_blocks"] == pl.List(pl.UInt64)
    n_blocks = trace["prefix_blocks"].list.len().to_numpy()
    assert (n_blocks == np.ceil(trace["prompt_tokens"].to_numpy() / 512)).all()
    assert math.isclose(trace["arrival_s"].max(), 1022.025)
    assert round(trace["prompt_tokens"].mean()) == 15325


def test_mooncake_excerpt_prefix_blocks(excerpts_dir: Path) -> None:
    # The first 100 lines of the same file; figures computed with json + math on them.
    trace = load_trace(excerpts_dir / "mooncake_synthetic_head100.jsonl")
    assert trace.height == 100
    assert trace.schema["prefix_blocks"] == pl.List(pl.UInt64)
    n_blocks = trace["prefix_blocks"].list.len().to_numpy()
    assert (n_blocks == np.ceil(trace["prompt_tokens"].to_numpy() / 512)).all()
    assert math.isclose(trace["arrival_s"].max(), 28.011)
    assert trace["prompt_tokens"].mean() == 13138.5


def test_mooncake_spread_is_deterministic_and_stays_in_tick(excerpts_dir: Path) -> None:
    path = excerpts_dir / "mooncake_synthetic_head100.jsonl"
    plain = load_trace(path)
    a = load_trace(path, spread_ticks_s=3.0, seed=7)
    b = load_trace(path, spread_ticks_s=3.0, seed=7)
    c = load_trace(path, spread_ticks_s=3.0, seed=8)
    assert_frame_equal(a, b)
    assert not a["arrival_s"].equals(c["arrival_s"])
    validate_trace(a)
    # Each request stays in its 3 s tick: per-tick counts are unchanged.
    ticks = lambda t: t.group_by((pl.col("arrival_s") // 3).alias("k")).len().sort("k")  # noqa: E731
    assert_frame_equal(ticks(plain), ticks(a))
    assert sorted(a["prompt_tokens"].to_list()) == sorted(plain["prompt_tokens"].to_list())
    with pytest.raises(ValueError, match=re.escape("spread_ticks_s must be a positive number")):
        scan_mooncake(path, spread_ticks_s=0.0)


def test_mooncake_bad_line_is_named(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "m.jsonl",
        """{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [0]}
{"timestamp": "soon", "input_length": 5, "output_length": 1, "hash_ids": [1]}""",
    )
    with pytest.raises(
        TraceSchemaError,
        match=re.escape(
            f"{path}: column 'timestamp': row 1 (line 2) has value 'soon'; expected an integer "
            "of milliseconds."
        ),
    ):
        load_trace(path)


# --- Vidur ---------------------------------------------------------------------------


def test_vidur_excerpt_equals_embedded_azure(excerpts_dir: Path) -> None:
    vidur = load_trace(excerpts_dir / "splitwise_conv_head100.csv").drop("source")
    azure = load_trace("azure-2023-conv").head(100).drop("source")
    assert_frame_equal(vidur.drop("arrival_s"), azure.drop("arrival_s"))
    assert_series_equal(vidur["arrival_s"], azure["arrival_s"], abs_tol=1e-6)


def test_vidur_trace_equals_azure(data_dir: Path) -> None:
    vidur = load_trace(data_dir / "vidur_traces/splitwise_conv.csv").drop("source")
    azure = load_trace(data_dir / AZURE.format("conv")).drop("source")
    assert_frame_equal(vidur.drop("arrival_s"), azure.drop("arrival_s"))
    assert_series_equal(vidur["arrival_s"], azure["arrival_s"], abs_tol=1e-6)
    assert scan_vidur(data_dir / "vidur_traces/splitwise_code.csv").collect().height == 8819


def test_vidur_max_tokens_cuts_prompts_explicitly_and_warns(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "t.csv",
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,4000,200\n1.0,100,10\n2.0,5000,96\n",
    )
    assert scan_vidur(path).collect()["prompt_tokens"].to_list() == [4000, 100, 5000]
    with pytest.warns(UserWarning, match=r"cut the prompts of 2 of 3 requests .* by 1104 tokens"):
        cut = load_trace(path, max_tokens=4096)
    assert cut["prompt_tokens"].to_list() == [3896, 100, 4000]
    assert (cut["prompt_tokens"] + cut["output_tokens"]).max() == 4096
    with pytest.raises(ValueError, match=r"max_tokens=150 would leave no prompt token in 1"):
        load_trace(path, max_tokens=150)
    with pytest.raises(ValueError, match=r"max_tokens = 1"):
        scan_vidur(path, max_tokens=1)


def test_vidur_max_tokens_matches_vidurs_own_token_counts(data_dir: Path) -> None:
    # Vidur's request_metrics.csv records the token counts it simulated (after its cut)
    with pytest.warns(UserWarning, match=r"cut the prompts of 1612 of 19366 requests"):
        trace = load_trace(data_dir / "vidur_traces/splitwise_conv.csv", max_tokens=4096)
    ref = pl.read_csv(data_dir / "vidur_reference/conv-x4/request_metrics.csv").sort("Request Id")
    assert trace["prompt_tokens"].to_list() == ref["request_num_prefill_tokens"].cast(int).to_list()
    assert trace["output_tokens"].to_list() == ref["request_num_decode_tokens"].cast(int).to_list()


def test_lengths_only_file(data_dir: Path) -> None:
    path = data_dir / "vidur_traces/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"
    lengths = load_lengths(path)
    assert lengths.columns == ["request_id", "prompt_tokens", "output_tokens"]
    assert lengths.height == 28257
    assert round(lengths["prompt_tokens"].mean()) == 2588
    assert lengths["output_tokens"].max() == 4056


def test_lengths_only_excerpt(excerpts_dir: Path) -> None:
    # The file's first 100 rows; figures computed with polars.read_csv on them.
    path = excerpts_dir / "arxiv_lengths_head100.csv"
    lengths = load_lengths(path)
    assert lengths.columns == ["request_id", "prompt_tokens", "output_tokens"]
    assert lengths.height == 100
    assert lengths["prompt_tokens"].mean() == 2501.42
    assert lengths["output_tokens"].max() == 2958
    msg = "holds token lengths only (no arrival times), so it is not a trace."
    with pytest.raises(ValueError, match=re.escape(msg)):
        load_trace(path)
    with pytest.raises(ValueError, match=re.escape("routeplay.datasets.attach_arrivals(")):
        scan_vidur(path)


def test_lengths_zero_rejected_with_row(tmp_path: Path) -> None:
    path = _write(tmp_path / "l.csv", "num_prefill_tokens,num_decode_tokens\n5,1\n6,0\n")
    with pytest.raises(
        TraceSchemaError,
        match=re.escape("column 'output_tokens': row 1 has value 0; expected an integer >= 1."),
    ):
        load_lengths(path)
    with pytest.warns(UserWarning, match=re.escape("dropped 1 of 2 rows")):
        assert load_lengths(path, drop_zero_tokens=True)["request_id"].to_list() == [0]


# --- BurstGPT ------------------------------------------------------------------------

_BURST_V1 = """Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
5,ChatGPT,472,18,490,Conversation log
45,ChatGPT,1087,0,1087,Conversation log
118,GPT-4,417,276,693,API log
"""
_BURST_V3 = (
    "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,"
    """Log Type
10.5,s1,1.2,GPT-4,100,20,120,API log
10.0,s2,0.8,ChatGPT,50,5,55,Conversation log
"""
)


def test_burstgpt_v1_zero_tokens_reported_not_hidden(tmp_path: Path) -> None:
    path = _write(tmp_path / "BurstGPT_1.csv", _BURST_V1)
    assert detect_format(path) == "burstgpt"
    with pytest.raises(
        TraceSchemaError,
        match=re.escape("column 'output_tokens': row 1 has value 0; expected an integer >= 1."),
    ) as info:
        load_trace(path)
    assert info.value.row == 1
    with pytest.warns(
        UserWarning,
        match=re.escape(
            "dropped 1 of 3 rows (0 with prompt_tokens == 0, 1 with output_tokens == 0)"
        ),
    ):
        trace = load_trace(path, drop_zero_tokens=True, task_column="Model")
    assert trace["arrival_s"].to_list() == [0.0, 113.0]
    assert trace["task"].cast(pl.String).to_list() == ["ChatGPT", "GPT-4"]
    assert trace["request_id"].to_list() == [0, 2]


def test_burstgpt_v3_columns_by_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "BurstGPT_3.csv", _BURST_V3)
    trace = load_trace(path)
    assert trace.columns == [
        "request_id",
        "arrival_s",
        "prompt_tokens",
        "output_tokens",
        "session_id",
        "source",
    ]
    assert trace["session_id"].to_list() == ["s2", "s1"]
    assert trace["arrival_s"].to_list() == [0.0, 0.5]
    wide = load_trace(path, keep_extra_columns=True, allow_extra_columns=True)
    assert wide.select("model", "log_type", "elapsed_s").row(0) == (
        "ChatGPT",
        "Conversation log",
        0.8,
    )
    with pytest.raises(ValueError, match=re.escape("task_column must be one of")):
        scan_burstgpt(path, task_column="Session ID")  # type: ignore[arg-type]


# --- Generic tables ------------------------------------------------------------------


def test_table_csv_mapping_and_units(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.csv", "id,t_ms,in,out,kind\n7,1500,30,4,chat\n3,500,10,2,code\n")
    columns = {
        "request_id": "id",
        "arrival_s": "t_ms",
        "prompt_tokens": "in",
        "output_tokens": "out",
        "task": "kind",
    }
    trace = load_trace(path, format="table", columns=columns, time_unit="ms")
    assert trace.rows() == [(3, 0.5, 10, 2, "code", "log.csv"), (7, 1.5, 30, 4, "chat", "log.csv")]
    assert trace.schema["task"] == pl.Categorical
    with pytest.raises(
        TraceSchemaError,
        match=re.escape("column 'tms' (did you mean 't_ms'?) named in columns= is not in the file"),
    ):
        scan_table(path, columns={**columns, "arrival_s": "tms"})
    with pytest.raises(
        ValueError, match=re.escape("columns= maps unknown canonical name(s) ['arrival']")
    ):
        scan_table(path, columns={"arrival": "t_ms"})


def test_table_parquet_datetime_and_canonical_round_trip(
    tmp_path: Path, tiny_trace: pl.DataFrame
) -> None:
    path = tmp_path / "log.parquet"
    pl.DataFrame(
        {
            "when": ["2024-01-01 00:00:01", "2024-01-01 00:00:00.25"],
            "p": [5, 6],
            "o": [1, 2],
        }
    ).write_parquet(path)
    trace = load_trace(
        path,
        columns={"arrival_s": "when", "prompt_tokens": "p", "output_tokens": "o"},
        time_unit="datetime",
    )
    assert trace["arrival_s"].to_list() == [0.0, 0.75]
    assert trace["prompt_tokens"].to_list() == [6, 5]
    canonical = tmp_path / "canon.parquet"
    tiny_trace.write_parquet(canonical)
    assert_frame_equal(load_trace(canonical).drop("source"), validate_trace(tiny_trace))
    csv = tmp_path / "canon.csv"
    tiny_trace.write_csv(csv)
    assert detect_format(csv) == "table"
    assert_frame_equal(load_trace(csv).drop("source"), validate_trace(tiny_trace))


def test_detect_format_rejects_unknown_header(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.csv", "a,b\n1,2\n")
    with pytest.raises(ValueError, match=re.escape("cannot tell the format of")):
        load_trace(path)
    with pytest.raises(FileNotFoundError, match=re.escape("does not exist")):
        load_trace(tmp_path / "missing.csv")
    assert list(TRACE_SCHEMA) == ["request_id", "arrival_s", "prompt_tokens", "output_tokens"]
