"""docs/reproduction.md cannot drift from the code that made its tables.

The smallest part of the reproduction study (``benchmarks/repro_study.py smoke``: the
section 6.1 pipeline on 4 held-out episodes of 300 requests, about a second of replay)
is rerun here and its markdown must equal, character for character, the block pasted
in ``docs/reproduction.md`` between ``<!-- repro:smoke:begin -->`` and
``<!-- repro:smoke:end -->``. Every trace, replay and bootstrap is seeded, so the output
is deterministic; a change to the engine, the routers, the statistics or the study
shows up here and the document must be regenerated (the command is in the document).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reproduction.md"
SCRIPT = ROOT / "benchmarks" / "repro_study.py"
BLOCK = re.compile(r"<!-- repro:smoke:begin -->\n(.*?)<!-- repro:smoke:end -->", re.DOTALL)


def _load_study() -> ModuleType:
    spec = importlib.util.spec_from_file_location("routeplay_bench_repro_study", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _pasted_block() -> str:
    match = BLOCK.search(DOC.read_text(encoding="utf-8"))
    assert match is not None, f"{DOC} lacks the <!-- repro:smoke:begin/end --> block"
    return match.group(1)


def test_smoke_output_equals_the_pasted_table() -> None:
    study = _load_study()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        study.smoke()
    assert out.getvalue() == _pasted_block()


def test_pasted_block_holds_the_comparison_table() -> None:
    block = _pasted_block()
    assert "| round-robin |" in block
    assert "improvement over round-robin" in block


def test_main_rejects_an_unknown_part() -> None:
    study = _load_study()
    with pytest.raises(SystemExit) as info, contextlib.redirect_stderr(io.StringIO()):
        study.main(["table9"])
    assert info.value.code == 2
