"""The workload-impact estimator: the thing other schedulers import.

For an incoming request ``i`` (``p_i`` prompt tokens, ``d_i`` predicted output tokens)
and every instance ``m`` of a cluster (holding requests ``j`` with ``p_j`` prompt and
``d_j`` output tokens, summed as ``S_m = sum_j (p_j + d_j)``), it scores how much
sending ``i`` to ``m`` would hurt, following the slides of Jain et al. (EuroMLSys 2025,
"heuristic-guided RL router"; System A in docs/design.md):

    T_p   = grad1 * (p_i**2 + S_m)                      prefill-impact time (s)
    r_p   = 1                 if T_p <= eps
          = 1 - T_p / eps     otherwise                 prefill reward, <= 1
    r_d   = tanh(grad2 * ((p_i + d_i) - S_m) / decode_scale_s)   decode reward, in (-1, 1)
    r_mix = alpha * r_p + (1 - alpha) * r_d

Direction (a choice, tested): the ``r`` values are *rewards*: higher means less impact.
``r_p`` is 1 on an instance whose prefill-impact time is within budget and falls
linearly beyond; ``r_d`` falls as the instance holds more tokens. The minimum-impact
instance is therefore ``argmax(r_mix)`` (ties go to the lowest index), and an idle
instance always scores at least as high as a loaded one.

Choices where the published equations (images on slides) are ambiguous:

* ``T_p`` uses ``p_i**2`` as the slide writes it, although ``grad1`` is quoted in
  seconds per token (so a 1,000-token prompt gives ``T_p`` = 320 s and ``r_p`` far below
  0: ``r_p`` is unbounded below, exactly as the slide's ``1 - T_p/eps``). The
  dimensionally consistent reading ``grad1 * (p_i + S_m)`` is available with
  ``ImpactConfig(prompt_power=1)``. Neither changes which instance is best when every
  instance is above ``eps``: the ``p_i`` term is the same for every instance.
* ``eps_s`` (not published) defaults to 0.5 s, the paper's own threshold for a heavy
  prefill (docs/design.md, System A: heavy prompt = prefill >= 0.5 s): an instance is "not impacted"
  while the prefill-impact time stays below what the paper itself calls heavy.
* ``r_d``: the slide writes ``-grad2 * S_m + p_i + d_i``, which adds seconds to
  tokens. We apply ``grad2`` to both token counts (the only dimensionally consistent
  reading that keeps its signs), giving seconds, and normalise with
  ``tanh(. / decode_scale_s)`` so that ``r_d`` lies in (-1, 1) without clipping and is
  strictly decreasing in ``S_m``. ``decode_scale_s`` defaults to 1 s: with the paper's
  ``grad2`` an instance holding ~30k more tokens than the request scores
  ``tanh(-1) = -0.76``. The ``p_i + d_i`` term is the same for every instance, so it
  shifts ``r_d`` but never changes the ``argmax``; it only sets where ``r_d`` crosses 0
  (an instance holding fewer tokens than the new request itself scores ``r_d > 0``).
* Both terms are monotone decreasing in ``S_m``, so on a homogeneous cluster the best
  instance is the one holding the fewest tokens; the estimator's value to a learning
  router lies in the magnitudes (the penalty :func:`impact_penalty`) and in the
  ``eps`` plateau. Heterogeneous clusters pass ``relative_cost`` (per-instance
  multipliers of both gradients, e.g. 0.5 for an instance twice as fast).

Example:
    >>> from routeplay.estimator import estimate_impact, impact_penalty
    >>> est = estimate_impact(prompt_tokens=20, predicted_output_tokens=100,
    ...                       tokens_in_system=[5000, 0, 1200])
    >>> est.best_instance
    1
    >>> est.r_p.round(4).tolist()
    [-2.456, 1.0, -0.024]
    >>> round(impact_penalty(est, 0), 4), impact_penalty(est, 1)
    (1.8098, 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl

__all__ = [
    "ImpactBatchEstimate",
    "ImpactConfig",
    "ImpactEstimate",
    "estimate_impact",
    "estimate_impact_batch",
    "impact_penalty",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ImpactConfig:
    """Parameters of the workload-impact estimator (see the module docstring).

    Attributes:
        grad1_s_per_token: prefill gradient (paper: 3.2e-4 s per prompt token, V100).
        grad2_s_per_token: decode gradient (paper: 3.3e-5 s per token in the system).
        alpha: weight of the prefill reward in ``r_mix`` (paper: 0.5), in [0, 1].
        eps_s: prefill-impact budget in seconds; ``r_p = 1`` while ``T_p <= eps_s``.
            Not published; defaults to 0.5 s, the paper's heavy-prefill threshold.
        decode_scale_s: time scale of the ``tanh`` that maps the decode term (seconds)
            into (-1, 1); defaults to 1 s.
        prompt_power: exponent of ``p_i`` in ``T_p``: 2 is the slide's form, 1 the
            dimensionally consistent reading.

    Example:
        >>> ImpactConfig(alpha=0.7).eps_s
        0.5
        >>> ImpactConfig(alpha=1.5)
        Traceback (most recent call last):
        ...
        ValueError: ImpactConfig.alpha = 1.5; expected a weight in [0, 1]. Fix: ...
    """

    grad1_s_per_token: float = 3.2e-4
    grad2_s_per_token: float = 3.3e-5
    alpha: float = 0.5
    eps_s: float = 0.5
    decode_scale_s: float = 1.0
    prompt_power: Literal[1, 2] = 2

    def __post_init__(self) -> None:
        for name in ("grad1_s_per_token", "grad2_s_per_token"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(
                    f"ImpactConfig.{name} = {value!r}; expected a finite gradient >= 0 "
                    "(seconds per token). Fix: use the paper's value or a fitted one."
                )
        if not (np.isfinite(self.alpha) and 0.0 <= self.alpha <= 1.0):
            raise ValueError(
                f"ImpactConfig.alpha = {self.alpha!r}; expected a weight in [0, 1]. "
                "Fix: pass e.g. alpha=0.5 (the paper's value)."
            )
        for name in ("eps_s", "decode_scale_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(
                    f"ImpactConfig.{name} = {value!r}; expected a finite time > 0 seconds. "
                    f"Fix: pass e.g. {name}=0.5."
                )
        if self.prompt_power not in (1, 2):
            raise ValueError(
                f"ImpactConfig.prompt_power = {self.prompt_power!r}; expected 1 or 2. "
                "Fix: use 2 for the slide's p_i**2 or 1 for a prefill time linear in p_i."
            )


@dataclass(frozen=True, slots=True)
class ImpactEstimate:
    """Per-instance impact rewards of one request (higher = less impact).

    Attributes:
        r_p: (m,) prefill reward per instance (<= 1, unbounded below).
        r_d: (m,) decode reward per instance, in (-1, 1).
        r_mix: (m,) ``alpha * r_p + (1 - alpha) * r_d``.
        best_instance: the minimum-impact instance, ``argmax(r_mix)`` (ties -> lowest index).

    Example:
        >>> est = estimate_impact(10, 10, [100, 0])
        >>> est.to_frame().columns
        ['instance', 'r_p', 'r_d', 'r_mix', 'is_best']
    """

    r_p: npt.NDArray[np.float64]
    r_d: npt.NDArray[np.float64]
    r_mix: npt.NDArray[np.float64]
    best_instance: int

    @property
    def n_instances(self) -> int:
        """Number of instances scored."""
        return int(self.r_mix.shape[0])

    def to_frame(self) -> pl.DataFrame:
        """One row per instance: index, the three rewards and whether it is the best."""
        return pl.DataFrame(
            {
                "instance": np.arange(self.n_instances, dtype=np.int64),
                "r_p": self.r_p,
                "r_d": self.r_d,
                "r_mix": self.r_mix,
                "is_best": np.arange(self.n_instances) == self.best_instance,
            }
        )


@dataclass(frozen=True, slots=True)
class ImpactBatchEstimate:
    """Impact rewards of ``n`` requests against ``m`` instances each (see :class:`ImpactEstimate`).

    Attributes:
        r_p: (n, m) prefill rewards.
        r_d: (n, m) decode rewards.
        r_mix: (n, m) mixed rewards.
        best_instance: (n,) ``argmax`` of each row of ``r_mix`` (ties -> lowest index).

    Example:
        >>> b = estimate_impact_batch([10, 10], [5, 5], [[0, 100], [100, 0]])
        >>> b.best_instance.tolist()
        [0, 1]
        >>> b[1].best_instance
        1
    """

    r_p: npt.NDArray[np.float64]
    r_d: npt.NDArray[np.float64]
    r_mix: npt.NDArray[np.float64]
    best_instance: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.r_mix.shape[0])

    def __getitem__(self, index: int) -> ImpactEstimate:
        """The estimate of request ``index`` alone."""
        return ImpactEstimate(
            r_p=self.r_p[index],
            r_d=self.r_d[index],
            r_mix=self.r_mix[index],
            best_instance=int(self.best_instance[index]),
        )

    def to_frame(self) -> pl.DataFrame:
        """Long format: one row per (request, instance)."""
        n, m = self.r_mix.shape
        return pl.DataFrame(
            {
                "request": np.repeat(np.arange(n, dtype=np.int64), m),
                "instance": np.tile(np.arange(m, dtype=np.int64), n),
                "r_p": self.r_p.ravel(),
                "r_d": self.r_d.ravel(),
                "r_mix": self.r_mix.ravel(),
                "is_best": (np.arange(m)[None, :] == self.best_instance[:, None]).ravel(),
            }
        )


def _check_tokens(name: str, values: npt.NDArray[np.float64]) -> None:
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f" at index {index[0] if len(index) == 1 else index}" if values.ndim else ""
        raise ValueError(
            f"{name} has value {float(values[index])!r}{where}; expected finite token counts >= 0. "
            "Fix: pass token counts (tokens_in_system = sum over the instance's requests "
            "of prompt + output tokens)."
        )


def _rewards(
    p: npt.NDArray[np.float64],
    d: npt.NDArray[np.float64],
    s: npt.NDArray[np.float64],
    cost: npt.NDArray[np.float64],
    config: ImpactConfig,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    # p, d: (n, 1); s: (n, m); cost: (m,)
    t_p = config.grad1_s_per_token * cost * (p**config.prompt_power + s)
    r_p = np.where(t_p <= config.eps_s, 1.0, 1.0 - t_p / config.eps_s)
    r_d = np.tanh(config.grad2_s_per_token * cost * ((p + d) - s) / config.decode_scale_s)
    r_mix = config.alpha * r_p + (1.0 - config.alpha) * r_d
    return r_p, r_d, r_mix


def _relative_cost(relative_cost: npt.ArrayLike | None, m: int) -> npt.NDArray[np.float64]:
    if relative_cost is None:
        return np.ones(m)
    cost = np.asarray(relative_cost, dtype=np.float64)
    if cost.shape != (m,):
        raise ValueError(
            f"relative_cost has shape {cost.shape}; expected ({m},), one multiplier per "
            "instance. Fix: pass one value per instance or None for a homogeneous cluster."
        )
    if not (np.isfinite(cost).all() and (cost > 0).all()):
        raise ValueError(
            f"relative_cost = {cost.tolist()}; expected finite multipliers > 0. "
            "Fix: use e.g. 0.5 for an instance twice as fast as the reference."
        )
    return cost


def estimate_impact(
    prompt_tokens: float,
    predicted_output_tokens: float,
    tokens_in_system: npt.ArrayLike,
    config: ImpactConfig = ImpactConfig(),  # noqa: B008 - frozen, immutable default
    *,
    relative_cost: npt.ArrayLike | None = None,
) -> ImpactEstimate:
    """Score every instance for one incoming request (vectorised across instances).

    Args:
        prompt_tokens: ``p_i``, the request's prompt tokens.
        predicted_output_tokens: ``d_i``, its predicted output tokens (e.g. a length
            predictor's ``expected_output_tokens``; never the true length in a
            non-oracle router).
        tokens_in_system: (m,) per instance, ``S_m = sum_j (p_j + d_j)`` over the requests
            already there (queued and running).
        config: gradients, ``alpha``, ``eps_s`` and the ``r_d`` scale.
        relative_cost: optional (m,) per-instance multipliers of both gradients, for a
            heterogeneous cluster (default: all 1).

    Returns:
        The per-instance rewards and the minimum-impact instance (``argmax r_mix``).

    Raises:
        ValueError: on negative or non-finite token counts, an empty or non-1-D
            ``tokens_in_system``, or a bad ``relative_cost``.

    Example:
        >>> est = estimate_impact(100, 50, np.array([0, 300, 300]))
        >>> est.best_instance, est.r_mix.argmax() == est.best_instance
        (0, np.True_)
    """
    s = np.asarray(tokens_in_system, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] == 0:
        raise ValueError(
            f"tokens_in_system has shape {s.shape}; expected (m,) with m >= 1, one total per "
            "instance. Fix: for many requests at once use estimate_impact_batch."
        )
    p = np.asarray(prompt_tokens, dtype=np.float64)
    d = np.asarray(predicted_output_tokens, dtype=np.float64)
    if p.ndim or d.ndim:
        raise ValueError(
            f"prompt_tokens and predicted_output_tokens must be scalars, got shapes {p.shape} "
            f"and {d.shape}. Fix: for many requests at once use estimate_impact_batch."
        )
    _check_tokens("prompt_tokens", p)
    _check_tokens("predicted_output_tokens", d)
    _check_tokens("tokens_in_system", s)
    cost = _relative_cost(relative_cost, s.shape[0])
    r_p, r_d, r_mix = _rewards(p.reshape(1, 1), d.reshape(1, 1), s[None, :], cost, config)
    return ImpactEstimate(
        r_p=r_p[0], r_d=r_d[0], r_mix=r_mix[0], best_instance=int(np.argmax(r_mix[0]))
    )


def estimate_impact_batch(
    prompt_tokens: npt.ArrayLike,
    predicted_output_tokens: npt.ArrayLike,
    tokens_in_system: npt.ArrayLike,
    config: ImpactConfig = ImpactConfig(),  # noqa: B008 - frozen, immutable default
    *,
    relative_cost: npt.ArrayLike | None = None,
) -> ImpactBatchEstimate:
    """Score ``n`` requests against ``m`` instances in one vectorised call.

    Args:
        prompt_tokens: (n,) prompt tokens.
        predicted_output_tokens: (n,) predicted output tokens.
        tokens_in_system: (n, m) per request and instance, or (m,) shared by every request
            (e.g. pricing a queue of requests against one snapshot).
        config: see :class:`ImpactConfig`.
        relative_cost: optional (m,) per-instance gradient multipliers.

    Returns:
        An :class:`ImpactBatchEstimate`; row ``k`` equals
        ``estimate_impact(prompt_tokens[k], predicted_output_tokens[k], tokens_in_system[k])``.

    Raises:
        ValueError: on mismatched shapes or invalid token counts.

    Example:
        >>> b = estimate_impact_batch([10, 2000], [5, 5], [300, 0, 900])
        >>> b.r_mix.shape, b.best_instance.tolist()
        ((2, 3), [1, 1])
    """
    p = np.asarray(prompt_tokens, dtype=np.float64)
    d = np.asarray(predicted_output_tokens, dtype=np.float64)
    s = np.asarray(tokens_in_system, dtype=np.float64)
    if p.ndim != 1 or d.shape != p.shape:
        raise ValueError(
            f"prompt_tokens has shape {p.shape} and predicted_output_tokens {d.shape}; "
            "expected two (n,) arrays of the same length. Fix: pass one value per request."
        )
    if s.ndim == 1:
        s = np.broadcast_to(s, (p.shape[0], s.shape[0]))
    if s.ndim != 2 or s.shape[0] != p.shape[0] or s.shape[1] == 0:
        raise ValueError(
            f"tokens_in_system has shape {np.shape(tokens_in_system)}; expected "
            f"({p.shape[0]}, m) or (m,) with m >= 1. Fix: one row of per-instance totals "
            "per request."
        )
    _check_tokens("prompt_tokens", p)
    _check_tokens("predicted_output_tokens", d)
    _check_tokens("tokens_in_system", s)
    cost = _relative_cost(relative_cost, s.shape[1])
    r_p, r_d, r_mix = _rewards(p[:, None], d[:, None], s, cost, config)
    return ImpactBatchEstimate(
        r_p=r_p, r_d=r_d, r_mix=r_mix, best_instance=np.argmax(r_mix, axis=1).astype(np.int64)
    )


def impact_penalty(estimate: ImpactEstimate, chosen_instance: int) -> float:
    """The ``h(s_t, s_t+1)`` term of the paper's workload-guided reward.

    Defined as the shortfall of the chosen instance's mixed reward from the best one's:
    ``h = r_mix[best_instance] - r_mix[chosen_instance] >= 0``. It is 0 when the
    minimum-impact instance (or one tied with it) is chosen and grows with how much
    worse the choice is, in the same units as ``r_mix``. The reward subtracts
    ``w_k * h``. A WAIT action is not an instance: the caller decides its penalty.

    Args:
        estimate: the request's :class:`ImpactEstimate`.
        chosen_instance: the instance the router chose, in ``range(m)``.

    Returns:
        The non-negative penalty.

    Raises:
        ValueError: if ``chosen_instance`` is not a valid instance index.

    Example:
        >>> est = estimate_impact(10, 10, [0, 4000])
        >>> impact_penalty(est, 0), round(impact_penalty(est, 1), 4)
        (0.0, 1.3776)
    """
    m = estimate.n_instances
    if isinstance(chosen_instance, bool) or not isinstance(chosen_instance, int | np.integer):
        raise ValueError(
            f"chosen_instance = {chosen_instance!r}; expected an int instance index in "
            f"range({m}). Fix: pass the router's decision (not WAIT, whose penalty the "
            "caller defines)."
        )
    if not 0 <= chosen_instance < m:
        raise ValueError(
            f"chosen_instance = {chosen_instance!r}; expected an instance index in "
            f"range({m}). Fix: pass the router's decision (not WAIT, whose penalty the "
            "caller defines)."
        )
    return float(estimate.r_mix[estimate.best_instance] - estimate.r_mix[chosen_instance])
