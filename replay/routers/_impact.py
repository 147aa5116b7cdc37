"""The paper's workload-impact heuristic used directly as a router."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from routeplay.estimator._impact import ImpactConfig, ImpactEstimate, estimate_impact

from .._types import ClusterConfig, ClusterState, RequestView
from ._common import RouterBase, check_positive

__all__ = ["ImpactGreedyRouter"]


class ImpactGreedyRouter(RouterBase):
    """Impact-greedy: argmax of the workload-impact reward ``r_mix`` (= argmin impact).

    For each request it calls :func:`routeplay.estimator.estimate_impact` with the
    request's prompt tokens, its *predicted* output tokens
    (``default_output_tokens`` when the replay has no predictor) and the state's
    ``tokens_in_system`` (the paper's ``sum_j (p_j + d_j)`` per instance), and returns
    the estimate's ``best_instance`` (ties: lowest index). It is the heuristic the
    workload-guided RL reward penalises deviating from, used as a policy on its own.

    Source: Jain et al., "Intelligent Router for LLM Workloads" (EuroMLSys 2025),
    workload-impact estimator (slides; docs/design.md, System A); the reward's equations
    and the choices made where they are ambiguous are in ``estimator/_impact.py``.

    Args:
        config: the estimator's parameters (gradients, alpha, eps); default
            ``ImpactConfig()`` (the paper's V100 gradients, alpha 0.5, eps 0.5 s).
        default_output_tokens: predicted output used when the request has none.
        relative_cost: per-instance multipliers of both gradients for heterogeneous
            clusters: ``None`` (default, all 1), ``"latency"`` (each instance's
            ``prefill_s_per_token`` divided by the cluster mean), or one number per
            instance.

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(3)
        >>> r = ImpactGreedyRouter()
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> s = make_cluster_state(tokens_in_system=[5000, 0, 1200])
        >>> r.route(RequestView(0, 0.0, 20, predicted_output_tokens=100.0), s)
        1
    """

    name = "impact-greedy"
    oracle = False

    def __init__(
        self,
        *,
        config: ImpactConfig | None = None,
        default_output_tokens: float = 128.0,
        relative_cost: str | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if config is not None and not isinstance(config, ImpactConfig):
            raise ValueError(
                f"ImpactGreedyRouter: config = {config!r}; expected an ImpactConfig or None."
            )
        check_positive("ImpactGreedyRouter", "default_output_tokens", default_output_tokens)
        if isinstance(relative_cost, str) and relative_cost != "latency":
            raise ValueError(
                f"ImpactGreedyRouter: relative_cost = {relative_cost!r}; expected None, "
                "'latency' or one positive multiplier per instance."
            )
        if relative_cost is not None and not isinstance(relative_cost, str):
            relative_cost = tuple(float(c) for c in relative_cost)
            for k, c in enumerate(relative_cost):
                check_positive("ImpactGreedyRouter", f"relative_cost[{k}]", c)
        self.config = config if config is not None else ImpactConfig()
        self.default_output_tokens = float(default_output_tokens)
        self.relative_cost = relative_cost
        self._cost: npt.NDArray[np.float64] | None = None

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Resolve the per-instance cost multipliers for ``cluster``."""
        super().reset(cluster, rng)
        rc = self.relative_cost
        if rc is None:
            self._cost = None
        elif isinstance(rc, str):
            per_token = np.array(
                [inst.latency.prefill_s_per_token for inst in cluster.instances], dtype=np.float64
            )
            mean = per_token.mean()
            self._cost = per_token / mean if mean > 0 else np.ones_like(per_token)
        else:
            if len(rc) != cluster.n_instances:
                raise ValueError(
                    f"ImpactGreedyRouter: relative_cost has {len(rc)} entries for a cluster of "
                    f"{cluster.n_instances} instances; expected one per instance."
                )
            self._cost = np.array(rc, dtype=np.float64)

    def estimate(self, request: RequestView, state: ClusterState) -> ImpactEstimate:
        """The workload-impact estimate of ``request`` on every instance."""
        pred = request.predicted_output_tokens
        out = self.default_output_tokens if pred is None else float(pred)
        return estimate_impact(
            request.prompt_tokens,
            out,
            state.tokens_in_system,
            self.config,
            relative_cost=self._cost,
        )

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return the minimum-impact instance (``argmax r_mix``)."""
        self._m(state)
        return int(self.estimate(request, state).best_instance)
