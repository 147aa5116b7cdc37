"""Routing policies: the registry, every built-in router and scheduler, the contract checker.

The registry (``_registry``: ``register_router``, ``make_router``, entry points), the
built-in routers by family (``_basic``, ``_paper``, ``_impact``, ``_production``,
``_reference``), router-queue schedulers (``_schedulers``), shared helpers
(``_common``) and the router contract checker (``_check``). The public names are
re-exported by :mod:`routeplay.replay`; import them from there.
"""
