"""The report writer: one self-contained HTML page, images, ``summary.json``, Parquet.

:func:`write_report` turns a :class:`Report` (metadata, charts, tables, numbers) into
a folder::

    report.html            the verdict, every chart, Vega's JavaScript inlined: opens offline
    summary.json           metadata, the verdict, every number the page shows
    tables/<name>.parquet  the tables the page shows and the data behind each chart
    images/<chart>.svg|png static exports (vl-convert, no network)

The page opens with the title and the verdict (:class:`~routeplay.estimator.Verdict`), so
a reader sees who won, by how much and whether it is significant without scrolling at
1280 x 800; charts follow in a two-column grid, then tables formatted for people
(:class:`PageTable`); the full tables and the metadata are folded in ``<details>``.

The page hooks ``window.onerror``, unhandled promise rejections and
``console.error``/``console.warn`` and writes what they catch into
``#routeplay-errors``/``#routeplay-warnings``, so a headless browser (and a person)
can see whether every chart rendered.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl
from routeplay.estimator._verdict import Verdict

import routeplay

from ._charts import ChartLike, chart_data

__all__ = [
    "IMAGE_FORMATS",
    "REQUIRED_METADATA",
    "SECTION_LAYOUTS",
    "PageTable",
    "Report",
    "ReportResult",
    "ReportSection",
    "render_html",
    "write_report",
]

#: Static image formats :func:`write_report` can export.
IMAGE_FORMATS: tuple[str, ...] = ("svg", "png")

#: Metadata every report must state (the library version is added automatically).
REQUIRED_METADATA: tuple[str, ...] = ("data", "cluster", "seed", "significance_method")

#: How a chart is placed in the page's two-column grid: one cell, the full width, or
#: one column over two rows.
SECTION_LAYOUTS: tuple[str, ...] = ("normal", "wide", "tall")


def _check_key(kind: str, key: str) -> None:
    if not key or any(not (c.isalnum() or c in "_-") for c in key):
        raise ValueError(
            f"{kind}.key = {key!r}; expected a non-empty name of letters, "
            "digits, '_' and '-' (it names files and element ids)."
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportSection:
    """One chart of a report.

    Attributes:
        key: file-safe identifier (``[a-z0-9_-]``), used for the chart's element id,
            its image files and its data table.
        title: the chart's name (``summary.json``); shown as a heading only when the
            chart has no title of its own (a chart's title is its heading).
        chart: the chart.
        caption: a sentence shown under the chart.
        layout: one of :data:`SECTION_LAYOUTS`: ``"normal"`` (one grid cell),
            ``"wide"`` (full width, e.g. one panel per router side by side) or
            ``"tall"`` (one column, two rows).
    """

    key: str
    title: str
    chart: ChartLike
    caption: str = ""
    layout: str = "normal"

    def __post_init__(self) -> None:
        _check_key("ReportSection", self.key)
        if self.layout not in SECTION_LAYOUTS:
            raise ValueError(
                f"ReportSection.layout = {self.layout!r} (section {self.key!r}); expected "
                f"one of {SECTION_LAYOUTS}."
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class PageTable:
    """A table formatted for people: shown on the page, not stored.

    The numbers behind it belong in :attr:`Report.tables` (``summary.json`` and
    Parquet, every column); a page table picks and formats the columns a reader needs
    (headers with units, percentages, significance marks). String cells are shown as
    they are (a newline starts a second line in the cell); other values are formatted
    with four significant digits.

    Attributes:
        key: file-safe identifier (``data-table`` attribute).
        title: heading.
        frame: the rows, in display order, with human column names.
        caption: a sentence under the heading (what the marks and units mean).
        emphasis: row indices shown in bold (e.g. the winner).
    """

    key: str
    title: str
    frame: pl.DataFrame
    caption: str = ""
    emphasis: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check_key("PageTable", self.key)


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """Everything a report shows.

    Attributes:
        title: page title.
        metadata: what was run: at least :data:`REQUIRED_METADATA` (data, cluster,
            seed, significance method); data and cluster are shown under the title,
            everything in a folded "run details" block and in ``summary.json``.
            ``routeplay_version`` is added by :func:`write_report`.
        sections: the charts, in page order.
        tables: tables stored in full in ``summary.json`` and as Parquet (name ->
            frame); on the page they are shown as they are when there are no
            ``page_tables``, else folded under "full tables".
        data_tables: tables stored only as Parquet (e.g. per-request results).
        numbers: further numbers for ``summary.json`` (JSON-serialisable).
        notes: paragraphs shown under the verdict (warnings, caveats).
        verdict: what the comparison says in words (:func:`compute_verdict`): shown
            first, stored under ``"verdict"`` in ``summary.json``; optional.
        page_tables: formatted tables shown after the charts; optional.
    """

    title: str
    metadata: Mapping[str, Any]
    sections: tuple[ReportSection, ...] = ()
    tables: Mapping[str, pl.DataFrame] = field(default_factory=dict)
    data_tables: Mapping[str, pl.DataFrame] = field(default_factory=dict)
    numbers: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    verdict: Verdict | None = None
    page_tables: tuple[PageTable, ...] = ()

    def __post_init__(self) -> None:
        missing = [k for k in REQUIRED_METADATA if k not in self.metadata]
        if missing:
            raise ValueError(
                f"Report.metadata lacks {missing}; a report must state {list(REQUIRED_METADATA)}"
                " so a reader knows what was run. Fix: add them to metadata."
            )
        keys = [s.key for s in self.sections]
        if len(set(keys)) != len(keys):
            raise ValueError(f"Report.sections have duplicate keys {keys}; expected unique keys.")
        page_keys = [t.key for t in self.page_tables]
        if len(set(page_keys)) != len(page_keys):
            raise ValueError(
                f"Report.page_tables have duplicate keys {page_keys}; expected unique keys."
            )
        clash = sorted(set(self.tables) & set(self.data_tables))
        if clash:
            raise ValueError(
                f"Report table name(s) {clash} are in both tables and data_tables; "
                "expected distinct names (each becomes tables/<name>.parquet)."
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportResult:
    """Where :func:`write_report` put things.

    Attributes:
        out_dir: the report folder.
        html_path: the self-contained page.
        summary_path: ``summary.json``.
        files: every written file, relative to ``out_dir``, sorted.
    """

    out_dir: Path
    html_path: Path
    summary_path: Path
    files: tuple[str, ...]


def _json_safe(value: Any) -> Any:
    """Convert to JSON-safe values (non-finite floats -> None, tuples -> lists)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _json_safe(value.item())
    return value


def _table_rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [_json_safe(row) for row in frame.to_dicts()]


def _format_cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–" if math.isnan(value) else ("∞" if value > 0 else "-∞")
        return f"{value:.4g}"
    return str(value)


def _html_table(
    name: str, frame: pl.DataFrame, *, emphasis: Sequence[int] = (), css: str = "numbers"
) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    strong = set(emphasis)
    body = "".join(
        ('<tr class="emphasis">' if i in strong else "<tr>")
        + "".join(f"<td>{html.escape(_format_cell(v))}</td>" for v in row)
        + "</tr>"
        for i, row in enumerate(frame.iter_rows())
    )
    return (
        f'<div class="table-wrap"><table class="{css}" data-table="{html.escape(name)}">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element."""
    return json.dumps(value, allow_nan=False).replace("</", "<\\/")


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; line-height: 1.4; }
main { max-width: 1200px; margin: 0 auto; padding: 1.25rem 1.5rem 3rem; box-sizing: border-box; }
h1 { font-size: 1.45rem; margin: 0 0 0.25rem; }
h2 { font-size: 1.15rem; margin: 2rem 0 0.5rem; }
h3 { font-size: 1rem; margin: 0 0 0.3rem; }
.context { color: #555; font-size: 0.85rem; margin: 0 0 1rem; overflow-wrap: anywhere; }
#verdict { background: #f2f6fb; border-left: 6px solid #2f6fb3; border-radius: 4px;
  padding: 0.9rem 1.2rem; }
#verdict .headline { font-size: 1.4rem; line-height: 1.3; font-weight: 600; margin: 0 0 0.5rem; }
#verdict ul { margin: 0; padding-left: 1.2rem; }
#verdict li { margin: 0.15rem 0; }
#verdict .method { color: #555; font-size: 0.8rem; margin: 0.5rem 0 0; }
ul.notes { color: #555; font-size: 0.85rem; margin: 0.6rem 0 0; padding-left: 1.2rem; }
.charts { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 1.5rem 2rem;
  grid-auto-flow: row dense; margin-top: 1.5rem; }
.card { margin: 0; min-width: 0; }
.card.wide { grid-column: 1 / -1; }
.card.tall { grid-row: span 2; }
.chart { overflow-x: auto; }
.caption { color: #555; font-size: 0.85rem; margin: 0.2rem 0 0; }
table.numbers { border-collapse: collapse; font-size: 0.85rem; }
table.numbers th, table.numbers td { border: 1px solid #ddd; padding: 3px 7px; text-align: right;
  vertical-align: top; }
table.numbers th { background: #f4f4f4; }
table.numbers td:first-child, table.numbers th:first-child { text-align: left; }
table.pretty { border-collapse: collapse; font-size: 0.9rem; }
table.pretty th { text-align: right; border-bottom: 2px solid #999; padding: 4px 10px;
  font-weight: 600; vertical-align: bottom; }
table.pretty td { text-align: right; border-bottom: 1px solid #e4e4e4; padding: 4px 10px;
  white-space: pre-line; font-variant-numeric: tabular-nums; vertical-align: top; }
table.pretty td:first-child, table.pretty th:first-child { text-align: left; white-space: nowrap; }
table.pretty tr.emphasis td { font-weight: 600; }
.table-wrap { overflow-x: auto; margin-bottom: 1rem; }
details { margin-top: 1.5rem; }
details > summary { cursor: pointer; font-weight: 600; }
table.meta { font-size: 0.85rem; margin-top: 0.5rem; }
table.meta td { vertical-align: top; overflow-wrap: anywhere; }
table.meta td:first-child { font-weight: 600; padding-right: 1rem; white-space: nowrap; }
#routeplay-errors:empty, #routeplay-warnings:empty { display: none; }
#routeplay-errors { color: #a00; white-space: pre-wrap; border: 1px solid #a00; padding: 0.5rem; }
#routeplay-warnings { color: #850; white-space: pre-wrap; }
"""

# Installed before anything else runs: it records errors so that a reader and a
# headless browser can both see them.
_HOOK = """
(function () {
  function record(id, parts) {
    var el = document.getElementById(id);
    var text = Array.prototype.map.call(parts, function (p) {
      return (p && p.stack) ? p.stack : String(p);
    }).join(" ");
    if (el) { el.appendChild(document.createTextNode(text + "\\n")); }
    else { (window.__routeplayEarly = window.__routeplayEarly || []).push([id, text]); }
  }
  window.__routeplayRecord = record;
  window.addEventListener("error", function (e) { record("routeplay-errors", [e.message]); });
  window.addEventListener("unhandledrejection", function (e) {
    record("routeplay-errors", ["unhandled rejection:", e.reason]);
  });
  var origError = console.error, origWarn = console.warn;
  console.error = function () { record("routeplay-errors", arguments);
    origError.apply(console, arguments); };
  console.warn = function () { record("routeplay-warnings", arguments);
    origWarn.apply(console, arguments); };
})();
"""

_EMBED = """
(function () {
  (window.__routeplayEarly || []).forEach(function (e) { window.__routeplayRecord(e[0], [e[1]]); });
  var specs = %s;
  if (typeof vegaEmbed !== "function") {
    window.__routeplayRecord("routeplay-errors", ["vegaEmbed is not defined"]);
    return;
  }
  Object.keys(specs).forEach(function (key) {
    var el = document.getElementById("chart-" + key);
    vegaEmbed(el, specs[key], {renderer: "svg", actions: false})
      .then(function () { el.setAttribute("data-rendered", "true"); })
      .catch(function (err) { window.__routeplayRecord("routeplay-errors", [key + ":", err]); });
  });
})();
"""


def _javascript_bundle() -> str:
    import vl_convert

    vl_version = "_".join(alt.SCHEMA_VERSION.split(".")[:2])
    bundle: str = vl_convert.javascript_bundle(vl_version=vl_version)  # type: ignore[call-arg]
    return bundle.replace("</script", "<\\/script")


def _verdict_html(verdict: Verdict) -> str:
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in verdict.lines)
    return (
        '<section id="verdict" aria-label="verdict">'
        f'<p class="headline">{html.escape(verdict.headline)}</p>'
        + (f"<ul>{lines}</ul>" if lines else "")
        + f'<p class="method">{html.escape(verdict.method)}</p></section>\n'
    )


def _section_html(section: ReportSection, spec: Mapping[str, Any]) -> str:
    # A chart's own title is its heading; a chart without one gets the section title.
    heading = "" if spec.get("title") else f"<h3>{html.escape(section.title)}</h3>"
    caption = f'<p class="caption">{html.escape(section.caption)}</p>' if section.caption else ""
    return (
        f'<figure class="card {section.layout}" aria-label="{html.escape(section.title)}">'
        f'{heading}<div class="chart" id="chart-{section.key}" data-chart="{section.key}">'
        f"</div>{caption}</figure>"
    )


def _page_table_html(table: PageTable) -> str:
    caption = f'<p class="caption">{html.escape(table.caption)}</p>' if table.caption else ""
    return (
        f"<section><h2>{html.escape(table.title)}</h2>{caption}"
        f"{_html_table(table.key, table.frame, emphasis=table.emphasis, css='pretty')}</section>"
    )


def render_html(report: Report, metadata: Mapping[str, Any]) -> str:
    """The report page as one HTML string (JavaScript inlined).

    Page order: title and a line saying what data and cluster were used; the
    verdict (when the report has one) and the notes; the charts in a two-column
    grid; the page tables (or, without page tables, the report's tables); folded:
    every table in full and the metadata.

    Args:
        report: the report.
        metadata: the metadata to show (the report's plus the version).

    Returns:
        The HTML text.
    """
    context = " · ".join(
        f"{label}: {_format_cell(metadata[key])}"
        for key, label in (("data", "Data"), ("cluster", "Cluster"))
        if key in metadata
    )
    meta_rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_format_cell(v))}</td></tr>"
        for k, v in metadata.items()
    )
    verdict = _verdict_html(report.verdict) if report.verdict is not None else ""
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    specs = {s.key: s.chart.to_dict() for s in report.sections}
    charts = "".join(_section_html(s, specs[s.key]) for s in report.sections)
    raw_tables = "".join(
        f"<section><h2>{html.escape(name.replace('_', ' '))}</h2>"
        f"{_html_table(name, frame)}</section>"
        for name, frame in report.tables.items()
    )
    if report.page_tables:
        tables = "".join(_page_table_html(t) for t in report.page_tables)
        if raw_tables:
            tables += (
                "<details><summary>Full tables (every column, as in summary.json and "
                f"tables/*.parquet)</summary>{raw_tables}</details>"
            )
    else:
        tables = raw_tables
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(report.title)}</title>\n<style>{_STYLE}</style>\n"
        f"<script>{_HOOK}</script>\n"
        f"<script>{_javascript_bundle()}</script>\n</head>\n<body>\n<main>\n"
        f"<h1>{html.escape(report.title)}</h1>\n"
        + (f'<p class="context">{html.escape(context)}</p>\n' if context else "")
        + '<pre id="routeplay-errors"></pre><pre id="routeplay-warnings"></pre>\n'
        f"{verdict}"
        + (f'<ul class="notes">{notes}</ul>\n' if notes else "")
        + (f'<section class="charts">{charts}</section>\n' if charts else "")
        + f"{tables}\n"
        '<details id="run-details"><summary>Run details (metadata, as in summary.json)'
        f'</summary><table class="meta">{meta_rows}</table></details>\n'
        f"<script>{_EMBED % _script_json(specs)}</script>\n</main>\n</body>\n</html>\n"
    )


def write_report(
    report: Report,
    out_dir: str | Path,
    *,
    image_formats: Sequence[str] = IMAGE_FORMATS,
    image_scale: float = 1.5,
) -> ReportResult:
    """Write a report folder (HTML, ``summary.json``, Parquet tables, images).

    The folder may exist (files are overwritten); writing it atomically is the
    caller's job (the batch job builds in a temporary folder and renames it).

    Args:
        report: what to write.
        out_dir: the target folder (created).
        image_formats: any of :data:`IMAGE_FORMATS` (``()`` for none).
        image_scale: PNG scale factor.

    Returns:
        A :class:`ReportResult`.

    Raises:
        ValueError: on an unknown image format.

    Example:
        >>> import tempfile
        >>> t = pl.DataFrame({"router": ["rr", "rr"], "e2e_s": [1.0, 2.0]})
        >>> from routeplay.reports import latency_cdf_chart
        >>> rep = Report(title="demo", metadata={"data": "toy", "cluster": "none",
        ...     "seed": 0, "significance_method": "none"},
        ...     sections=(ReportSection(key="cdf", title="CDF", chart=latency_cdf_chart(t)),),
        ...     tables={"latency": t})
        >>> out = write_report(rep, tempfile.mkdtemp(), image_formats=())
        >>> out.files
        ('report.html', 'summary.json', 'tables/chart-cdf.parquet', 'tables/latency.parquet')
    """
    unknown = [f for f in image_formats if f not in IMAGE_FORMATS]
    if unknown:
        raise ValueError(
            f"write_report: unknown image format(s) {unknown}; expected any of {IMAGE_FORMATS}."
        )
    out = Path(out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    metadata = {**report.metadata, "routeplay_version": routeplay.__version__}

    table_files: dict[str, dict[str, Any]] = {}
    for name, frame in {**report.tables, **report.data_tables}.items():
        rel = f"tables/{name}.parquet"
        frame.write_parquet(out / rel)
        files.append(rel)
        table_files[name] = {"file": rel, "n_rows": frame.height, "columns": frame.columns}
    charts: dict[str, dict[str, Any]] = {}
    for section in report.sections:
        rel = f"tables/chart-{section.key}.parquet"
        data = chart_data(section.chart)
        data.write_parquet(out / rel)
        files.append(rel)
        charts[section.key] = {"title": section.title, "data": rel, "n_rows": data.height}
        if image_formats:
            (out / "images").mkdir(exist_ok=True)
        for fmt in image_formats:
            rel_img = f"images/{section.key}.{fmt}"
            if fmt == "png":
                section.chart.save(str(out / rel_img), scale_factor=image_scale)
            else:
                section.chart.save(str(out / rel_img))
            files.append(rel_img)
            charts[section.key].setdefault("images", []).append(rel_img)

    summary = {
        "title": report.title,
        "metadata": _json_safe(metadata),
        "notes": list(report.notes),
        "numbers": _json_safe(dict(report.numbers)),
        "tables": {
            name: {**table_files[name], "rows": _table_rows(frame)}
            for name, frame in report.tables.items()
        },
        "data_tables": {name: table_files[name] for name in report.data_tables},
        "charts": charts,
        "verdict": None if report.verdict is None else report.verdict.to_dict(),
    }
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    files.append("summary.json")
    html_path = out / "report.html"
    html_path.write_text(render_html(report, metadata), encoding="utf-8")
    files.append("report.html")
    return ReportResult(
        out_dir=out, html_path=html_path, summary_path=summary_path, files=tuple(sorted(files))
    )
