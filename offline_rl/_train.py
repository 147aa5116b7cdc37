"""Offline training of routers with d3rlpy: one frozen config, checkpoints, exact resume.

:func:`train_router` trains DiscreteCQL, DiscreteBCQ (the paper's two), DiscreteBC or
DoubleDQN on a :class:`~routeplay.offline_rl.RoutingDataset`.

How it differs from ``algo.fit`` (and why):

* Every d3rlpy config field is set explicitly from :class:`TrainConfig` (d3rlpy's
  defaults are Atari's: batch 32, lr 6.25e-5, target update every 8000 steps).
* Mini-batches are drawn by indexing the dataset's flat numpy arrays with a
  generator seeded from ``(seed, step)`` — no global ``np.random`` (d3rlpy's own sampler
  draws from it one transition at a time, ~40x slower). Because each step's batch
  depends only on the seed and the step, a run resumed from a checkpoint draws exactly
  the batches the uninterrupted run would have, and (same torch thread count, CPU)
  ends with bit-identical weights.
* Checkpoints (``model.pt``: the networks' and optimizers' state dicts, saved with
  ``torch.save``; ``state.json``: the step counter, the loss history, the run's
  fingerprint) are written atomically into ``run_dir/checkpoint/`` every
  ``checkpoint_every_steps`` steps and at the end. Resuming reads ``model.pt`` with
  ``torch.load(weights_only=True)``: a checkpoint is never unpickled, so a planted
  file cannot run code.
* A run resumes only the run it was: the checkpoint's fingerprint (sha256 of the
  config and of the training data's arrays) must equal the new call's, otherwise
  :func:`train_router` refuses before writing anything.
* Timeout episodes keep their last transition (bootstrapped from the logged
  ``next_obs``), which d3rlpy's ``MDPDataset`` would drop.
* ``d3rlpy.seed(config.seed)`` is called inside the call (it seeds ``random``,
  ``numpy.random`` and torch globally — d3rlpy offers no other way); torch runs with one
  thread during training and the previous thread count is restored afterwards.
"""

# Why this module is long: the training config, its validation, the d3rlpy algorithm
# builders, fingerprinted run folders and the training loop with its learning curve
# belong to one entry point.

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from ._dataset import RoutingDataset, quiet_d3rlpy
from ._files import (
    load_state_dicts,
    one_line,
    save_state_dicts,
    sha256_arrays,
    sha256_json,
    write_json_atomic,
)

if TYPE_CHECKING:
    from d3rlpy.base import LearnableBase, LearnableConfig
    from d3rlpy.logging import LoggerAdapterFactory
    from routeplay.replay import StepOutcome
    from routeplay.replay.rl._rewards import RewardFunction

__all__ = [
    "ALGORITHMS",
    "RewardTransform",
    "TrainConfig",
    "TrainResult",
    "TransformedReward",
    "dataset_sha256",
    "run_fingerprint",
    "train_router",
]

Algorithm = Literal["cql", "bcq", "bc", "double-dqn"]
RewardNormalization = Literal["none", "scale", "standardize"]
_NORMALIZATIONS = ("none", "scale", "standardize")

#: Algorithm key -> d3rlpy class name (``d3rlpy.algos.<name>Config``).
ALGORITHMS: dict[str, str] = {
    "cql": "DiscreteCQL",
    "bcq": "DiscreteBCQ",
    "bc": "DiscreteBC",
    "double-dqn": "DoubleDQN",
}

