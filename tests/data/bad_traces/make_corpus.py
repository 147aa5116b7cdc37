"""Write the bad-trace corpus (tests/data/bad_traces/): tiny files, one problem each.

Run from anywhere: ``.venv/bin/python tests/data/bad_traces/make_corpus.py``. The files
are committed; this script documents how each was made and rebuilds them byte for byte
(Parquet files need Polars). The expected error of each file is in ``expected.toml``.
"""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent

AZ = b"TIMESTAMP,ContextTokens,GeneratedTokens\n"
AZ_ROWS = [
    b"2023-11-16 18:17:03.9799600,4808,10\n",
    b"2023-11-16 18:17:04.0319600,3180,8\n",
    b"2023-11-16 18:17:04.0565000,110,27\n",
    b"2023-11-16 18:17:05.1000000,7,3\n",
]
MC = b'{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}\n'
MC2 = b'{"timestamp": 1500, "input_length": 10, "output_length": 2, "hash_ids": [0]}\n'
BG = b"Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
BG_ROW = b"5,ChatGPT,472,18,490,Conversation log\n"
VI = b"arrived_at,num_prefill_tokens,num_decode_tokens\n"
TB = b"arrival_s,prompt_tokens,output_tokens\n"


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def text_files() -> dict[str, bytes]:
    """Name -> bytes of every non-Parquet corpus file."""
    good = b"".join(AZ_ROWS)
    whole_gz = _gzip(AZ + good)
    return {
        # Azure CSV
        "azure_empty.csv": b"",
        "azure_header_only.csv": AZ,
        "azure_missing_column.csv": b"TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.9799600,48\n",
        "azure_misspelt_header.csv": b"TIMESTAMP,ContextToken,GeneratedTokens\n" + AZ_ROWS[0],
        "azure_bad_timestamp.csv": AZ + AZ_ROWS[0] + b"yesterday,3180,8\n",
        "azure_negative_tokens.csv": AZ + AZ_ROWS[0] + b"2023-11-16 18:17:04.0319600,-3180,8\n",
        "azure_zero_output.csv": AZ + AZ_ROWS[0] + b"2023-11-16 18:17:04.0319600,3180,0\n",
        "azure_float_tokens.csv": AZ + AZ_ROWS[0] + b"2023-11-16 18:17:04.0319600,31.5,8\n",
        "azure_empty_cell.csv": AZ + AZ_ROWS[0] + b"2023-11-16 18:17:04.0319600,,8\n",
        "azure_token_overflow.csv": AZ + b"2023-11-16 18:17:04.0319600,5000000000,8\n",
        "azure_ragged_short_first.csv": AZ + b"2023-11-16 18:17:03.9799600,4808\n" + good,
        "azure_ragged_extra_first.csv": AZ + b"2023-11-16 18:17:03.9799600,4808,10,7\n" + good,
        "azure_ragged_extra_mid.csv": AZ
        + AZ_ROWS[0]
        + AZ_ROWS[1]
        + b"2023-11-16 18:17:04.1,1,2,3\n"
        + AZ_ROWS[3],
        "azure_truncated_last_line.csv": AZ + good + b"2023-11-16 18:17:06.0000000,48",
        "azure_blank_line_mid.csv": AZ + AZ_ROWS[0] + b"\n" + AZ_ROWS[1],
        "azure_bad_utf8.csv": AZ + AZ_ROWS[0] + b"2023-11-16 18:17:04.0319600,31\xe980,8\n",
        "azure_truncated.csv.gz": whole_gz[: len(whole_gz) - 12],
        "azure_not_gzip.csv.gz": AZ + good,
        # Mooncake JSONL
        "mooncake_empty.jsonl": b"",
        "mooncake_invalid_json.jsonl": MC + b'{"timestamp": 1500, "input_length": 10,\n',
        "mooncake_text_timestamp.jsonl": MC
        + b'{"timestamp": "soon", "input_length": 10, "output_length": 2, "hash_ids": []}\n',
        "mooncake_negative_input.jsonl": MC
        + b'{"timestamp": 1500, "input_length": -10, "output_length": 2, "hash_ids": []}\n',
        "mooncake_zero_output.jsonl": MC
        + b'{"timestamp": 1500, "input_length": 10, "output_length": 0, "hash_ids": []}\n',
        "mooncake_missing_output.jsonl": MC + b'{"timestamp": 1500, "input_length": 10}\n',
        "mooncake_float_length.jsonl": MC
        + b'{"timestamp": 1500, "input_length": 10.5, "output_length": 2, "hash_ids": []}\n',
        "mooncake_bad_hash_ids.jsonl": MC
        + b'{"timestamp": 1500, "input_length": 10, "output_length": 2, "hash_ids": [-1]}\n',
        "mooncake_array_line.jsonl": MC + b"[1500, 10, 2]\n" + MC2,
        # BurstGPT CSV
        "burstgpt_zero_response.csv": BG + BG_ROW + b"7,GPT-4,1087,0,1087,API log\n",
        "burstgpt_nan_timestamp.csv": BG + BG_ROW + b"NaN,GPT-4,1087,3,1090,API log\n",
        "burstgpt_inf_timestamp.csv": BG + BG_ROW + b"inf,GPT-4,1087,3,1090,API log\n",
        "burstgpt_text_tokens.csv": BG + BG_ROW + b"7,GPT-4,many,3,1090,API log\n",
        "burstgpt_missing_column.csv": b"Timestamp,Model,Request tokens,Total tokens,Log Type\n"
        b"5,ChatGPT,472,490,Conversation log\n",
        "burstgpt_ragged.csv": BG + BG_ROW + b"7,GPT-4,1087,3\n",
        # Vidur CSV
        "vidur_negative_prefill.csv": VI + b"0.0,5,1\n1.0,-3,2\n",
        "vidur_nan_arrival.csv": VI + b"0.0,5,1\nnan,6,2\n",
        "vidur_header_only.csv": VI,
        "vidur_ragged_extra.csv": VI + b"0.0,5,1\n1.0,6,2,9\n2.0,7,1\n",
        "vidur_lengths_only.csv": b"num_prefill_tokens,num_decode_tokens\n5,1\n",
        "vidur_float_decode.csv": VI + b"0.0,5,1.5\n",
        # plain CSV tables (canonical columns)
        "table_duplicate_ids.csv": b"request_id,arrival_s,prompt_tokens,output_tokens\n"
        b"0,0.0,5,1\n1,0.5,6,2\n1,1.0,7,3\n",
        "table_negative_arrival.csv": TB + b"-1.0,5,1\n0.5,6,2\n",
        "table_nan_arrival.csv": TB + b"0.0,5,1\nNaN,6,2\n",
        "table_text_arrival.csv": TB + b"0.0,5,1\nnoon,6,2\n",
        "table_unknown_header.csv": b"when,in,out\n0.0,5,1\n",
        "table_negative_id.csv": b"request_id,arrival_s,prompt_tokens,output_tokens\n-1,0.0,5,1\n",
    }


