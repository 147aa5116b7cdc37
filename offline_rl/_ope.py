"""Off-policy evaluation on held-out logs: d3rlpy DiscreteFQE beside behaviour returns.

:func:`evaluate_off_policy` fits Fitted Q Evaluation (``d3rlpy.ope.DiscreteFQE``) of a
trained policy on held-out transition logs and reports

* ``fqe_value``: the mean over held-out episodes of ``Q_FQE(s_0, pi(s_0))``, the
  estimated discounted return of the policy from each episode's first decision;
* the behaviour policies' *empirical* discounted returns from the same first
  decisions (``sum_t gamma^t r_t`` per episode, averaged per behaviour policy);
* caveats that bound how far the estimate can be trusted:

  - ``support``: share of held-out transitions where the policy's greedy action had
    non-zero probability under the behaviour policy. A behaviour logged with
    epsilon-random exploration (``<router>+eps<e>``, RL_CONTRACT) gives every action
    probability ``eps/(m+1) > 0``; a deterministic behaviour only its logged action.
  - ``agreement``: share of held-out transitions where the policy's greedy action
    equals the logged action (the transitions FQE's targets are most reliable on).
  - the action histograms of the logs and of the policy on the logged states;
    actions the policy takes that never appear in the logs are listed.

FQE extrapolates wherever support is thin; its value is a model estimate, not a
measurement. Ground truth comes from replay (:func:`routeplay.offline_rl.evaluate_routers`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from routeplay.replay.rl._transitions import read_transitions

from ._dataset import build_dataset, quiet_d3rlpy
from ._train import TrainResult

if TYPE_CHECKING:
    from d3rlpy.logging import LoggerAdapterFactory

__all__ = ["OPEConfig", "OPEResult", "evaluate_off_policy"]

_EPS = re.compile(r"\+eps([0-9.eE+-]+)$")


@dataclass(frozen=True, slots=True, kw_only=True)
class OPEConfig:
    """Settings of the FQE fit.

    Attributes:
        n_steps: FQE gradient steps.
        n_steps_per_epoch: steps per d3rlpy epoch (logging granularity).
        learning_rate: Adam learning rate.
        batch_size: mini-batch size.
        gamma: discount (use the policy's training gamma).
        target_update_interval: steps between target-network syncs.
        hidden_units: hidden layer sizes of FQE's Q network.
        seed: ``d3rlpy.seed`` of the fit.
        device: torch device.

    Example:
        >>> OPEConfig(n_steps=10).gamma
        0.99
        >>> OPEConfig(gamma=1.5)
        Traceback (most recent call last):
        ...
        ValueError: OPEConfig.gamma = 1.5; expected a discount in [0, 1].
    """

    n_steps: int = 2000
    n_steps_per_epoch: int = 1000
    learning_rate: float = 1e-4
    batch_size: int = 256
    gamma: float = 0.99
    target_update_interval: int = 100
    hidden_units: tuple[int, ...] = (128, 128)
    seed: int = 0
    device: str = "cpu:0"

    def __post_init__(self) -> None:
        for name in ("n_steps", "n_steps_per_epoch", "batch_size", "target_update_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"OPEConfig.{name} = {value!r}; expected an int >= 1.")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"OPEConfig.gamma = {self.gamma!r}; expected a discount in [0, 1].")
        if not self.learning_rate > 0:
            raise ValueError(f"OPEConfig.learning_rate = {self.learning_rate!r}; expected > 0.")
        if not self.hidden_units or any(int(h) < 1 for h in self.hidden_units):
            raise ValueError(
                f"OPEConfig.hidden_units = {self.hidden_units!r}; expected positive sizes."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"OPEConfig.seed = {self.seed!r}; expected an int >= 0.")


@dataclass(frozen=True, slots=True, kw_only=True)
class OPEResult:
    """An FQE estimate with the behaviour returns and support caveats (module docstring).

    Attributes:
        fqe_value: mean over held-out episodes of ``Q_FQE(s_0, pi(s_0))``.
        fqe_values: that value per episode (episode order of the held-out frame).
        behaviour_returns: per behaviour policy, the mean empirical discounted return
            from the first decision, and its episode count.
        support: share of held-out transitions where the policy's action had non-zero
            behaviour probability.
        agreement: share of held-out transitions where the policy chose the logged action.
        logged_action_counts: logged actions per index (last = WAIT).
        policy_action_counts: the policy's greedy actions on the logged states.
        unsupported_actions: action indices the policy takes that the logs never took.
        n_episodes: held-out episodes.
        n_transitions: held-out transitions.
        config: the FQE settings.
        wall_time_s: wall time of the call.
        reward_shift: the policy's training reward transform ``(r - shift) * factor``
            (:class:`~routeplay.offline_rl.RewardTransform`) was applied to the held-out
            rewards before FQE and the behaviour returns: every value above is in those
            units. ``(0.0, 1.0)`` = raw rewards.
        reward_factor: see ``reward_shift``.
    """

    fqe_value: float
    fqe_values: tuple[float, ...]
    behaviour_returns: tuple[tuple[str, float, int], ...]
    support: float
    agreement: float
    logged_action_counts: tuple[int, ...]
    policy_action_counts: tuple[int, ...]
    unsupported_actions: tuple[int, ...]
    n_episodes: int
    n_transitions: int
    config: OPEConfig
    wall_time_s: float
    reward_shift: float = 0.0
    reward_factor: float = 1.0

    def caveats(self) -> list[str]:
        """Human-readable warnings about the estimate's support."""
        out = [
            "FQE is a model-based estimate (it extrapolates where the logs are thin); "
            "confirm by replay (evaluate_routers).",
            f"support: the policy's action had non-zero behaviour probability on "
            f"{self.support:.1%} of {self.n_transitions} held-out transitions; it agreed "
            f"with the logged action on {self.agreement:.1%}.",
        ]
        if self.unsupported_actions:
            out.append(
                f"the policy takes actions {list(self.unsupported_actions)} that never occur "
                "in the held-out logs: their values are pure extrapolation."
            )
        if (self.reward_shift, self.reward_factor) != (0.0, 1.0):
            out.append(
                f"values are in transformed reward units (r - {self.reward_shift:.6g}) * "
                f"{self.reward_factor:.6g} (the policy's training transform)."
            )
        if self.n_episodes < 10:
            out.append(
                f"only {self.n_episodes} held-out episodes: the mean initial-state value is noisy."
            )
        return out

    def to_frame(self) -> pl.DataFrame:
        """One row for the policy (FQE) and one per behaviour policy (empirical)."""
        rows = [
            {
                "policy": "policy (FQE)",
                "kind": "fqe",
                "value": self.fqe_value,
                "n_episodes": self.n_episodes,
            }
        ]
        rows += [
            {"policy": name, "kind": "behaviour-empirical", "value": v, "n_episodes": n}
            for name, v, n in self.behaviour_returns
        ]
        return pl.DataFrame(
            rows,
            schema={
                "policy": pl.String,
                "kind": pl.String,
                "value": pl.Float64,
                "n_episodes": pl.Int64,
            },
        )

    def summary(self) -> str:
        """A printable summary with the caveats."""
        lines = [f"{'policy':<32} {'kind':<20} {'value':>12} {'episodes':>8}"]
        for r in self.to_frame().iter_rows(named=True):
            lines.append(
                f"{r['policy']:<32.32} {r['kind']:<20} {r['value']:>12.4g} {r['n_episodes']:>8}"
            )
        lines.append(
            "actions logged / policy: "
            f"{list(self.logged_action_counts)} / {list(self.policy_action_counts)} "
            "(last = WAIT)"
        )
        lines += [f"caveat: {c}" for c in self.caveats()]
        return "\n".join(lines)


def _behaviour_epsilon(name: str) -> float:
    match = _EPS.search(name)
    return float(match.group(1)) if match else 0.0


def _as_frame(held_out: Any) -> pl.DataFrame:
    if isinstance(held_out, pl.DataFrame):
        return held_out
    frame, _ = read_transitions(held_out)
    out: pl.DataFrame = frame
    return out


def evaluate_off_policy(
    trained: TrainResult | Any,
    held_out: pl.DataFrame | str | Path | Sequence[str | Path],
    *,
    config: OPEConfig | None = None,
    logger_adapter: LoggerAdapterFactory | None = None,
    show_progress: bool = False,
) -> OPEResult:
    """Estimate a trained policy's value on held-out logs with DiscreteFQE.

    Args:
        trained: a :class:`TrainResult` or a trained d3rlpy Q-learning algorithm
            (``predict`` + ``impl``).
        held_out: transition Parquet file(s) or a transition frame (RL_CONTRACT),
            disjoint from the training logs.
        config: FQE settings (default :class:`OPEConfig`).
        logger_adapter: d3rlpy logger factory (default: none written,
            ``NoopAdapterFactory``).
        show_progress: d3rlpy's progress bar.

    Returns:
        An :class:`OPEResult`.

    Raises:
        ValueError: the held-out logs' observation width or action count differs from
            the policy's.
    """
    import d3rlpy
    import torch
    from d3rlpy.logging import NoopAdapterFactory

    cfg = config if config is not None else OPEConfig()
    t0 = time.perf_counter()
    algo = trained.algo if isinstance(trained, TrainResult) else trained
    frame = _as_frame(held_out).sort("episode", "step", maintain_order=True)
    transform = trained.reward_transform if isinstance(trained, TrainResult) else None
    shift, factor = 0.0, 1.0
    if transform is not None and transform.normalization != "none":
        # FQE must see the rewards the policy was trained on (training statistics, not
        # the held-out logs': the held-out data stays a pure evaluation set)
        shift, factor = transform.shift, transform.factor
        frame = frame.with_columns(
            pl.Series("reward", transform.apply(frame["reward"].to_numpy()), dtype=pl.Float64)
        )
    impl = algo.impl
    obs_size = int(impl.observation_shape[0])
    n_actions = int(impl.action_size)
    width = int(frame.schema["obs"].shape[0])  # type: ignore[attr-defined]
    if width != obs_size:
        raise ValueError(
            f"held-out observations have width {width} but the policy expects {obs_size}; "
            "expected logs of the same observation layout. Fix: log the held-out episodes "
            "with the cluster and predictor the policy was trained with."
        )
    dataset = build_dataset(frame, n_actions=n_actions)
    obs = frame["obs"].to_numpy().astype(np.float32, copy=False)
    actions = frame["action"].to_numpy().astype(np.int64)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with quiet_d3rlpy():
            d3rlpy.seed(cfg.seed)
            from d3rlpy.models.encoders import VectorEncoderFactory

            fqe_cfg = d3rlpy.ope.FQEConfig(
                batch_size=cfg.batch_size,
                gamma=cfg.gamma,
                learning_rate=cfg.learning_rate,
                target_update_interval=cfg.target_update_interval,
                encoder_factory=VectorEncoderFactory(hidden_units=list(cfg.hidden_units)),
            )
            fqe = d3rlpy.ope.DiscreteFQE(algo=algo, config=fqe_cfg, device=cfg.device)
            fqe.fit(
                dataset.mdp,
                n_steps=cfg.n_steps,
                n_steps_per_epoch=min(cfg.n_steps_per_epoch, cfg.n_steps),
                logger_adapter=logger_adapter
                if logger_adapter is not None
                else NoopAdapterFactory(),
                show_progress=show_progress,
                with_timestamp=False,
                experiment_name="fqe",
            )
            policy_actions = np.asarray(algo.predict(obs), dtype=np.int64)
            first = frame.with_row_index("row").group_by("episode", maintain_order=True).first()
            rows0 = first["row"].to_numpy().astype(np.int64)
            values = np.asarray(
                fqe.predict_value(obs[rows0], policy_actions[rows0]), dtype=np.float64
            )
    finally:
        torch.set_num_threads(previous)
    # behaviour empirical discounted returns from each episode's first decision
    returns = (
        frame.with_columns(
            (
                pl.col("reward") * pl.lit(cfg.gamma).pow(pl.int_range(pl.len()).over("episode"))
            ).alias("disc")
        )
        .group_by("episode", maintain_order=True)
        .agg(pl.col("disc").sum(), pl.col("behaviour").first())
        .group_by("behaviour")
        .agg(pl.col("disc").mean().alias("value"), pl.len().alias("n"))
        .sort("behaviour")
    )
    eps = np.array([_behaviour_epsilon(b) for b in frame["behaviour"].to_list()])
    agree = policy_actions == actions
    supported = agree | (eps > 0.0)
    logged_counts = np.bincount(actions, minlength=n_actions)
    policy_counts = np.bincount(policy_actions, minlength=n_actions)
    unsupported = tuple(
        int(a) for a in range(n_actions) if policy_counts[a] > 0 and logged_counts[a] == 0
    )
    return OPEResult(
        fqe_value=float(values.mean()),
        fqe_values=tuple(float(v) for v in values),
        behaviour_returns=tuple((str(b), float(v), int(n)) for b, v, n in returns.iter_rows()),
        support=float(supported.mean()),
        agreement=float(agree.mean()),
        logged_action_counts=tuple(int(c) for c in logged_counts),
        policy_action_counts=tuple(int(c) for c in policy_counts),
        unsupported_actions=unsupported,
        n_episodes=int(rows0.size),
        n_transitions=int(frame.height),
        config=cfg,
        wall_time_s=time.perf_counter() - t0,
        reward_shift=shift,
        reward_factor=factor,
    )
