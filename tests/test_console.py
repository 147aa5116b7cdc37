"""What the commands show at a terminal: progress policy, stage lines, plain tables."""

from __future__ import annotations

import io
import logging
import re

import pytest

from routeplay._console import format_table, progress_enabled, stage_lines


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_unless_forced_and_never_when_quiet() -> None:
    assert progress_enabled(quiet=False, stream=_Tty()) is True
    assert progress_enabled(quiet=False, stream=io.StringIO()) is False
    assert progress_enabled(quiet=False, force=True, stream=io.StringIO()) is True
    assert progress_enabled(quiet=True, force=True, stream=_Tty()) is False


def test_stage_lines_show_info_and_warnings_but_not_console_false_records() -> None:
    buf = io.StringIO()
    log = logging.getLogger("routeplay.test_console")
    root = logging.getLogger("routeplay")
    level_before, handlers_before = root.level, list(root.handlers)
    with stage_lines("demo", enabled=True, stream=buf):
        log.info("loading %d requests", 7)
        log.info("replay 1/4", extra={"console": False})
        log.warning("2 left-over folders")
        log.debug("not shown")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"routeplay demo \[ *\d+\.\d s\] loading 7 requests", lines[0])
    assert re.fullmatch(r"routeplay demo \[ *\d+\.\d s\] warning: 2 left-over folders", lines[1])
    assert root.level == level_before and root.handlers == handlers_before
    log.info("after the block")
    assert len(buf.getvalue().splitlines()) == 2


def test_stage_lines_disabled_attach_nothing() -> None:
    buf = io.StringIO()
    with stage_lines("demo", enabled=False, stream=buf):
        logging.getLogger("routeplay.test_console").warning("x")
    assert buf.getvalue() == ""


def test_format_table_aligns_and_names_a_ragged_row() -> None:
    text = format_table(["router", "p99 s"], [["round-robin", "12.5"], ["jsq", "3.25"]])
    assert text.splitlines() == [
        "router       p99 s",
        "-----------  -----",
        "round-robin   12.5",
        "jsq           3.25",
    ]
    with pytest.raises(ValueError, match=re.escape("row ['jsq'] has 1 cells; expected 2")):
        format_table(["router", "p99 s"], [["jsq"]])
