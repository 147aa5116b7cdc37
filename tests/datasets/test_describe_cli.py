"""describe_trace numbers (acceptance figures) and the `routeplay datasets` CLI."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import polars as pl
import pytest
from routeplay.datasets import describe_trace, load_trace, scan_trace

from routeplay.cli import main

# Reference figures: ../shared/data/README.md (computed there with python3 + numpy).
EXPECTED = {
    "azure-2023-conv": dict(
        n=19366, span=3501.7, prompt=1155, output=211, peak=16, minute=8.45, cv=1.09
    ),
    "azure-2023-code": dict(
        n=8819, span=3435.9, prompt=2048, output=27.9, peak=67, minute=10.5, cv=13.2
    ),
}


@pytest.fixture(params=[pytest.param("mirror", marks=pytest.mark.mirror), "embedded"])
def source_mode(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> str:
    monkeypatch.setenv("ROUTEPLAY_CACHE_DIR", str(tmp_path / "cache"))
    if request.param == "mirror":
        monkeypatch.setenv("ROUTEPLAY_DATA_DIR", str(request.getfixturevalue("data_dir")))
    else:
        monkeypatch.delenv("ROUTEPLAY_DATA_DIR", raising=False)
    return str(request.param)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_describe_acceptance_numbers(source_mode: str, name: str) -> None:
    e = EXPECTED[name]
    d = describe_trace(scan_trace(name))
    assert d.n_requests == e["n"]
    assert round(d.span_s, 1) == e["span"]
    assert round(d.prompt_tokens.mean, 0 if e["prompt"] > 100 else 1) == e["prompt"]
    assert round(d.output_tokens.mean, 0 if e["output"] > 100 else 1) == e["output"]
    assert d.peak_rate_per_s == e["peak"]
    assert round(d.busiest_minute_rate_per_s, 2 if name.endswith("conv") else 1) == e["minute"]
    assert round(d.interarrival_cv, 2 if name.endswith("conv") else 1) == e["cv"]


def test_describe_lazy_equals_eager_and_hand_computed() -> None:
    trace = pl.DataFrame(
        {
            "request_id": [0, 1, 2, 3],
            "arrival_s": [10.0, 10.5, 12.0, 14.0],
            "prompt_tokens": [10, 20, 30, 40],
            "output_tokens": [1, 1, 2, 100],
            "task": ["a", "b", "a", "a"],
        }
    ).with_columns(pl.col("task").cast(pl.Categorical))
    d = describe_trace(trace.lazy())
    assert d == describe_trace(trace)
    assert (d.n_requests, d.span_s, d.mean_rate_per_s) == (4, 4.0, 1.0)
    assert d.peak_rate_per_s == 2  # 10.0 and 10.5 share bin 0
    assert d.empty_seconds_share == 1 - 3 / 5  # bins 0..4, arrivals in 0, 2, 4
    gaps = [0.5, 1.5, 2.0]
    mean = sum(gaps) / 3
    std = math.sqrt(sum((g - mean) ** 2 for g in gaps) / 2)
    assert math.isclose(d.interarrival_cv, std / mean, rel_tol=1e-12)
    assert d.prompt_tokens.p50 == 25.0 and d.output_tokens.max == 100
    assert d.tasks == (("a", 3), ("b", 1))
    frame = d.to_frame()
    assert frame.filter(pl.col("metric") == "task_a_n_requests")["value"].item() == 3.0
    assert json.loads(d.to_json())["prompt_tokens"]["mean"] == 25.0
    assert "requests            4" in str(d)
    with pytest.raises(ValueError, match=re.escape("describe_trace needs columns ['arrival_s']")):
        describe_trace(trace.drop("arrival_s"))


def test_cli_describe_name_and_json(source_mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "describe", "azure-2023-conv"]) == 0
    out = capsys.readouterr().out
    assert "requests            19,366" in out and "span                3,501.7 s" in out
    assert main(["datasets", "describe", "azure-2023-code", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_requests"] == 8819


def test_cli_list_and_validate(
    excerpts_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"azure-2024-conv\s+azure\s+27,303,999 rows", out)
    assert (
        main(["datasets", "validate", str(excerpts_dir / "mooncake_synthetic_head100.jsonl")]) == 0
    )
    assert capsys.readouterr().out == "ok: 100 requests\n"
    bad = tmp_path / "bad.csv"
    bad.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,5,1\n1.0,-3,2\n")
    assert main(["datasets", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"routeplay datasets: error: {bad}: column 'prompt_tokens': row 1 "
        "has value -3; expected an integer >= 1."
    )
    log = tmp_path / "log.csv"
    log.write_text("t,p,o\n0.5,3,1\n")
    assert (
        main(
            [
                "datasets",
                "validate",
                str(log),
                "--format",
                "table",
                "--columns",
                "arrival_s=t,prompt_tokens=p,output_tokens=o",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == "ok: 1 requests\n"
    assert (
        load_trace(
            log,
            format="table",
            columns={"arrival_s": "t", "prompt_tokens": "p", "output_tokens": "o"},
        ).height
        == 1
    )
