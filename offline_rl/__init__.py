"""Offline RL for routing: transition logs -> d3rlpy datasets, training, policy routers.

Only this package imports torch and d3rlpy, and it imports them lazily (inside the
functions that need them), so ``import routeplay.offline_rl`` stays cheap.
"""

from __future__ import annotations

from ._dataset import DatasetCard, RoutingDataset, build_dataset
from ._evaluate import BoundedWaitRouter, EvaluationResult, evaluate_routers
from ._imitation import (
    ImitationConfig,
    ImitationResult,
    LookaheadLabels,
    imitate_lookahead,
    label_states,
    plain_view,
)
from ._online import (
    CURVE_SCHEMA,
    VALIDATION_SCHEMA,
    OnlineConfig,
    OnlineResult,
    fine_tune_online,
)
from ._ope import OPEConfig, OPEResult, evaluate_off_policy
from ._pipeline import (
    DEFAULT_BEHAVIOURS,
    LearningConfig,
    LearningResult,
    evaluate_scenario,
    learned_routers,
    train_scenario,
)
from ._policy import ROUTER_FILES, PolicyRouter, load_router, save_router
from ._policy_scheduler import PolicyScheduler
from ._replay_buffer import fifo_replay_buffer
from ._train import (
    ALGORITHMS,
    RewardTransform,
    TrainConfig,
    TrainResult,
    TransformedReward,
    train_router,
)

__all__ = [
    # one experiment pipeline
    "DEFAULT_BEHAVIOURS",
    "LearningConfig",
    "LearningResult",
    "evaluate_scenario",
    "learned_routers",
    "train_scenario",
    # imitation of the lookahead + DAgger
    "ImitationConfig",
    "ImitationResult",
    "LookaheadLabels",
    "imitate_lookahead",
    "label_states",
    "plain_view",
    # OPE, replay evaluation, online fine-tuning
    "BoundedWaitRouter",
    "CURVE_SCHEMA",
    "VALIDATION_SCHEMA",
    "OnlineConfig",
    "OnlineResult",
    "fine_tune_online",
    "fifo_replay_buffer",
    "EvaluationResult",
    "OPEConfig",
    "OPEResult",
    "evaluate_off_policy",
    "evaluate_routers",
    # datasets, training, policy routers
    "ALGORITHMS",
    "ROUTER_FILES",
    "DatasetCard",
    "PolicyRouter",
    "PolicyScheduler",
    "RewardTransform",
    "RoutingDataset",
    "TrainConfig",
    "TrainResult",
    "TransformedReward",
    "build_dataset",
    "load_router",
    "save_router",
    "train_router",
]
