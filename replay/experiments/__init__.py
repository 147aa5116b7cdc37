"""Experiments over many replays: scenarios, paired episodes, sweeps, the Table 2 grid.

``_scenario`` (the one experiment pipeline's :class:`Scenario`), ``_episodes`` (paired
replays of routers over episodes), ``_sweep`` (grids on a process pool or Ray),
``_table2``. The public names are re-exported by :mod:`routeplay.replay`; import them
from there.
"""
