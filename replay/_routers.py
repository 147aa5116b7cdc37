"""All built-in routers in one place (implementations live in ``_routers_*.py``).

| module                   | routers                                                      |
|--------------------------|--------------------------------------------------------------|
| ``_routers_basic``       | round robin, weighted RR, random, least connections, JSQ by  |
|                          | tokens, least loaded, least work left, power of two, max     |
|                          | capacity                                                     |
| ``_routers_paper``       | decode balancer (oracle / predicted), dedicated small-large, |
|                          | min-min                                                      |
| ``_routers_impact``      | impact-greedy                                                |
| ``_routers_production``  | llm-d, SGLang cache-aware, Dynamo KV, AIBrix least-latency,  |
|                          | session affinity                                             |
"""

from __future__ import annotations

from ._routers_basic import (
    JSQTokensRouter,
    LeastConnectionsRouter,
    LeastLoadedRouter,
    LeastWorkLeftRouter,
    MaxCapacityRouter,
    PowerOfTwoRouter,
    RandomRouter,
    RoundRobinRouter,
    WeightedRoundRobinRouter,
)
from ._routers_impact import ImpactGreedyRouter
from ._routers_paper import (
    DecodeBalancerOracleRouter,
    DecodeBalancerRouter,
    DedicatedSmallLargeRouter,
    MinMinRouter,
)
from ._routers_production import (
    AIBrixLeastLatencyRouter,
    DynamoKVRouter,
    LLMDWeightedScorerRouter,
    SessionAffinityRouter,
    SGLangCacheAwareRouter,
)

__all__ = [
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
    "RandomRouter",
    "RoundRobinRouter",
    "SGLangCacheAwareRouter",
    "SessionAffinityRouter",
    "WeightedRoundRobinRouter",
]
