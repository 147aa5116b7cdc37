"""The five-task workload of "Intelligent Router for LLM Workloads" (Jain et al., 2025).

The paper replays 2,000 requests at 20 req/s drawn from five tasks and publishes,
per task, the mean prompt and decode (output) lengths and the share of
heavy-decode requests (its Table 1). It does not publish the length
distributions, so this module chooses them:

* **Output lengths** of a task follow a *discretised lognormal*
  ``Y = ceil(X)``, ``X ~ LogNormal(mu, sigma)`` (so ``Y >= 1``), with the two
  parameters solved (scipy ``brentq``) from two equations: ``E[Y]`` equals the
  published mean and ``P(Y >= heavy_output_tokens)`` equals the published
  heavy-decode share. Both are evaluated exactly for the discrete ``Y``, not for
  ``X``. For a task whose mean is below the threshold the share, as a function
  of ``sigma`` at fixed mean, rises and then falls, so two ``sigma`` solve it; we
  take the smaller one (the less dispersed distribution: for translation it puts
  the median at 36 tokens instead of 16). If no ``sigma`` reaches the share, the
  fit keeps the mean, uses the ``sigma`` whose share is closest, marks the task
  ``feasible=False`` and warns with both shares.
* **Prompt lengths** follow the same discretised lognormal with the published
  mean and a coefficient of variation ``prompt_cv`` (default 0.5:
  ``sigma = sqrt(log(1 + cv**2))`` of the underlying ``X``). The paper publishes
  no prompt dispersion; 0.5 is a moderate choice, and it is a parameter.
* Prompt and output lengths are drawn independently given the task (the paper
  publishes no correlation).

Heavy thresholds (classes are named prompt letter first: ``LL``, ``LH``, ``HL``,
``HH``):

* Heavy decode: decode phase >= 5 s. With the paper's ~0.035 s V100 decode
  iteration that is ``ceil(5 / 0.035) = 143`` output tokens
  (:data:`PAPER_HEAVY_DECODE_TOKENS`). Table 1's shares are read as shares at
  this threshold (``TaskSpec.heavy_output_tokens``); the classification
  threshold is a separate parameter with the same default.
* Heavy prompt: prefill >= 0.5 s. Read linearly with grad1 = 3.2e-4 s/token
  that is 1,563 tokens (:data:`LINEAR_HEAVY_PROMPT_TOKENS`), far above every
  task mean (at most 212), so almost nothing would be heavy-prompt and the
  paper's LH/HL orderings would be empty. The paper's own prefill-time estimate
  for a request on an idle instance is ``T_p = grad1 * p**2`` (its
  workload-impact estimator); ``grad1 * p**2 >= 0.5`` gives ``p >= 39.5``, so the
  default is **40 tokens** (:data:`PAPER_HEAVY_PROMPT_TOKENS`): the short-prompt
  tasks (translation, ELI5, WNUT) are mostly light and IMDb/SQuAD heavy, which
  makes all four classes occur. :func:`request_class` also accepts
  ``heavy_prompt_tokens="median"`` (heavy = above the trace's median prompt).

See ``docs/notes/taskmix.md`` for the fitted parameters and generated statistics.
"""

# Why this module is long: the task mix's five task distributions, their solved
# parameters and the generator are one published workload (Table 1 of the paper).

from __future__ import annotations

import functools
import importlib
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

import numpy as np
import polars as pl

from ._schema import validate_trace
from ._workloads import renewal_arrivals