def parquet_frames() -> dict[str, pl.DataFrame]:
    """Name -> frame of every Parquet corpus file."""
    t0 = dt.datetime(2024, 5, 1, 12, 0, 0)
    tokens = {"prompt_tokens": [5, 6], "output_tokens": [1, 2]}
    return {
        "table_duration_negative.parquet": pl.DataFrame(
            {"arrival_s": [dt.timedelta(seconds=-1), dt.timedelta(seconds=2)], **tokens}
        ).with_columns(pl.col("arrival_s").cast(pl.Duration("ms"))),
        "table_datetime_null.parquet": pl.DataFrame(
            {"arrival_s": [t0, None], **tokens}, schema_overrides={"arrival_s": pl.Datetime("us")}
        ),
        "table_bool_arrival.parquet": pl.DataFrame({"arrival_s": [True, False], **tokens}),
        "table_string_tokens.parquet": pl.DataFrame(
            {"arrival_s": [0.0, 1.0], "prompt_tokens": ["5", "lots"], "output_tokens": [1, 2]}
        ),
        "table_nan_tokens.parquet": pl.DataFrame(
            {"arrival_s": [0.0, 1.0], "prompt_tokens": [5.0, float("nan")], "output_tokens": [1, 2]}
        ),
        "table_missing_column.parquet": pl.DataFrame({"arrival_s": [0.0], "prompt_tokens": [5]}),
        "table_empty.parquet": pl.DataFrame(
            {"arrival_s": [], "prompt_tokens": [], "output_tokens": []},
            schema={"arrival_s": pl.Float64, "prompt_tokens": pl.Int64, "output_tokens": pl.Int64},
        ),
        "table_zero_prompt.parquet": pl.DataFrame(
            {"arrival_s": [0.0, 1.0], "prompt_tokens": [5, 0], "output_tokens": [1, 2]}
        ),
    }


def main() -> None:
    """Write every corpus file beside this script."""
    for name, data in text_files().items():
        (HERE / name).write_bytes(data)
    for name, frame in parquet_frames().items():
        frame.write_parquet(HERE / name, statistics=False)
    good = HERE / "table_zero_prompt.parquet"
    (HERE / "table_corrupt.parquet").write_bytes(good.read_bytes()[:-30])


if __name__ == "__main__":
    main()
