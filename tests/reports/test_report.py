from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from routeplay.reports import Report, ReportSection, latency_cdf_chart, write_report

import routeplay

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
]


def _chromium(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_report_renders_every_chart_in_chromium(
    tiny_run: Path, chromium: str, tmp_path: Path
) -> None:
    html_path = tiny_run / "report.html"
    text = html_path.read_text()
    assert "cdn.jsdelivr" not in text and "<script src=" not in text  # self-contained
    dom = _chromium(chromium, tmp_path, "--dump-dom", html_path.as_uri()).stdout
    charts = re.findall(r'<div class="chart[^"]*" id="chart-([^"]+)"(.*?)</div>', dom, re.S)
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert sorted(k for k, _ in charts) == sorted(summary["charts"])
    for key, body in charts:
        assert "<svg" in body or "<canvas" in body, f"chart {key} did not render"
    assert dom.count('data-rendered="true"') == len(charts)
    errors = re.search(r'<pre id="routeplay-errors">(.*?)</pre>', dom, re.S)
    warnings = re.search(r'<pre id="routeplay-warnings">(.*?)</pre>', dom, re.S)
    assert errors is not None and errors.group(1) == ""
    assert warnings is not None and warnings.group(1) == ""
    png = tmp_path / "report-first-page.png"
    _chromium(
        chromium, tmp_path, f"--screenshot={png}", "--window-size=1200,1600", html_path.as_uri()
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shot = REPO / "docs" / "notes" / "report-screenshot.png"
    if not shot.exists():  # written once, for a person to look at
        shot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(png, shot)


def test_error_hook_catches_a_broken_chart(chromium: str, tmp_path: Path) -> None:
    chart = latency_cdf_chart(pl.DataFrame({"router": ["a"], "e2e_s": [1.0]}))
    report = Report(
        title="broken",
        metadata={"data": "x", "cluster": "x", "seed": 0, "significance_method": "x"},
        sections=(ReportSection(key="bad", title="bad", chart=chart),),
    )
    out = write_report(report, tmp_path / "r", image_formats=())
    html_text = out.html_path.read_text().replace(
        "var specs = ", 'var specs = {"bad": {"mark": 42, "data": {"values": []}}} || ', 1
    )
    out.html_path.write_text(html_text)
    dom = _chromium(chromium, tmp_path, "--dump-dom", out.html_path.as_uri()).stdout
    errors = re.search(r'<pre id="routeplay-errors">(.*?)</pre>', dom, re.S)
    assert errors is not None and errors.group(1).strip() != ""


def test_summary_numbers_equal_the_frames(tiny_run: Path) -> None:
    summary = json.loads((tiny_run / "summary.json").read_text())
    for name in ("comparison", "router_summary"):
        frame = pl.read_parquet(tiny_run / "tables" / f"{name}.parquet")
        from_json = pl.DataFrame(summary["tables"][name]["rows"], schema=frame.schema)
        assert_frame_equal(from_json, frame)
        assert summary["tables"][name]["n_rows"] == frame.height
    # the comparison really is compare_routers on the stored per-request rows
    from routeplay.estimator import compare_routers

    requests = pl.read_parquet(tiny_run / "tables" / "requests.parquet")
    redo = compare_routers(
        requests,
        baseline="round-robin",
        metrics=("e2e_s", "ttft_s"),
        statistics=("mean", "p99"),
        n_boot=200,
        seed=3,
    )
    stored = pl.read_parquet(tiny_run / "tables" / "comparison.parquet")
    assert_frame_equal(stored, redo.to_frame())
    meta = summary["metadata"]
    assert meta["routeplay_version"] == routeplay.__version__
    assert meta["seed"] == 3
    assert "paired" in meta["significance_method"] and "Holm" in meta["significance_method"]
    assert meta["cluster"].startswith("a100x4 (4 instances")
    assert meta["data"].startswith("azure-2023-conv: 600 requests")
    assert summary["numbers"]["predictor"]["n_requests"] > 0
    for key, chart in summary["charts"].items():
        data = pl.read_parquet(tiny_run / chart["data"])
        assert data.height == chart["n_rows"] > 0, key
        assert (tiny_run / "images" / f"{key}.svg").read_text().startswith("<svg")


def test_write_report_exports_png_and_requires_metadata(tmp_path: Path) -> None:
    chart = latency_cdf_chart(pl.DataFrame({"router": ["a", "a"], "e2e_s": [1.0, 2.0]}))
    report = Report(
        title="t",
        metadata={"data": "x", "cluster": "x", "seed": 0, "significance_method": "x"},
        sections=(ReportSection(key="cdf", title="cdf", chart=chart),),
    )
    out = write_report(report, tmp_path, image_formats=("png",))
    assert (tmp_path / "images" / "cdf.png").read_bytes()[:4] == b"\x89PNG"
    assert out.files == (
        "images/cdf.png",
        "report.html",
        "summary.json",
        "tables/chart-cdf.parquet",
    )
    with pytest.raises(ValueError, match=re.escape("Report.metadata lacks ['cluster', 'seed']")):
        Report(title="t", metadata={"data": "x", "significance_method": "x"})
    with pytest.raises(ValueError, match=re.escape("unknown image format(s) ['pdf']")):
        write_report(report, tmp_path, image_formats=("pdf",))
