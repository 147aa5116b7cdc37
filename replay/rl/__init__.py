"""What reinforcement learning needs from the simulator.

Observations (``_observation``), rewards (``_rewards``), per-decision outcomes
(``_outcomes``), transition datasets (``_transitions``, ``routeplay log``) and the
gymnasium environment (``_env``). The public names are re-exported by
:mod:`routeplay.replay`; import them from there.
"""
