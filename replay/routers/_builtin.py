"""All built-in routers in one place (implementations live in ``_routers_*.py``).

| module                   | routers                                                      |
|--------------------------|--------------------------------------------------------------|
| ``routers._basic``       | round robin, weighted RR, random, least connections, JSQ by  |
|                          | tokens, least loaded, least work left, power of two, max     |
|                          | capacity                                                     |
| ``routers._paper``       | decode balancer (oracle / predicted), dedicated small-large, |
|                          | min-min                                                      |
| ``routers._impact``      | impact-greedy                                                |
| ``routers._production``  | llm-d, SGLang cache-aware, Dynamo KV, AIBrix least-latency,  |
|                          | session affinity                                             |
"""

from __future__ import annotations

from ._basic import (
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
from ._impact import ImpactGreedyRouter
from ._paper import (
    DecodeBalancerOracleRouter,
    DecodeBalancerRouter,
    DedicatedSmallLargeRouter,
    MinMinRouter,
)
from ._production import (
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