_CHECKPOINT = "checkpoint"
_MODEL = "model.pt"
_STATE = "state.json"
#: Bumped when the checkpoint's meaning changes (part of the fingerprint).
_CHECKPOINT_FORMAT = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    """Everything that determines a training run (``show_progress`` etc. are arguments).

    Attributes:
        algorithm: "cql" (DiscreteCQL), "bcq" (DiscreteBCQ), "bc" (DiscreteBC) or
            "double-dqn" (DoubleDQN).
        hidden_units: MLP encoder layer widths (ReLU, no batch/layer norm, no dropout).
        learning_rate: Adam learning rate (betas 0.9/0.999, eps 1e-8, no weight decay).
        gamma: discount factor.
        batch_size: transitions per gradient step.
        n_steps: total gradient steps (the default is the pipeline's, also of
            ``routeplay train`` and a job's ``[training]``: 5,000).
        n_steps_per_epoch: losses are averaged and logged every this many steps.
        checkpoint_every_steps: a checkpoint is written every this many steps (and at
            the end).
        target_update_interval: steps between target-network copies (Q-learning
            algorithms; unused by "bc").
        n_critics: Q-function ensemble size (Q-learning algorithms).
        cql_alpha: weight of CQL's conservative (logsumexp) penalty.
        bcq_action_flexibility: BCQ threshold: actions whose imitation probability
            relative to the most likely one is below it are excluded.
        bcq_beta: BCQ's imitator logit regularisation.
        bc_beta: BC's logit regularisation.
        reward_normalization: how logged rewards are transformed before training
            (``r' = (r - shift) * factor``, see :class:`RewardTransform`): "none"
            (raw), "scale" (``r * reward_scale``) or "standardize"
            (``(r - mean) / std * reward_scale`` with mean and std of the TRAINING
            dataset's rewards). The transform is recorded in ``config.json``.
        reward_scale: multiplier of "scale" and "standardize" (must be 1.0 with "none").
        seed: passed to ``d3rlpy.seed`` and to the mini-batch sampler.
        device: torch device, e.g. "cpu:0".

    Example:
        >>> TrainConfig(algorithm="bcq", n_steps=100).batch_size
        256
        >>> TrainConfig(algorithm="sac")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: TrainConfig.algorithm = 'sac'; expected one of ['cql', 'bcq', ...].
    """

    algorithm: Algorithm = "cql"
    hidden_units: tuple[int, ...] = (128, 128)
    learning_rate: float = 3e-4
    gamma: float = 0.99
    batch_size: int = 256
    n_steps: int = 5_000
    n_steps_per_epoch: int = 1_000
    checkpoint_every_steps: int = 1_000
    target_update_interval: int = 1_000
    n_critics: int = 1
    cql_alpha: float = 1.0
    bcq_action_flexibility: float = 0.3
    bcq_beta: float = 0.5
    bc_beta: float = 0.5
    reward_normalization: RewardNormalization = "none"
    reward_scale: float = 1.0
    seed: int = 0
    device: str = "cpu:0"

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"TrainConfig.algorithm = {self.algorithm!r}; expected one of {list(ALGORITHMS)}."
            )
        if not self.hidden_units or any(
            isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden_units
        ):
            raise ValueError(
                f"TrainConfig.hidden_units = {self.hidden_units!r}; expected a non-empty tuple "
                "of positive ints, e.g. (128, 128)."
            )
        for name in (
            "batch_size",
            "n_steps",
            "n_steps_per_epoch",
            "checkpoint_every_steps",
            "target_update_interval",
            "n_critics",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} = {value!r}; expected a positive int.")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate = {self.learning_rate!r}; expected > 0.")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"TrainConfig.gamma = {self.gamma!r}; expected 0 <= gamma <= 1.")
        for name in ("cql_alpha", "bcq_beta", "bc_beta"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} = {getattr(self, name)!r}; expected >= 0.")
        if not 0.0 <= self.bcq_action_flexibility <= 1.0:
            raise ValueError(
                f"TrainConfig.bcq_action_flexibility = {self.bcq_action_flexibility!r}; "
                "expected a threshold in [0, 1]."
            )
        if self.reward_normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"TrainConfig.reward_normalization = {self.reward_normalization!r}; expected "
                f"one of {list(_NORMALIZATIONS)}."
            )
        if not (math.isfinite(self.reward_scale) and self.reward_scale > 0):
            raise ValueError(
                f"TrainConfig.reward_scale = {self.reward_scale!r}; expected a finite float > 0."
            )
        if self.reward_normalization == "none" and self.reward_scale != 1.0:
            raise ValueError(
                f"TrainConfig.reward_scale = {self.reward_scale!r} with reward_normalization="
                "'none'; expected 1.0. Fix: set reward_normalization='scale' to scale rewards."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"TrainConfig.seed = {self.seed!r}; expected an int >= 0.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["hidden_units"] = list(self.hidden_units)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["hidden_units"] = tuple(data["hidden_units"])
        return cls(**data)


@dataclass(frozen=True, slots=True, kw_only=True)
class RewardTransform:
    """The affine reward transform a run trained with: ``r' = (r - shift) * factor``.

    Attributes:
        normalization: the config's ``reward_normalization``.
        shift: subtracted from every raw reward (the training mean for "standardize").
        factor: multiplier after the shift.
        raw_mean: mean of the training dataset's raw rewards.
        raw_std: standard deviation (ddof 0) of the training dataset's raw rewards.

    Example:
        >>> import numpy as np
        >>> cfg = TrainConfig(reward_normalization="standardize", reward_scale=2.0)
        >>> t = RewardTransform.fit(cfg, np.array([1.0, 3.0]))
        >>> (t.shift, t.factor), t.apply(np.array([1.0, 3.0])).tolist()
        ((2.0, 2.0), [-2.0, 2.0])
    """

    normalization: RewardNormalization
    shift: float
    factor: float
    raw_mean: float
    raw_std: float

    @classmethod
    def fit(cls, config: TrainConfig, rewards: np.ndarray) -> RewardTransform:
        """The transform of ``config`` with statistics of the training ``rewards``.

        Raises:
            ValueError: "standardize" on rewards with zero standard deviation.
        """
        raw = np.asarray(rewards, dtype=np.float64)
        mean = float(raw.mean()) if raw.size else 0.0
        std = float(raw.std()) if raw.size else 0.0
        shift, factor = 0.0, 1.0
        if config.reward_normalization == "scale":
            factor = config.reward_scale
        elif config.reward_normalization == "standardize":
            if not std > 0.0:
                raise ValueError(
                    f"reward_normalization='standardize' but the training rewards have std "
                    f"{std!r} (all equal to {mean!r}); expected std > 0. Fix: use "
                    "reward_normalization='scale' or 'none'."
                )
            shift, factor = mean, config.reward_scale / std
        return cls(
            normalization=config.reward_normalization,
            shift=shift,
            factor=factor,
            raw_mean=mean,
            raw_std=std,
        )

    def apply(self, rewards: np.ndarray) -> np.ndarray:
        """``(rewards - shift) * factor`` as float32 (unchanged values for "none")."""
        raw = np.asarray(rewards)
        if self.normalization == "none":
            return raw.astype(np.float32, copy=False)
        return ((raw.astype(np.float64) - self.shift) * self.factor).astype(np.float32)

    def wrap(self, reward: str | RewardFunction) -> TransformedReward:
        """A reward function in this run's units: ``(reward(outcome) - shift) * factor``.

        Online fine-tuning of an offline policy trained on normalised rewards must see
        rewards in the same units, or its Q-values are off by the transform; this gives
        the online environment that reward (any variant, not only the logged one).

        Args:
            reward: a reward name (``routeplay.replay.REWARD_VARIANTS``) or function.

        Example:
            >>> from routeplay.offline_rl import RewardTransform
            >>> t = RewardTransform(normalization="standardize", shift=2.0, factor=0.5,
            ...                     raw_mean=2.0, raw_std=2.0)
            >>> t.wrap("paper-workload-guided").name
            'paper-workload-guided'
        """
        from routeplay.replay import make_reward

        base = make_reward(reward) if isinstance(reward, str) else reward
        return TransformedReward(base=base, shift=self.shift, factor=self.factor)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransformedReward:
    """``(base(outcome) - shift) * factor``: a reward in a trained run's units.

    Built by :meth:`RewardTransform.wrap`; its ``name`` is the base reward's.

    Attributes:
        base: the reward function.
        shift: subtracted from every reward.
        factor: multiplier after the shift.
    """

    base: RewardFunction
    shift: float
    factor: float

    @property
    def name(self) -> str:
        """The base reward's name."""
        return str(self.base.name)

    def __call__(self, outcome: StepOutcome) -> float:
        """The transformed reward of one decision."""
        return float((self.base(outcome) - self.shift) * self.factor)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainResult:
    """A finished (or resumed-and-finished) training run.

    Attributes:
        algo: the trained d3rlpy learnable (``predict``, ``save``, ``save_policy``).
        config: the config it was trained with.
        seed: the seed given to ``d3rlpy.seed`` (``config.seed``).
        n_steps_done: gradient steps the model has received in total.
        n_steps_resumed_from: step of the checkpoint the run resumed from (0 = fresh).
        run_dir: folder holding ``config.json``, ``checkpoint/`` and d3rlpy's logs.
        losses: one row per epoch: ``epoch``, ``step`` and the mean of each loss d3rlpy
            reports (e.g. ``loss``, ``td_loss``, ``conservative_loss``).
        wall_time_s: wall time of this call (not of earlier interrupted calls).
        reward_transform: the reward transform applied to every training batch
            (identity for ``reward_normalization="none"``).
    """

    algo: LearnableBase[Any, Any]
    config: TrainConfig
    seed: int
    n_steps_done: int
    n_steps_resumed_from: int
    run_dir: Path
    losses: pl.DataFrame
    wall_time_s: float
    reward_transform: RewardTransform | None = None

    def to_frame(self) -> pl.DataFrame:
        """The per-epoch loss table (same as ``losses``)."""
        return self.losses


def _encoder(config: TrainConfig) -> Any:
    from d3rlpy.models.encoders import VectorEncoderFactory

    return VectorEncoderFactory(
        hidden_units=list(config.hidden_units),
        activation="relu",
        use_batch_norm=False,
        use_layer_norm=False,
        dropout_rate=None,
        exclude_last_activation=False,
        last_activation=None,
    )


def _optim() -> Any:
    from d3rlpy.optimizers import AdamFactory

    return AdamFactory(
        clip_grad_norm=None,
        lr_scheduler_factory=None,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        amsgrad=False,
    )


def _common(config: TrainConfig) -> dict[str, Any]:
    return {
        "batch_size": config.batch_size,
        "gamma": config.gamma,
        "observation_scaler": None,  # observations are already in [0, 1]
        "action_scaler": None,
        "reward_scaler": None,
        "compile_graph": False,
        "learning_rate": config.learning_rate,
        "optim_factory": _optim(),
        "encoder_factory": _encoder(config),
    }


def _q_common(config: TrainConfig) -> dict[str, Any]:
    from d3rlpy.models import MeanQFunctionFactory

    return {
        **_common(config),
        "q_func_factory": MeanQFunctionFactory(share_encoder=False),
        "n_critics": config.n_critics,
        "target_update_interval": config.target_update_interval,
    }


def _cql(config: TrainConfig) -> LearnableConfig:
    from d3rlpy.algos import DiscreteCQLConfig

    return DiscreteCQLConfig(**_q_common(config), alpha=config.cql_alpha)


def _bcq(config: TrainConfig) -> LearnableConfig:
    from d3rlpy.algos import DiscreteBCQConfig

    return DiscreteBCQConfig(
        **_q_common(config),
        action_flexibility=config.bcq_action_flexibility,
        beta=config.bcq_beta,
        share_encoder=True,
    )


def _bc(config: TrainConfig) -> LearnableConfig:
    from d3rlpy.algos import DiscreteBCConfig

    return DiscreteBCConfig(**_common(config), beta=config.bc_beta)


def _double_dqn(config: TrainConfig) -> LearnableConfig:
    from d3rlpy.algos import DoubleDQNConfig

    return DoubleDQNConfig(**_q_common(config))


_BUILDERS: dict[str, Callable[[TrainConfig], LearnableConfig]] = {
    "cql": _cql,
    "bcq": _bcq,
    "bc": _bc,
    "double-dqn": _double_dqn,
}


def make_learnable(config: TrainConfig, *, obs_size: int, n_actions: int) -> Any:
    """Build the (untrained) d3rlpy learnable for ``config`` with its networks created.

    Args:
        config: the training config.
        obs_size: observation width.
        n_actions: action-space size (instances + WAIT).

    Returns:
        A d3rlpy ``QLearningAlgoBase`` with ``impl`` built on ``config.device``.
    """
    builder = _BUILDERS.get(config.algorithm)
    if builder is None:  # pragma: no cover - TrainConfig validates the key
        raise ValueError(
            f"unknown algorithm {config.algorithm!r}; expected one of {list(_BUILDERS)}."
        )
    with quiet_d3rlpy():
        algo = builder(config).create(device=config.device)
        algo.create_impl((obs_size,), n_actions)
    return algo


class _Sampler:
    """Mini-batches by direct indexing; step ``k``'s batch depends only on (seed, k)."""

    def __init__(
        self,
        dataset: RoutingDataset,
        seed: int,
        batch_size: int,
        transform: RewardTransform | None = None,
    ) -> None:
        n = dataset.observations.shape[0]
        self._n = n
        self._seed = seed
        self._batch_size = batch_size
        self._obs = dataset.observations
        self._next_obs = dataset.next_observations
        self._actions = dataset.actions.astype(np.float32).reshape(-1, 1)
        rewards = dataset.rewards if transform is None else transform.apply(dataset.rewards)
        self._rewards = rewards.reshape(-1, 1)
        self._terminals = dataset.terminals.reshape(-1, 1)
        # next action within the episode (0 at episode ends; unused by these algorithms)
        next_actions = np.zeros(n, dtype=np.float32)
        next_actions[:-1] = dataset.actions[1:]
        ends = np.concatenate([dataset.episode_starts[1:] - 1, [n - 1]])
        next_actions[ends] = 0.0
        self._next_actions = next_actions.reshape(-1, 1)
        self._intervals = np.ones((batch_size, 1), dtype=np.float32)

    def batch(self, step: int) -> Any:
        from d3rlpy.dataset import TransitionMiniBatch

        rng = np.random.default_rng(np.random.SeedSequence([self._seed, step]))
        idx = rng.integers(0, self._n, size=self._batch_size)
        return TransitionMiniBatch(
            observations=self._obs[idx],
            actions=self._actions[idx],
            rewards=self._rewards[idx],
            next_observations=self._next_obs[idx],
            next_actions=self._next_actions[idx],
            terminals=self._terminals[idx],
            intervals=self._intervals,
            transitions=[],
        )


def _versions() -> dict[str, str]:
    import d3rlpy
    import torch

    import routeplay

    return {
        "routeplay": routeplay.__version__,
        "d3rlpy": d3rlpy.__version__,
        "torch": torch.__version__,
    }


def _checkpoint_modules(algo: Any) -> dict[str, Any]:
    """The learnable's networks and optimizers by name (what d3rlpy's save_model saves)."""
    return dict(algo.impl.modules.create_checkpointer(algo.impl.device).modules)


def _save_checkpoint(algo: Any, run_dir: Path, state: dict[str, Any]) -> None:
    ckpt = run_dir / _CHECKPOINT
    ckpt.mkdir(parents=True, exist_ok=True)
    states = {name: module.state_dict() for name, module in _checkpoint_modules(algo).items()}
    save_state_dicts(ckpt / _MODEL, states)
    # state.json last: it names the step the model file belongs to
    write_json_atomic(ckpt / _STATE, state)


def _load_checkpoint(algo: Any, run_dir: Path) -> None:
    """Load ``run_dir/checkpoint/model.pt`` into ``algo`` without unpickling objects."""
    path = run_dir / _CHECKPOINT / _MODEL
    fix = (
        f"Fix: delete {str(run_dir / _CHECKPOINT)!r} or start over with resume=False "
        "(routeplay train --overwrite)."
    )
    states = load_state_dicts(path, fix=fix)
    modules = _checkpoint_modules(algo)
    if sorted(states) != sorted(modules):
        raise ValueError(
            f"checkpoint {str(path)!r} holds modules {sorted(states)}; expected "
            f"{sorted(modules)} for this algorithm. {fix}"
        )
    try:
        for name, module in modules.items():
            module.load_state_dict(states[name])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise ValueError(
            f"checkpoint {str(path)!r} does not fit this run's networks: {one_line(exc, 160)} {fix}"
        ) from None


def dataset_sha256(dataset: RoutingDataset) -> str:
    """Hex sha256 of the transitions a run trains on (every array the sampler reads).

    Two datasets with the same shape but other rewards (e.g. logs rewritten with
    another reward) have different hashes.

    Example:
        >>> from routeplay.offline_rl import build_dataset
        >>> import polars as pl
        >>> def ds(r):
        ...     return build_dataset(pl.DataFrame({"episode": [0, 0], "step": [0, 1],
        ...         "obs": [[0.0], [1.0]], "action": [0, 1], "reward": r,
        ...         "next_obs": [[1.0], [0.0]], "terminal": [False, True],
        ...         "timeout": [False, False], "behaviour": ["x", "x"]},
        ...         schema_overrides={"obs": pl.Array(pl.Float32, 1),
        ...                           "next_obs": pl.Array(pl.Float32, 1)}), n_actions=2)
        >>> dataset_sha256(ds([1.0, 2.0])) == dataset_sha256(ds([1.0, 3.0]))
        False
    """
    return sha256_arrays(
        dataset.observations,
        dataset.actions,
        dataset.rewards,
        dataset.next_observations,
        dataset.terminals,
        dataset.episode_starts,
    )


def run_fingerprint(config: TrainConfig, data_sha256: str) -> str:
    """The fingerprint a checkpoint must carry to be resumed: sha256 of config and data.

    Example:
        >>> a = run_fingerprint(TrainConfig(seed=1), "00" * 32)
        >>> a == run_fingerprint(TrainConfig(seed=1), "00" * 32), a == run_fingerprint(
        ...     TrainConfig(seed=2), "00" * 32)
        (True, False)
    """
    return sha256_json(
        {"format": _CHECKPOINT_FORMAT, "config": config.to_dict(), "data_sha256": data_sha256}
    )


def _read_state(path: Path, run_path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"checkpoint state {str(path)!r} is unreadable ({one_line(exc, 120)}); expected "
            f"JSON written by train_router. Fix: delete {str(run_path / _CHECKPOINT)!r} or "
            "start over with resume=False (routeplay train --overwrite)."
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        raise ValueError(
            f"checkpoint state {str(path)!r} has no 'config' object; expected JSON written by "
            f"train_router. Fix: start over with resume=False (routeplay train --overwrite)."
        )
    return state


def _check_resumable(
    state: dict[str, Any],
    run_path: Path,
    config: TrainConfig,
    info: dict[str, Any],
    data_sha: str,
) -> None:
    """Raise unless the checkpoint ``state`` belongs to this config and this data."""
    if state.get("fingerprint") == run_fingerprint(config, data_sha):
        return
    # through from_dict: checkpoints written before a field existed get its default
    try:
        saved_cfg = TrainConfig.from_dict(state["config"]).to_dict()
    except (TypeError, ValueError, KeyError):
        saved_cfg = dict(state["config"])
    diff: dict[str, Any] = {
        k: (saved_cfg.get(k), v) for k, v in config.to_dict().items() if saved_cfg.get(k) != v
    }
    if state.get("dataset") != info:
        diff["dataset"] = (state.get("dataset"), info)
    saved_sha = state.get("data_sha256")
    if saved_sha != data_sha:
        diff["training data sha256"] = (
            None if saved_sha is None else str(saved_sha)[:12],
            data_sha[:12],
        )
    if not diff:
        diff["fingerprint"] = (state.get("fingerprint"), run_fingerprint(config, data_sha))
    raise ValueError(
        f"run_dir {str(run_path)!r} holds a checkpoint of a different run; differing "
        f"fields (checkpoint, now): {diff}; refusing to resume it (nothing was changed). "
        "Fix: use a new run_dir, or start over with resume=False (routeplay train "
        "--overwrite)."
    )


def _dataset_info(dataset: RoutingDataset) -> dict[str, Any]:
    card = dataset.card
    return {
        "layout_version": card.layout_version,
        "n_actions": card.n_actions,
        "obs_size": card.obs_size,
        "n_transitions": card.n_transitions,
        "n_episodes": card.n_episodes,
    }


def train_router(
    config: TrainConfig,
    dataset: RoutingDataset,
    *,
    run_dir: str | Path,
    show_progress: bool = False,
    resume: bool = True,
    logger_adapter: LoggerAdapterFactory | None = None,
    callback: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train a routing policy offline on ``dataset``; checkpoint and resume in ``run_dir``.

    ``run_dir/config.json`` records the config, seed, library versions, dataset
    shape and the run's fingerprint (sha256 of the config and of the training data,
    see :func:`run_fingerprint`). With ``resume=True`` and a checkpoint in ``run_dir``,
    training continues from the checkpointed step (weights, optimizer state, step
    counter, loss history) and ends at ``config.n_steps`` in total; the result is then
    bit-identical to an uninterrupted run (same torch thread count and device). The
    checkpoint is resumed only if its fingerprint equals this call's: a checkpoint of
    another config or of other data (same shape, other rewards included) is refused
    before anything in ``run_dir`` is written. ``resume=False`` starts over: the old
    checkpoint is deleted first and the new one replaces it.

    The checkpoint's ``model.pt`` is read with ``torch.load(weights_only=True)``: no
    Python object is unpickled from it, whatever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
    says.

    Args:
        config: the frozen training config.
        dataset: transitions from :func:`build_dataset`.
        run_dir: folder for ``config.json``, ``checkpoint/`` and d3rlpy's logs
            (``run_dir/d3rlpy/``); created if missing.
        show_progress: show a tqdm progress bar.
        resume: continue from the checkpoint in ``run_dir`` if there is one.
        logger_adapter: d3rlpy logger factory; default
            ``FileAdapterFactory(root_dir=run_dir)`` (tests pass ``NoopAdapterFactory()``).
        callback: called with the number of steps done after every gradient step
            (e.g. for early stopping by raising).

    Returns:
        The :class:`TrainResult`.

    Raises:
        ValueError: (one line) with ``resume=True``: ``run_dir`` holds a checkpoint of
            a different config or different training data, or a checkpoint that is not
            weights-only (e.g. a planted pickle) or does not fit the networks.

    Example:
        >>> import tempfile
        >>> from d3rlpy.logging import NoopAdapterFactory
        >>> from routeplay.offline_rl import build_dataset
        >>> import numpy as np, polars as pl
        >>> rng = np.random.default_rng(0)
        >>> obs = rng.random((20, 3), dtype=np.float32)
        >>> frame = pl.DataFrame({"episode": [0] * 20, "step": list(range(20)),
        ...     "obs": obs, "action": rng.integers(0, 3, 20), "reward": rng.random(20),
        ...     "next_obs": np.vstack([obs[1:], np.zeros((1, 3))]),
        ...     "terminal": [False] * 19 + [True], "timeout": [False] * 20,
        ...     "behaviour": ["random"] * 20},
        ...     schema_overrides={"obs": pl.Array(pl.Float32, 3),
        ...                       "next_obs": pl.Array(pl.Float32, 3)})
        >>> ds = build_dataset(frame, n_actions=3)
        >>> cfg = TrainConfig(algorithm="bc", n_steps=4, n_steps_per_epoch=2,
        ...                   checkpoint_every_steps=2, batch_size=8)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     res = train_router(cfg, ds, run_dir=d, logger_adapter=NoopAdapterFactory())
        >>> res.n_steps_done, res.losses["epoch"].to_list()
        (4, [1, 2])
    """
    import d3rlpy
    import torch
    from d3rlpy.logging import D3RLPyLogger, FileAdapterFactory
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    run_path = Path(run_dir)
    run_path.mkdir(parents=True, exist_ok=True)
    info = _dataset_info(dataset)
    data_sha = dataset_sha256(dataset)
    fingerprint = run_fingerprint(config, data_sha)
    state_path = run_path / _CHECKPOINT / _STATE
    state: dict[str, Any] | None = None
    if resume and state_path.is_file():
        state = _read_state(state_path, run_path)
        _check_resumable(state, run_path, config, info, data_sha)

    transform = RewardTransform.fit(config, dataset.rewards)
    versions = _versions()
    if state is None:
        # starting over: an old checkpoint must not survive next to the new config
        for name in (_STATE, _MODEL):
            (run_path / _CHECKPOINT / name).unlink(missing_ok=True)
    write_json_atomic(
        run_path / "config.json",
        {
            "config": config.to_dict(),
            "seed": config.seed,
            "versions": versions,
            "dataset": info,
            "data_sha256": data_sha,
            "fingerprint": fingerprint,
            "reward_transform": transform.to_dict(),
        },
    )

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        d3rlpy.seed(config.seed)
        algo = make_learnable(config, obs_size=dataset.obs_size, n_actions=dataset.n_actions)
        start = 0
        epochs: list[dict[str, float]] = []
        buffer: dict[str, list[float]] = {}
        if state is not None:
            _load_checkpoint(algo, run_path)
            start = int(state["step"])
            algo.set_grad_step(start)
            epochs = list(state["epochs"])
            buffer = {k: list(v) for k, v in state["buffer"].items()}

        factory = (
            logger_adapter
            if logger_adapter is not None
            else FileAdapterFactory(root_dir=str(run_path))
        )
        with quiet_d3rlpy():
            logger = D3RLPyLogger(
                algo=algo,
                adapter_factory=factory,
                experiment_name="d3rlpy",
                n_steps_per_epoch=config.n_steps_per_epoch,
                with_timestamp=False,
            )
            logger.add_params({"config": config.to_dict(), "versions": versions})
        sampler = _Sampler(dataset, config.seed, config.batch_size, transform)
        per_epoch = config.n_steps_per_epoch
        bar = tqdm(
            total=config.n_steps,
            initial=start,
            disable=not show_progress,
            desc=f"train {config.algorithm}",
        )
        try:
            for step in range(start, config.n_steps):
                loss = algo.update(sampler.batch(step))
                for name, value in loss.items():
                    buffer.setdefault(name, []).append(float(value))
                done = step + 1
                bar.update(1)
                if done % per_epoch == 0 or done == config.n_steps:
                    epoch = (done + per_epoch - 1) // per_epoch
                    row: dict[str, float] = {"epoch": float(epoch), "step": float(done)}
                    with quiet_d3rlpy():
                        for name, values in buffer.items():
                            mean = float(np.mean(values))
                            row[name] = mean
                            logger.add_metric(name, mean)
                        logger.commit(epoch, done)
                    epochs.append(row)
                    buffer = {}
                    if show_progress:
                        bar.set_postfix(
                            {k: v for k, v in row.items() if k not in ("epoch", "step")}
                        )
                if done % config.checkpoint_every_steps == 0 or done == config.n_steps:
                    _save_checkpoint(
                        algo,
                        run_path,
                        {
                            "step": done,
                            "config": config.to_dict(),
                            "dataset": info,
                            "data_sha256": data_sha,
                            "fingerprint": fingerprint,
                            "seed": config.seed,
                            "reward_transform": transform.to_dict(),
                            "epochs": epochs,
                            "buffer": buffer,
                        },
                    )
                if callback is not None:
                    callback(done)
        finally:
            bar.close()
            with quiet_d3rlpy():
                logger.close()
    finally:
        torch.set_num_threads(previous_threads)

    losses = _loss_frame(epochs)
    return TrainResult(
        algo=algo,
        config=config,
        seed=config.seed,
        n_steps_done=int(algo.grad_step),
        n_steps_resumed_from=start,
        run_dir=run_path,
        losses=losses,
        wall_time_s=time.perf_counter() - t0,
        reward_transform=transform,
    )


def _loss_frame(epochs: list[dict[str, float]]) -> pl.DataFrame:
    names = sorted({k for row in epochs for k in row} - {"epoch", "step"})
    schema: dict[str, Any] = {"epoch": pl.Int64, "step": pl.Int64}
    schema.update({n: pl.Float64 for n in names})
    data: dict[str, list[Any]] = {
        "epoch": [int(r["epoch"]) for r in epochs],
        "step": [int(r["step"]) for r in epochs],
    }
    for n in names:
        data[n] = [r.get(n) for r in epochs]
    return pl.DataFrame(data, schema=schema)
