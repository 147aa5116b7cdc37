"""The discrete-event engine: clusters, instances, the event loop, results.

``_engine`` (the event loop, routing API, forks, state; its docstring is the
specification), ``_instance`` (one instance's batching, KV and local queue),
``_clusters`` (built-in clusters and cluster files), ``_result`` and ``_metrics`` (what
a replay returns), ``_capacity`` (saturated throughput). The public names are
re-exported by :mod:`routeplay.replay`; import them from there.
"""