class _LazyModule:
    """A module imported on first attribute access.

    scipy.optimize/special take ~0.3 s to import, and ``import routeplay.estimator``
    pulls this module in: it must stay light.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


optimize = _LazyModule("scipy.optimize")
special = _LazyModule("scipy.special")

__all__ = [
    "LINEAR_HEAVY_PROMPT_TOKENS",
    "PAPER_DECODE_ITERATION_S",
    "PAPER_HEAVY_DECODE_TOKENS",
    "PAPER_HEAVY_PROMPT_TOKENS",
    "PAPER_PREFILL_S_PER_TOKEN",
    "PAPER_TASKS",
    "REQUEST_CLASSES",
    "TASK_ORDERINGS",
    "DiscreteLogNormal",
    "TaskLengthFit",
    "TaskMixConfig",
    "TaskMixFit",
    "TaskSpec",
    "fit_task_lengths",
    "generate_task_mix",
    "generate_task_mix_episodes",
    "request_class",
]

#: The paper's V100 decode iteration time (s) used to turn 5 s into tokens.
PAPER_DECODE_ITERATION_S = 0.035
#: The paper's prefill gradient grad1 (s per prompt token).
PAPER_PREFILL_S_PER_TOKEN = 3.2e-4
#: Heavy decode: ``ceil(5 s / 0.035 s)`` output tokens.
PAPER_HEAVY_DECODE_TOKENS = math.ceil(5.0 / PAPER_DECODE_ITERATION_S)
#: Heavy prompt under the quadratic reading ``grad1 * p**2 >= 0.5 s`` (the default).
PAPER_HEAVY_PROMPT_TOKENS = math.ceil(math.sqrt(0.5 / PAPER_PREFILL_S_PER_TOKEN))
#: Heavy prompt under the linear reading ``grad1 * p >= 0.5 s`` (nearly nothing is heavy).
LINEAR_HEAVY_PROMPT_TOKENS = math.ceil(0.5 / PAPER_PREFILL_S_PER_TOKEN)

#: Request classes, prompt letter first.
REQUEST_CLASSES = ("LL", "LH", "HL", "HH")
_CLASS_DTYPE = pl.Enum(list(REQUEST_CLASSES))

TaskOrdering = Literal["all-random", "lh-hl-random", "lh-then-hl", "hl-then-lh"]
#: The four orderings of the paper's Table 2.
TASK_ORDERINGS: tuple[str, ...] = get_args(TaskOrdering)

_SIGMA_MIN = 0.02
_SIGMA_MAX = 5.0
_TAIL_START_TOKENS = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """Published length statistics of one task.

    Attributes:
        name: task name (the ``task`` column value).
        mean_prompt_tokens: mean prompt length, > 1.
        mean_output_tokens: mean output (decode) length, > 1.
        heavy_output_share: share of requests with at least ``heavy_output_tokens``
            output tokens, in [0, 1).
        heavy_output_tokens: the threshold that share refers to.

    Example:
        >>> TaskSpec(name="qa", mean_prompt_tokens=50, mean_output_tokens=80,
        ...          heavy_output_share=0.1).heavy_output_tokens
        143
    """

    name: str
    mean_prompt_tokens: float
    mean_output_tokens: float
    heavy_output_share: float
    heavy_output_tokens: int = PAPER_HEAVY_DECODE_TOKENS

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"TaskSpec name={self.name!r} is invalid; expected a non-empty str.")
        for field in ("mean_prompt_tokens", "mean_output_tokens"):
            value = getattr(self, field)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 1):
                raise ValueError(
                    f"TaskSpec {self.name!r}: {field}={value!r} is invalid; expected a finite "
                    "mean > 1 token (lengths are integers >= 1)."
                )
        share = self.heavy_output_share
        if not (isinstance(share, int | float) and 0 <= share < 1):
            raise ValueError(
                f"TaskSpec {self.name!r}: heavy_output_share={share!r} is invalid; expected a "
                "fraction in [0, 1) (e.g. 0.092 for 9.2 %)."
            )
        tokens = self.heavy_output_tokens
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 2:
            raise ValueError(
                f"TaskSpec {self.name!r}: heavy_output_tokens={tokens!r} is invalid; expected "
                "an integer >= 2."
            )


#: Table 1 of Jain et al. (2025): mean prompt/decode tokens and heavy-decode shares.
PAPER_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(name="translation", mean_prompt_tokens=29, mean_output_tokens=62,
             heavy_output_share=0.092),
    TaskSpec(name="eli5", mean_prompt_tokens=30, mean_output_tokens=334,
             heavy_output_share=0.582),
    TaskSpec(name="imdb", mean_prompt_tokens=212, mean_output_tokens=143,
             heavy_output_share=0.410),
    TaskSpec(name="squad", mean_prompt_tokens=125, mean_output_tokens=220,
             heavy_output_share=0.480),
    TaskSpec(name="wnut", mean_prompt_tokens=26, mean_output_tokens=64,
             heavy_output_share=0.087),
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscreteLogNormal:
    """``Y = ceil(X)`` with ``X ~ LogNormal(mu, sigma)``: integers >= 1.

    Attributes:
        mu: mean of ``log X``.
        sigma: standard deviation of ``log X``, > 0.

    Example:
        >>> d = DiscreteLogNormal(mu=3.0, sigma=0.5)
        >>> round(d.mean(), 2), round(d.sf(21), 3)
        (23.26, 0.503)
    """

    mu: float
    sigma: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mu) and math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(
                f"DiscreteLogNormal(mu={self.mu!r}, sigma={self.sigma!r}) is invalid; expected "
                "a finite mu and a finite sigma > 0."
            )

    def sf(self, tokens: int) -> float:
        """``P(Y >= tokens)``.

        Args:
            tokens: the threshold.

        Returns:
            The probability (1 for ``tokens <= 1``).
        """
        if tokens <= 1:
            return 1.0
        return float(special.ndtr((self.mu - math.log(tokens - 1)) / self.sigma))

    def mean(self) -> float:
        """``E[Y] = sum_{k >= 0} P(X > k)``, summed exactly to 4,096 tokens, then the tail.

        The tail ``sum_{k >= K} P(X > k)`` uses Euler-Maclaurin: the closed-form
        integral of the lognormal survival function plus ``S(K)/2 + pdf(K)/12``.

        Returns:
            The mean of ``Y``.
        """
        mu, sigma = self.mu, self.sigma
        k = np.arange(1, _TAIL_START_TOKENS, dtype=np.float64)
        head = 1.0 + float(special.ndtr((mu - np.log(k)) / sigma).sum())
        big_k = float(_TAIL_START_TOKENS)
        z = (math.log(big_k) - mu) / sigma
        survival = float(special.ndtr(-z))
        integral = math.exp(mu + sigma**2 / 2) * float(special.ndtr(sigma - z)) - big_k * survival
        density = math.exp(-(z**2) / 2) / (math.sqrt(2 * math.pi) * big_k * sigma)
        return head + max(integral, 0.0) + survival / 2 + density / 12

    def sample(
        self,
        rng: np.random.Generator,
        n: int,
        *,
        min_tokens: int = 1,
        max_tokens: int | None = None,
    ) -> np.ndarray:
        """Draw ``n`` values, conditioned on ``min_tokens <= Y <= max_tokens``.

        Inverse-CDF sampling of the truncated normal ``log X`` (from the upper
        tail's survival side when the truncation lies above the median, for
        precision), then ``ceil``.

        Args:
            rng: the generator (one uniform draw per value).
            n: number of values.
            min_tokens: lower bound (inclusive, >= 1).
            max_tokens: upper bound (inclusive) or ``None``.

        Returns:
            An int64 array of ``n`` values in ``[min_tokens, max_tokens]``.
        """
        z_lo = -math.inf if min_tokens <= 1 else (math.log(min_tokens - 1) - self.mu) / self.sigma
        z_hi = math.inf if max_tokens is None else (math.log(max_tokens) - self.mu) / self.sigma
        if z_lo > 0:
            v = rng.uniform(special.ndtr(-z_hi), special.ndtr(-z_lo), n)
            z = -special.ndtri(v)
        else:
            u = rng.uniform(special.ndtr(z_lo), special.ndtr(z_hi), n)
            z = special.ndtri(u)
        with np.errstate(over="ignore"):
            values = np.ceil(np.exp(self.mu + self.sigma * z))
        # The clip only acts when a uniform draw lands exactly on a truncation bound
        # (probability ~2**-53): it keeps the conditioning exact, it clips no data.
        upper = np.inf if max_tokens is None else max_tokens
        clipped: np.ndarray = np.clip(values, max(min_tokens, 1), upper).astype(np.int64)
        return clipped


def _lognormal_with_mean(mean_tokens: float, sigma: float) -> DiscreteLogNormal:
    """The ``DiscreteLogNormal`` with this ``sigma`` whose ``E[Y]`` is ``mean_tokens``."""
    centre = math.log(mean_tokens) - sigma**2 / 2

    def excess(mu: float) -> float:
        return DiscreteLogNormal(mu=mu, sigma=sigma).mean() - mean_tokens

    mu = optimize.brentq(excess, centre - 12.0, centre + 1.0, xtol=1e-12, rtol=1e-12)
    return DiscreteLogNormal(mu=float(mu), sigma=sigma)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskLengthFit:
    """Fitted length distributions of one task.

    Attributes:
        spec: the published statistics that were matched.
        prompt: prompt-length distribution.
        output: output-length distribution.
        feasible: whether the heavy-output share was matched exactly (else the
            closest achievable share at the published mean was used).
    """

    spec: TaskSpec
    prompt: DiscreteLogNormal
    output: DiscreteLogNormal
    feasible: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskMixFit:
    """Fitted length distributions of every task of a mix.

    Attributes:
        tasks: one fit per task, in the order of the specs.
        prompt_cv: the prompt coefficient of variation used.

    Example:
        >>> fit = fit_task_lengths(PAPER_TASKS)
        >>> fit.to_frame().select("task", "fitted_mean_output_tokens").row(1)
        ('eli5', 334.0...)
    """

    tasks: tuple[TaskLengthFit, ...]
    prompt_cv: float

    def task(self, name: str) -> TaskLengthFit:
        """The fit of the task called ``name``.

        Args:
            name: task name.

        Returns:
            Its fit.

        Raises:
            KeyError: naming the known tasks if ``name`` is unknown.
        """
        for fit in self.tasks:
            if fit.spec.name == name:
                return fit
        raise KeyError(
            f"unknown task {name!r}; expected one of {[f.spec.name for f in self.tasks]}"
        )

    def to_frame(self) -> pl.DataFrame:
        """One row per task: parameters, published targets and exact fitted values.

        Returns:
            A frame with columns ``task``, ``prompt_mu``, ``prompt_sigma``,
            ``output_mu``, ``output_sigma``, ``mean_prompt_tokens``,
            ``fitted_mean_prompt_tokens``, ``mean_output_tokens``,
            ``fitted_mean_output_tokens``, ``heavy_output_tokens``,
            ``heavy_output_share``, ``fitted_heavy_output_share``, ``feasible``.
        """
        rows = [
            {
                "task": fit.spec.name,
                "prompt_mu": fit.prompt.mu,
                "prompt_sigma": fit.prompt.sigma,
                "output_mu": fit.output.mu,
                "output_sigma": fit.output.sigma,
                "mean_prompt_tokens": float(fit.spec.mean_prompt_tokens),
                "fitted_mean_prompt_tokens": fit.prompt.mean(),
                "mean_output_tokens": float(fit.spec.mean_output_tokens),
                "fitted_mean_output_tokens": fit.output.mean(),
                "heavy_output_tokens": fit.spec.heavy_output_tokens,
                "heavy_output_share": float(fit.spec.heavy_output_share),
                "fitted_heavy_output_share": fit.output.sf(fit.spec.heavy_output_tokens),
                "feasible": fit.feasible,
            }
            for fit in self.tasks
        ]
        return pl.DataFrame(rows)

    def class_probabilities(
        self,
        *,
        heavy_prompt_tokens: int = PAPER_HEAVY_PROMPT_TOKENS,
        heavy_decode_tokens: int = PAPER_HEAVY_DECODE_TOKENS,
    ) -> pl.DataFrame:
        """Exact probability of each request class per task.

        Args:
            heavy_prompt_tokens: prompts with at least this many tokens are heavy.
            heavy_decode_tokens: outputs with at least this many tokens are heavy.

        Returns:
            A frame with columns ``task`` and one per class in :data:`REQUEST_CLASSES`.
        """
        rows = []
        for fit in self.tasks:
            p_heavy = fit.prompt.sf(heavy_prompt_tokens)
            d_heavy = fit.output.sf(heavy_decode_tokens)
            rows.append(
                {
                    "task": fit.spec.name,
                    "LL": (1 - p_heavy) * (1 - d_heavy),
                    "LH": (1 - p_heavy) * d_heavy,
                    "HL": p_heavy * (1 - d_heavy),
                    "HH": p_heavy * d_heavy,
                }
            )
        return pl.DataFrame(rows)


def _fit_output(spec: TaskSpec) -> tuple[DiscreteLogNormal, bool]:
    threshold, target = spec.heavy_output_tokens, spec.heavy_output_share

    def share(sigma: float) -> float:
        return _lognormal_with_mean(spec.mean_output_tokens, sigma).sf(threshold)

    def gap(sigma: float) -> float:
        return share(sigma) - target

    if gap(_SIGMA_MIN) >= 0:
        # Share falls with sigma from (almost) 1 to 0: the root is unique.
        if gap(_SIGMA_MAX) > 0:
            return _closest(spec, _SIGMA_MAX, share(_SIGMA_MAX)), False
        sigma = optimize.brentq(gap, _SIGMA_MIN, _SIGMA_MAX, xtol=1e-10)
    else:
        peak = optimize.minimize_scalar(
            lambda s: -share(s), bounds=(_SIGMA_MIN, _SIGMA_MAX), method="bounded",
            options={"xatol": 1e-6},
        )  # fmt: skip
        sigma_peak = float(peak.x)
        if gap(sigma_peak) < 0:
            return _closest(spec, sigma_peak, share(sigma_peak)), False
        sigma = optimize.brentq(gap, _SIGMA_MIN, sigma_peak, xtol=1e-10)
    return _lognormal_with_mean(spec.mean_output_tokens, float(sigma)), True


def _closest(spec: TaskSpec, sigma: float, achieved: float) -> DiscreteLogNormal:
    warnings.warn(
        f"task {spec.name!r}: no discretised lognormal with mean {spec.mean_output_tokens} "
        f"output tokens has P(output >= {spec.heavy_output_tokens}) = "
        f"{spec.heavy_output_share:.4f}; using the closest achievable share {achieved:.4f} "
        f"(sigma={sigma:.4f}) and keeping the mean.",
        stacklevel=4,
    )
    return _lognormal_with_mean(spec.mean_output_tokens, sigma)


@functools.lru_cache(maxsize=32)
def _fit_cached(tasks: tuple[TaskSpec, ...], prompt_cv: float) -> TaskMixFit:
    prompt_sigma = math.sqrt(math.log1p(prompt_cv**2))
    fits = []
    for spec in tasks:
        output, feasible = _fit_output(spec)
        prompt = _lognormal_with_mean(spec.mean_prompt_tokens, prompt_sigma)
        fits.append(TaskLengthFit(spec=spec, prompt=prompt, output=output, feasible=feasible))
    return TaskMixFit(tasks=tuple(fits), prompt_cv=prompt_cv)


def fit_task_lengths(
    tasks: tuple[TaskSpec, ...] = PAPER_TASKS, *, prompt_cv: float = 0.5
) -> TaskMixFit:
    """Fit prompt and output length distributions to published task statistics.

    See the module docstring for the method. Results are cached per
    ``(tasks, prompt_cv)``; an infeasible heavy share warns on the first fit.

    Args:
        tasks: the task specs.
        prompt_cv: coefficient of variation of prompt lengths, > 0.

    Returns:
        The fitted distributions.

    Raises:
        ValueError: on an invalid ``prompt_cv`` or duplicate task names.

    Example:
        >>> fit = fit_task_lengths()
        >>> round(fit.task("translation").output.sf(143), 3)
        0.092
    """
    if not (isinstance(prompt_cv, int | float) and math.isfinite(prompt_cv) and prompt_cv > 0):
        raise ValueError(f"prompt_cv={prompt_cv!r} is invalid; expected a finite number > 0.")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"task names {names} must be unique and non-empty.")
    return _fit_cached(tuple(tasks), float(prompt_cv))


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskMixConfig:
    """How to generate a task-mix workload (defaults: the paper's testbed).

    Attributes:
        n_requests: number of requests (paper: 2,000).
        rate_per_s: Poisson arrival rate (paper: 20 req/s).
        tasks: the tasks and their published statistics.
        task_weights: relative weight per task name; ``None`` = uniform. Tasks
            not named get weight 0.
        ordering: one of :data:`TASK_ORDERINGS` (see :func:`generate_task_mix`).
        heavy_prompt_tokens: prompt class threshold (module docstring).
        heavy_decode_tokens: decode class threshold (module docstring).
        prompt_cv: prompt-length coefficient of variation.
        seed: random seed.

    Example:
        >>> TaskMixConfig(ordering="lh-then-hl").rate_per_s
        20.0
        >>> TaskMixConfig(ordering="sorted")
        Traceback (most recent call last):
        ...
        ValueError: ordering='sorted' is unknown; expected one of ('all-random', ...
    """

    n_requests: int = 2000
    rate_per_s: float = 20.0
    tasks: tuple[TaskSpec, ...] = PAPER_TASKS
    task_weights: Mapping[str, float] | None = None
    ordering: TaskOrdering = "all-random"
    heavy_prompt_tokens: int = PAPER_HEAVY_PROMPT_TOKENS
    heavy_decode_tokens: int = PAPER_HEAVY_DECODE_TOKENS
    prompt_cv: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        for field in ("n_requests", "heavy_prompt_tokens", "heavy_decode_tokens"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field}={value!r} is invalid; expected an integer >= 1.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} is invalid; expected an integer >= 0.")
        for field in ("rate_per_s", "prompt_cv"):
            value = getattr(self, field)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{field}={value!r} is invalid; expected a finite number > 0.")
        if self.ordering not in TASK_ORDERINGS:
            raise ValueError(
                f"ordering={self.ordering!r} is unknown; expected one of {TASK_ORDERINGS}."
            )
        names = [t.name for t in self.tasks]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"tasks must be non-empty with unique names, got {names}.")
        if self.task_weights is not None:
            unknown = [k for k in self.task_weights if k not in names]
            if unknown:
                raise ValueError(
                    f"task_weights names unknown task(s) {unknown}; expected names from {names}."
                )
            bad = {k: w for k, w in self.task_weights.items() if not (math.isfinite(w) and w >= 0)}
            if bad:
                raise ValueError(f"task_weights {bad} are invalid; expected finite weights >= 0.")
            if sum(self.task_weights.values()) <= 0:
                raise ValueError(
                    f"task_weights={dict(self.task_weights)} sum to 0; expected a positive total."
                )

    def weights(self) -> np.ndarray:
        """Task weights aligned with ``tasks``, normalised to sum to 1.

        Returns:
            A float64 array.
        """
        if self.task_weights is None:
            raw = np.ones(len(self.tasks))
        else:
            raw = np.array([float(self.task_weights.get(t.name, 0.0)) for t in self.tasks])
        normalised: np.ndarray = raw / raw.sum()
        return normalised


def _allocate(n: int, weights: np.ndarray) -> np.ndarray:
    """Split ``n`` into integer counts proportional to ``weights`` (largest remainder)."""
    exact = n * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    remainder = exact - counts
    order = np.argsort(-remainder, kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    allocated: np.ndarray = counts
    return allocated


def generate_task_mix(config: TaskMixConfig) -> pl.DataFrame:
    """Generate the paper's five-task workload as a canonical trace with ``task``.

    Arrivals are a Poisson process at ``config.rate_per_s`` (first request at 0);
    ``request_id`` is 0, 1, ... in arrival order. Task counts are allocated
    exactly by the largest-remainder method (uniform weights and 2,000 requests
    give 400 per task). The orderings (classes from ``heavy_prompt_tokens`` and
    ``heavy_decode_tokens``):

    * ``"all-random"``: every class. Task counts follow ``task_weights``; lengths
      are drawn from each task's fitted distributions; the requests are shuffled.
    * ``"lh-hl-random"``: only LH and HL requests, ``n // 2`` LH and
      ``n - n // 2`` HL, randomly interleaved. The tasks of a class's requests
      are allocated by ``weight * P(task produces the class)``, and each
      request's lengths are drawn from its task's distributions conditioned on
      the class.
    * ``"lh-then-hl"``: the same requests, all LH (shuffled among themselves)
      then all HL (shuffled).
    * ``"hl-then-lh"``: the same requests, all HL then all LH.

    The seed is split into three streams (request contents, order, arrivals), so
    for one seed the three LH/HL orderings hold exactly the same requests and
    every ordering has the same arrival times.

    Args:
        config: the workload configuration.

    Returns:
        A validated trace with columns ``request_id``, ``arrival_s``,
        ``prompt_tokens``, ``output_tokens``, ``task`` (Categorical).

    Raises:
        ValueError: if an LH/HL ordering is asked for but no task with positive
            weight can produce LH (or HL) requests under the thresholds.

    Example:
        >>> t = generate_task_mix(TaskMixConfig(n_requests=6, ordering="lh-then-hl", seed=1))
        >>> request_class(t).to_list()
        ['LH', 'LH', 'LH', 'HL', 'HL', 'HL']
    """
    fit = fit_task_lengths(config.tasks, prompt_cv=config.prompt_cv)
    weights = config.weights()
    content_seq, order_seq, arrival_seq = np.random.SeedSequence(config.seed).spawn(3)
    content_rng = np.random.default_rng(content_seq)
    order_rng = np.random.default_rng(order_seq)
    n = config.n_requests
    if config.ordering == "all-random":
        counts = _allocate(n, weights)
        prompts, outputs, tasks = _draw(fit, counts, content_rng, None, config)
        order = order_rng.permutation(n)
    else:
        blocks = {}
        for cls, n_class in (("LH", n // 2), ("HL", n - n // 2)):
            probs = (
                fit.class_probabilities(
                    heavy_prompt_tokens=config.heavy_prompt_tokens,
                    heavy_decode_tokens=config.heavy_decode_tokens,
                )
                .get_column(cls)
                .to_numpy()
            )
            class_weights = weights * probs
            if n_class and not class_weights.sum() > 1e-12:
                per_task = dict(
                    zip([t.name for t in config.tasks], probs.round(6).tolist(), strict=True)
                )
                raise ValueError(
                    f"ordering={config.ordering!r} needs {cls} requests, but no task with "
                    f"positive weight produces them with heavy_prompt_tokens="
                    f"{config.heavy_prompt_tokens} and heavy_decode_tokens="
                    f"{config.heavy_decode_tokens} (class probabilities per task: "
                    f"{per_task}"
                    "). Fix: change the thresholds or the task weights."
                )
            counts = (
                _allocate(n_class, class_weights) if n_class else np.zeros(len(weights), np.int64)
            )
            blocks[cls] = _draw(fit, counts, content_rng, cls, config)
        n_lh = n // 2
        prompts, outputs, tasks = (
            np.concatenate([blocks["LH"][i], blocks["HL"][i]]) for i in range(3)
        )
        lh_order = order_rng.permutation(n_lh)
        hl_order = n_lh + order_rng.permutation(n - n_lh)
        order = {
            "lh-hl-random": order_rng.permutation(n),
            "lh-then-hl": np.concatenate([lh_order, hl_order]),
            "hl-then-lh": np.concatenate([hl_order, lh_order]),
        }[config.ordering]
    arrivals = renewal_arrivals(
        n, rate_per_s=config.rate_per_s, cv=1.0, rng=np.random.default_rng(arrival_seq)
    )
    names = np.array([t.name for t in config.tasks])
    frame = pl.DataFrame(
        {
            "request_id": np.arange(n, dtype=np.uint64),
            "arrival_s": arrivals,
            "prompt_tokens": prompts[order],
            "output_tokens": outputs[order],
            "task": pl.Series(names[tasks[order]], dtype=pl.String).cast(pl.Categorical),
        }
    )
    return validate_trace(frame)


def generate_task_mix_episodes(config: TaskMixConfig, n_episodes: int) -> list[pl.DataFrame]:
    """Independent task-mix episodes: ``config`` drawn with seeds ``seed, seed + 1, ...``.

    Each episode is its own :func:`generate_task_mix` trace (arrivals from 0), so
    episodes are independent draws of the same workload. Experiments give training,
    validation and evaluation episodes disjoint seed ranges (e.g. ``10_000 + k`` and
    ``20_000 + k``) so that no evaluation episode is ever trained on.

    Args:
        config: the workload of every episode; its ``seed`` is the first episode's.
        n_episodes: number of episodes (>= 1).

    Returns:
        ``n_episodes`` validated traces; episode ``k`` uses seed ``config.seed + k``.

    Raises:
        ValueError: if ``n_episodes`` is not an integer >= 1.

    Example:
        >>> from routeplay.datasets import TaskMixConfig, generate_task_mix_episodes
        >>> eps = generate_task_mix_episodes(TaskMixConfig(n_requests=5, seed=1000), 3)
        >>> [e.height for e in eps]
        [5, 5, 5]
        >>> eps[1].equals(generate_task_mix(TaskMixConfig(n_requests=5, seed=1001)))
        True
    """
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"n_episodes={n_episodes!r} is invalid; expected an integer >= 1.")
    return [generate_task_mix(replace(config, seed=config.seed + k)) for k in range(n_episodes)]


def _draw(
    fit: TaskMixFit,
    counts: np.ndarray,
    rng: np.random.Generator,
    cls: str | None,
    config: TaskMixConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lengths and task indices of ``counts[k]`` requests per task, optionally of one class."""
    prompts, outputs, tasks = [], [], []
    for k, (task_fit, count) in enumerate(zip(fit.tasks, counts, strict=True)):
        count = int(count)
        p_min, p_max = _class_bounds(cls[0] if cls else None, config.heavy_prompt_tokens)
        o_min, o_max = _class_bounds(cls[1] if cls else None, config.heavy_decode_tokens)
        prompts.append(task_fit.prompt.sample(rng, count, min_tokens=p_min, max_tokens=p_max))
        outputs.append(task_fit.output.sample(rng, count, min_tokens=o_min, max_tokens=o_max))
        tasks.append(np.full(count, k, dtype=np.int64))
    return np.concatenate(prompts), np.concatenate(outputs), np.concatenate(tasks)


def _class_bounds(letter: str | None, threshold: int) -> tuple[int, int | None]:
    """``(min_tokens, max_tokens)`` of a heavy (``"H"``), light (``"L"``) or any length."""
    if letter == "H":
        return threshold, None
    if letter == "L":
        return 1, threshold - 1
    return 1, None


def request_class(
    trace: pl.DataFrame,
    *,
    heavy_prompt_tokens: int | Literal["median"] = PAPER_HEAVY_PROMPT_TOKENS,
    heavy_decode_tokens: int = PAPER_HEAVY_DECODE_TOKENS,
) -> pl.Series:
    """Classify requests as LL, LH, HL or HH (prompt letter first).

    A prompt is heavy when ``prompt_tokens >= heavy_prompt_tokens`` and an
    output when ``output_tokens >= heavy_decode_tokens``. The defaults are the
    paper's thresholds as read in the module docstring (40 and 143 tokens).
    ``heavy_prompt_tokens="median"`` makes a prompt heavy when it is longer than
    the trace's median prompt (so at most half the prompts are heavy).

    Args:
        trace: a frame with ``prompt_tokens`` and ``output_tokens``.
        heavy_prompt_tokens: prompt threshold in tokens, or ``"median"``.
        heavy_decode_tokens: output threshold in tokens.

    Returns:
        A Series ``request_class`` of dtype ``Enum(["LL", "LH", "HL", "HH"])``.

    Raises:
        ValueError: on a missing column or an invalid threshold.

    Example:
        >>> import polars as pl
        >>> t = pl.DataFrame({"prompt_tokens": [10, 10, 500, 500],
        ...                   "output_tokens": [5, 400, 5, 400]})
        >>> request_class(t).to_list()
        ['LL', 'LH', 'HL', 'HH']
        >>> request_class(t, heavy_prompt_tokens="median").to_list()
        ['LL', 'LH', 'HL', 'HH']
    """
    missing = [c for c in ("prompt_tokens", "output_tokens") if c not in trace.columns]
    if missing:
        raise ValueError(
            f"request_class: missing column(s) {missing}; expected 'prompt_tokens' and "
            f"'output_tokens', got {trace.columns}."
        )
    if heavy_prompt_tokens == "median":
        median = trace.get_column("prompt_tokens").median()
        if median is None:
            raise ValueError("request_class: the trace is empty, so it has no median prompt.")
        prompt_threshold = math.floor(float(median)) + 1  # type: ignore[arg-type]
    elif (
        isinstance(heavy_prompt_tokens, int)
        and not isinstance(heavy_prompt_tokens, bool)
        and heavy_prompt_tokens >= 1
    ):
        prompt_threshold = heavy_prompt_tokens
    else:
        raise ValueError(
            f"heavy_prompt_tokens={heavy_prompt_tokens!r} is invalid; expected an integer "
            f">= 1 or 'median' (paper default {PAPER_HEAVY_PROMPT_TOKENS})."
        )
    if (
        isinstance(heavy_decode_tokens, bool)
        or not isinstance(heavy_decode_tokens, int)
        or heavy_decode_tokens < 1
    ):
        raise ValueError(
            f"heavy_decode_tokens={heavy_decode_tokens!r} is invalid; expected an integer >= 1 "
            f"(paper default {PAPER_HEAVY_DECODE_TOKENS})."
        )
    prompt_letter = pl.when(pl.col("prompt_tokens") >= prompt_threshold).then(pl.lit("H"))
    output_letter = pl.when(pl.col("output_tokens") >= heavy_decode_tokens).then(pl.lit("H"))
    label = pl.concat_str(
        prompt_letter.otherwise(pl.lit("L")), output_letter.otherwise(pl.lit("L"))
    )
    return trace.select(label.cast(_CLASS_DTYPE).alias("request_class")).to_series()
