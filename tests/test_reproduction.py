"""docs/reproduction.md cannot drift from the code that made its tables.

The smallest part of the reproduction study (``Section61Config.smoke()``: the section
6.1 pipeline on 4 held-out episodes of 300 requests, about a second of replay; printed
by ``benchmarks/repro_study.py smoke``) is rerun here through the library
(``routeplay.reports.section61_tables``) and its markdown must equal, character for
character, the block pasted in ``docs/reproduction.md`` between
``<!-- repro:smoke:begin -->`` and ``<!-- repro:smoke:end -->``. Every trace, replay and
bootstrap is seeded, so the output is deterministic; a change to the engine, the
routers, the statistics or the study shows up here and the document must be regenerated
(the command is in the document).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from routeplay.reports import Section61Config, section61_tables

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reproduction.md"
SCRIPT = ROOT / "benchmarks" / "repro_study.py"
BLOCK = re.compile(r"<!-- repro:smoke:begin -->\n(.*?)<!-- repro:smoke:end -->", re.DOTALL)


def _pasted_block() -> str:
    match = BLOCK.search(DOC.read_text(encoding="utf-8"))
    assert match is not None, f"{DOC} lacks the <!-- repro:smoke:begin/end --> block"
    return match.group(1)


def test_smoke_output_equals_the_pasted_table() -> None:
    assert "".join(section61_tables(Section61Config.smoke())) == _pasted_block()


def test_pasted_block_holds_the_comparison_table() -> None:
    block = _pasted_block()
    assert "| round-robin |" in block
    assert "improvement over round-robin" in block


def test_script_rejects_an_unknown_part() -> None:
    # the script is run, never imported: tests import the library only
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "table9"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 2, out.stderr
    assert "invalid choice: 'table9'" in out.stderr
