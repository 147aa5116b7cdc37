"""Collect the ``bench_*.py`` files of this folder as test modules.

pytest only collects ``test_*.py`` by default; the benchmarks keep their ``bench_``
names (they are also runnable scripts), so this hook collects them when the folder is
given on the command line. The other scripts here (``table2.py``, ``rl_headline.py``,
...) are not collected. Run every benchmark with::

    ROUTEPLAY_DATA_DIR=../shared/data .venv/bin/python -m pytest benchmarks -m benchmark \
        --benchmark-enable
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Module | None:
    """Collect ``bench_*.py`` as a test module (``test_*`` functions inside)."""
    if parent.session.isinitpath(file_path):
        return None  # named on the command line: pytest collects it itself
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
