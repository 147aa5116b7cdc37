from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from routeplay.estimator import compute_verdict
from routeplay.reports import (
    PageTable,
    Report,
    ReportSection,
    latency_cdf_chart,
    write_report,
)

import routeplay

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


# Added to a copy of the page: once every chart has rendered (or after ~10 s), it writes
# where the verdict ends and how wide the document is into #layout-probe.
LAYOUT_PROBE = """<script>
(function () {
  var tries = 0;
  function measure() {
    var charts = document.querySelectorAll(".chart").length;
    var rendered = document.querySelectorAll('.chart[data-rendered="true"]').length;
    if (rendered < charts && ++tries < 100) { setTimeout(measure, 100); return; }
    var box = document.getElementById("verdict").getBoundingClientRect();
    var out = document.createElement("pre");
    out.id = "layout-probe";
    out.textContent = JSON.stringify({
      verdict_top: box.top, verdict_bottom: box.bottom,
      scroll_width: document.documentElement.scrollWidth,
      inner_width: window.innerWidth, inner_height: window.innerHeight,
      outer_height: window.outerHeight,
      charts: charts, rendered: rendered
    });
    document.body.appendChild(out);
  }
  window.addEventListener("load", function () { setTimeout(measure, 0); });
})();
</script>"""


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_verdict_is_the_first_screen_at_1280x800(
    tiny_run: Path, chromium: str, tmp_path: Path
) -> None:
    html_path = tiny_run / "report.html"
    summary = json.loads((tiny_run / "summary.json").read_text())
    verdict = summary["verdict"]
    assert verdict is not None and verdict["headline"] and verdict["lines"]
    probe_page = tmp_path / "probe.html"
    page = html_path.read_text()
    end = page.rindex("</body>")  # the last one: the inlined JavaScript holds "</body>" too
    probe_page.write_text(page[:end] + LAYOUT_PROBE + page[end:])
    dom = _chromium(
        chromium, tmp_path, "--window-size=1280,800", "--dump-dom", probe_page.as_uri()
    ).stdout
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', dom, re.S)
    assert found is not None, "the layout probe did not run"
    layout = json.loads(html.unescape(found.group(1)))
    # With --dump-dom, --window-size sizes the window: the viewport is the window less
    # the browser's bars (1280x657 for 1280x800 on Chromium 156), a stricter test than a
    # 1280x800 viewport (the screenshot below).
    assert (layout["inner_width"], layout["outer_height"]) == (1280, 800), layout
    assert layout["rendered"] == layout["charts"] == len(summary["charts"]), layout
    visible = min(800, layout["inner_height"])
    assert 0 <= layout["verdict_top"] < layout["verdict_bottom"] <= visible, layout
    assert layout["scroll_width"] <= 1280, layout  # no horizontal scroll
    # the verdict box holds the headline and every line, in this order, before any chart
    box = re.search(r'<section id="verdict"[^>]*>(.*?)</section>', dom, re.S)
    assert box is not None
    texts = [html.unescape(t) for t in re.findall(r">([^<>]+)<", box.group(1))]
    assert texts[: 1 + len(verdict["lines"])] == [verdict["headline"], *verdict["lines"]]
    assert dom.index('id="verdict"') < dom.index('id="chart-')
    png = tmp_path / "first-screen.png"
    _chromium(
        chromium,
        tmp_path,
        "--hide-scrollbars",
        f"--screenshot={png}",
        "--window-size=1280,800",
        html_path.as_uri(),
    )
    data = png.read_bytes()
    assert len(data) > 10_000 and _png_size(data) == (1280, 800)


def test_page_tables_are_human_and_raw_tables_folded(tiny_run: Path) -> None:
    text = (tiny_run / "report.html").read_text()
    glance = re.search(
        r'<table class="pretty" data-table="routers-at-a-glance">(.*?)</table>', text, re.S
    )
    assert glance is not None
    headers = re.findall(r"<th>(.*?)</th>", glance.group(1))
    assert headers[:4] == ["Router", "Mean E2E (s)", "Mean E2E vs baseline", "p99 E2E (s)"]
    assert "e2e_s_mean" not in glance.group(1)
    assert "round-robin (baseline)" in glance.group(1)
    change = re.search(r'data-table="change-vs-baseline">(.*?)</table>', text, re.S)
    assert change is not None and re.search(r"<td>[−+]?\d+\.\d+ %\*?\n\[", change.group(1))
    # the raw tables (every column) and the metadata are folded, after the page tables
    folded = text[text.index("<details>") :]
    assert 'data-table="comparison"' in folded and 'data-table="router_summary"' in folded
    assert "<th>relative_improvement</th>" in folded and '<details id="run-details">' in text
    assert text.index('data-table="routers-at-a-glance"') < text.index("<details>")


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
    # ... and the verdict is compute_verdict on it and the stored router table
    table = pl.read_parquet(tiny_run / "tables" / "router_summary.parquet")
    assert summary["verdict"] == json.loads(json.dumps(compute_verdict(redo, table).to_dict()))
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
    summary = json.loads(out.summary_path.read_text())
    assert summary["verdict"] is None  # a report without a verdict still works
    page = out.html_path.read_text()
    assert 'id="verdict"' not in page and "<details>" not in page  # no page tables: no folding
    with pytest.raises(ValueError, match=re.escape("Report.metadata lacks ['cluster', 'seed']")):
        Report(title="t", metadata={"data": "x", "significance_method": "x"})
    with pytest.raises(ValueError, match=re.escape("unknown image format(s) ['pdf']")):
        write_report(report, tmp_path, image_formats=("pdf",))


def test_sections_and_page_tables_are_validated() -> None:
    chart = latency_cdf_chart(pl.DataFrame({"router": ["a"], "e2e_s": [1.0]}))
    with pytest.raises(ValueError, match=r"layout = 'huge' \(section 'c'\); expected one of"):
        ReportSection(key="c", title="c", chart=chart, layout="huge")
    with pytest.raises(ValueError, match=r"PageTable.key = 'a b'"):
        PageTable(key="a b", title="t", frame=pl.DataFrame({"x": [1]}))
    table = PageTable(key="t", title="t", frame=pl.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match=r"page_tables have duplicate keys \['t', 't'\]"):
        Report(
            title="t",
            metadata={"data": "x", "cluster": "x", "seed": 0, "significance_method": "x"},
            page_tables=(table, table),
        )
