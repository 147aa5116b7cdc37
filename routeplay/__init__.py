"""routeplay: offline trace replay and offline RL for routing LLM requests.

The work lives in the sub-packages ``routeplay.datasets``, ``routeplay.estimator``,
``routeplay.replay``, ``routeplay.offline_rl`` and ``routeplay.reports``; importing
this package imports none of them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("routeplay")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
