"""The report writer: one self-contained HTML page, images, ``summary.json``, Parquet.

:func:`write_report` turns a :class:`Report` (metadata, charts, tables, numbers) into
a folder::

    report.html            every chart, Vega's JavaScript inlined: opens offline
    summary.json           metadata + every number the page shows (machine readable)
    tables/<name>.parquet  the tables the page shows and the data behind each chart
    images/<chart>.svg|png static exports (vl-convert, no network)

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

import routeplay

from ._charts import ChartLike, chart_data

__all__ = [
    "IMAGE_FORMATS",
    "REQUIRED_METADATA",
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportSection:
    """One chart of a report.

    Attributes:
        key: file-safe identifier (``[a-z0-9_-]``), used for the chart's element id,
            its image files and its data table.
        title: heading shown above the chart.
        chart: the chart.
        caption: a sentence shown under the heading.
    """

    key: str
    title: str
    chart: ChartLike
    caption: str = ""

    def __post_init__(self) -> None:
        if not self.key or any(not (c.isalnum() or c in "_-") for c in self.key):
            raise ValueError(
                f"ReportSection.key = {self.key!r}; expected a non-empty name of letters, "
                "digits, '_' and '-' (it names files)."
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """Everything a report shows.

    Attributes:
        title: page title.
        metadata: what was run: at least :data:`REQUIRED_METADATA` (data, cluster,
            seed, significance method); shown at the top of the page and stored in
            ``summary.json``. ``routeplay_version`` is added by :func:`write_report`.
        sections: the charts, in page order.
        tables: tables shown on the page, stored in full in ``summary.json`` and as
            Parquet (name -> frame).
        data_tables: tables stored only as Parquet (e.g. per-request results).
        numbers: further numbers for ``summary.json`` (JSON-serialisable).
        notes: paragraphs shown under the metadata (warnings, caveats).
    """

    title: str
    metadata: Mapping[str, Any]
    sections: tuple[ReportSection, ...] = ()
    tables: Mapping[str, pl.DataFrame] = field(default_factory=dict)
    data_tables: Mapping[str, pl.DataFrame] = field(default_factory=dict)
    numbers: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

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


def _html_table(name: str, frame: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_format_cell(v))}</td>" for v in row) + "</tr>"
        for row in frame.iter_rows()
    )
    return (
        f'<div class="table-wrap"><table class="numbers" data-table="{html.escape(name)}">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element."""
    return json.dumps(value, allow_nan=False).replace("</", "<\\/")


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2rem; }
table.meta td:first-child { font-weight: 600; padding-right: 1rem; vertical-align: top; }
table.numbers { border-collapse: collapse; font-size: 0.85rem; }
table.numbers th, table.numbers td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
table.numbers th { background: #f4f4f4; }
.table-wrap { overflow-x: auto; margin-bottom: 1rem; }
section { margin-top: 2rem; }
.caption { color: #555; }
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


def render_html(report: Report, metadata: Mapping[str, Any]) -> str:
    """The report page as one HTML string (JavaScript inlined).

    Args:
        report: the report.
        metadata: the metadata to show (the report's plus the version).

    Returns:
        The HTML text.
    """
    meta_rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_format_cell(v))}</td></tr>"
        for k, v in metadata.items()
    )
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in report.notes)
    tables = "".join(
        f"<section><h2>{html.escape(name.replace('_', ' '))}</h2>"
        f"{_html_table(name, frame)}</section>"
        for name, frame in report.tables.items()
    )
    sections = "".join(
        f"<section><h2>{html.escape(s.title)}</h2>"
        + (f'<p class="caption">{html.escape(s.caption)}</p>' if s.caption else "")
        + f'<div class="chart" id="chart-{s.key}" data-chart="{s.key}"></div></section>'
        for s in report.sections
    )
    specs = {s.key: s.chart.to_dict() for s in report.sections}
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(report.title)}</title>\n<style>{_STYLE}</style>\n"
        f"<script>{_HOOK}</script>\n"
        f"<script>{_javascript_bundle()}</script>\n</head>\n<body>\n"
        f"<h1>{html.escape(report.title)}</h1>\n"
        '<pre id="routeplay-errors"></pre><pre id="routeplay-warnings"></pre>\n'
        f'<table class="meta">{meta_rows}</table>\n{notes}\n{tables}\n{sections}\n'
        f"<script>{_EMBED % _script_json(specs)}</script>\n</body>\n</html>\n"
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
