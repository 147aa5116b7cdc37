"""Discrete-event cluster simulator, routers, observation/reward encoding, RL environment."""

from __future__ import annotations

from ._types import (
    BATCHING_POLICIES,
    WAIT,
    ClusterConfig,
    ClusterState,
    InstanceConfig,
    OracleRequestView,
    RequestView,
    Router,
    RouterError,
    Scheduler,
)
from .engine._capacity import capacity_req_per_s
from .engine._clusters import (
    cluster_from_dict,
    list_clusters,
    load_cluster,
    make_cluster,
    pooled_cluster,
    with_instance_settings,
)
from .engine._engine import Engine, RouteFn, ScheduleFn, is_scheduler, run_replay
from .engine._metrics import slo_attainment, summarize_requests, utilisation_imbalance
from .engine._result import REQUEST_SCHEMA, TIMELINE_SCHEMA, ReplayConfig, ReplayResult
from .experiments._episodes import EpisodeReplays, episode_seed, replay_episodes
from .experiments._scenario import (
    BehaviourLog,
    PreparedScenario,
    Scenario,
    log_behaviours,
    replay_scenario,
)
from .experiments._sweep import (
    SweepCallConfig,
    SweepCellConfig,
    SweepGrid,
    SweepResult,
    load_sweep,
    register_sweep_function,
    run_sweep,
    sweep_from_dict,
)
from .experiments._table2 import TABLE2_RATES_PER_S, Table2Config, run_table2, table2_cell_means
from .rl._env import RoutingEnv
from .rl._observation import OBSERVATION_LAYOUT_VERSION, ObservationLayout, encode_observation
from .rl._outcomes import OutcomeConfig, OutcomeTracker
from .rl._rewards import (
    REWARD_VARIANTS,
    LatencyAreaReward,
    PaperReward,
    QueueBalanceReward,
    StepOutcome,
    make_reward,
)
from .rl._transitions import (
    TRANSITION_COLUMNS,
    TransitionLogResult,
    TransitionMetadata,
    TransitionWriter,
    action_to_index,
    default_layout,
    index_to_action,
    log_transitions,
    read_transitions,
    transition_schema,
)
from .routers._builtin import (
    AIBrixLeastLatencyRouter,
    DecodeBalancerOracleRouter,
    DecodeBalancerRouter,
    DedicatedSmallLargeRouter,
    DynamoKVRouter,
    ImpactGreedyRouter,
    JSQTokensRouter,
    LeastConnectionsRouter,
    LeastLoadedRouter,
    LeastWorkLeftRouter,
    LLMDWeightedScorerRouter,
    MaxCapacityRouter,
    MinMinRouter,
    PowerOfTwoRouter,
    RandomRouter,
    RoundRobinRouter,
    SessionAffinityRouter,
    SGLangCacheAwareRouter,
    WeightedRoundRobinRouter,
)
from .routers._check import (
    RouterCheckResult,
    check_router,
    make_cluster_state,
    make_uniform_cluster,
)
from .routers._reference import (
    LookaheadOracleRouter,
    MinMinOracleRouter,
    MinTotalLatencyRouter,
)
from .routers._registry import (
    ROUTERS,
    RouterSpec,
    list_routers,
    make_router,
    register_router,
    unregister_router,
)
from .routers._schedulers import (
    HOLD,
    LateBindingSPFOracleScheduler,
    LateBindingSPFScheduler,
    free_instances,
)

__all__ = [
    # one experiment pipeline
    "BehaviourLog",
    "PreparedScenario",
    "Scenario",
    "default_layout",
    "episode_seed",
    "log_behaviours",
    "replay_scenario",
    # experiment building blocks
    "TABLE2_RATES_PER_S",
    "Table2Config",
    "capacity_req_per_s",
    "run_table2",
    "table2_cell_means",
    "with_instance_settings",
    # sweeps
    "SweepCallConfig",
    "SweepCellConfig",
    "SweepGrid",
    "SweepResult",
    "load_sweep",
    "register_sweep_function",
    "run_sweep",
    "sweep_from_dict",
    # RL interface: transitions, environment, observations, rewards, clusters
    "TRANSITION_COLUMNS",
    "OutcomeConfig",
    "OutcomeTracker",
    "RoutingEnv",
    "TransitionLogResult",
    "TransitionMetadata",
    "TransitionWriter",
    "action_to_index",
    "index_to_action",
    "log_transitions",
    "read_transitions",
    "transition_schema",
    "OBSERVATION_LAYOUT_VERSION",
    "REWARD_VARIANTS",
    "EpisodeReplays",
    "ObservationLayout",
    "LatencyAreaReward",
    "PaperReward",
    "QueueBalanceReward",
    "StepOutcome",
    "cluster_from_dict",
    "encode_observation",
    "list_clusters",
    "load_cluster",
    "make_cluster",
    "make_reward",
    "pooled_cluster",
    "replay_episodes",
    # engine
    "Engine",
    "REQUEST_SCHEMA",
    "ReplayConfig",
    "ReplayResult",
    "RouteFn",
    "ScheduleFn",
    "is_scheduler",
    "TIMELINE_SCHEMA",
    "run_replay",
    "slo_attainment",
    "summarize_requests",
    "utilisation_imbalance",
    # routers
    "ROUTERS",
    "AIBrixLeastLatencyRouter",
    "DecodeBalancerOracleRouter",
    "DecodeBalancerRouter",
    "DedicatedSmallLargeRouter",
    "DynamoKVRouter",
    "ImpactGreedyRouter",
    "JSQTokensRouter",
    "LLMDWeightedScorerRouter",
    "LeastConnectionsRouter",
    "LeastLoadedRouter",
    "LeastWorkLeftRouter",
    "MaxCapacityRouter",
    "MinMinRouter",
    "PowerOfTwoRouter",
    # reference policies
    "LookaheadOracleRouter",
    "MinMinOracleRouter",
    "MinTotalLatencyRouter",
    # router-queue schedulers
    "HOLD",
    "LateBindingSPFOracleScheduler",
    "LateBindingSPFScheduler",
    "Scheduler",
    "free_instances",
    "RandomRouter",
    "RoundRobinRouter",
    "RouterCheckResult",
    "RouterSpec",
    "SGLangCacheAwareRouter",
    "SessionAffinityRouter",
    "WeightedRoundRobinRouter",
    "check_router",
    "list_routers",
    "make_cluster_state",
    "make_uniform_cluster",
    "make_router",
    "register_router",
    "unregister_router",
    "BATCHING_POLICIES",
    "WAIT",
    "ClusterConfig",
    "ClusterState",
    "InstanceConfig",
    "OracleRequestView",
    "RequestView",
    "Router",
    "RouterError",
]
