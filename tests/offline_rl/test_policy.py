"""PolicyRouter, save_router / load_router: the router contract, round trips, mismatches."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from d3rlpy.logging import NoopAdapterFactory
from rl_fakes import make_frame
from routeplay.estimator._latency import LinearLatencyModel
from routeplay.offline_rl import (
    PolicyRouter,
    TrainConfig,
    TrainResult,
    build_dataset,
    load_router,
    save_router,
    train_router,
)
from routeplay.replay import WAIT, check_router
from routeplay.replay._types import ClusterConfig, InstanceConfig, RequestView
from routeplay.replay.engine._engine import run_replay
from routeplay.replay.rl._observation import OBSERVATION_LAYOUT_VERSION, ObservationLayout
from routeplay.replay.rl._transitions import default_layout, log_transitions
from routeplay.replay.routers._check import make_cluster_state
from torch_fakes import ConstantAction

TINY = {
    "hidden_units": (16, 16),
    "batch_size": 16,
    "n_steps": 20,
    "n_steps_per_epoch": 10,
    "checkpoint_every_steps": 10,
    "target_update_interval": 5,
}


def _layout(m: int) -> ObservationLayout:
    # check_router's random states carry 4 prompt and 5 decode buckets
    return ObservationLayout(n_instances=m, n_prompt_buckets=4, n_decode_buckets=5)


def _trained(m: int, tmp: Path, algorithm: str = "cql", seed: int = 0) -> TrainResult:
    layout = _layout(m)
    frame = make_frame(n_episodes=3, n_steps=10, obs_size=layout.size, n_actions=m + 1, seed=seed)
    ds = build_dataset(frame, n_actions=m + 1)
    cfg = TrainConfig(algorithm=algorithm, seed=seed, **TINY)  # type: ignore[arg-type]
    return train_router(cfg, ds, run_dir=tmp / "run", logger_adapter=NoopAdapterFactory())


def _cluster(m: int) -> ClusterConfig:
    lat = LinearLatencyModel.from_throughput(2000.0)
    return ClusterConfig(
        instances=tuple(InstanceConfig(name=f"i{k}", latency=lat) for k in range(m))
    )


@pytest.fixture(scope="module")
def trained4(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return _trained(4, tmp_path_factory.mktemp("t4"))


def test_policy_router_passes_check_router_learnable_and_torchscript(tmp_path: Path) -> None:
    res = _trained(1, tmp_path, algorithm="bcq")
    router = PolicyRouter(res.algo, layout=_layout(1), name="bcq-1")
    out = check_router(router, n_instances=1, n_decisions=50)
    assert out.router_name == "bcq-1" and not out.oracle
    assert set(out.choices) <= {0, WAIT}
    loaded = load_router(save_router(res, tmp_path / "saved", layout=_layout(1)))
    assert check_router(loaded, n_instances=1, n_decisions=50).choices == out.choices


def test_four_instance_policy_passes_check_router(trained4: TrainResult) -> None:
    router = PolicyRouter(trained4.algo, layout=_layout(4), name="cql-4")
    out = check_router(router, n_instances=4, n_decisions=30)
    assert set(out.choices) <= {0, 1, 2, 3, WAIT}
    with pytest.raises(ValueError, match=re.escape("declares fixed_n_instances=4")):
        check_router(router, n_instances=3)


def test_reset_rejects_a_cluster_of_another_size(trained4: TrainResult) -> None:
    router = PolicyRouter(trained4.algo, layout=_layout(4), name="cql-4")
    msg = (
        "PolicyRouter 'cql-4' was trained for 4 instances (observation layout) but the "
        "cluster has 2; expected the same count."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        router.reset(_cluster(2), np.random.default_rng(0))


def test_route_before_reset_is_a_clear_error(trained4: TrainResult) -> None:
    router = PolicyRouter(trained4.algo, layout=_layout(4), name="cql-4")
    with pytest.raises(RuntimeError, match=re.escape("route() called before reset(cluster, rng)")):
        router.route(RequestView(0, 0.0, 10), make_cluster_state(4))
    assert router.observation_markov
    assert not PolicyRouter(trained4.algo, layout=_layout(4), wait_limit=3).observation_markov


def test_wrong_layout_for_the_policy_is_an_error(trained4: TrainResult) -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(f"policy has (observation size, actions) = ({_layout(4).size}, 5)"),
    ):
        PolicyRouter(trained4.algo, layout=_layout(3))


def test_export_load_round_trip_gives_identical_actions(
    trained4: TrainResult, tmp_path: Path
) -> None:
    folder = save_router(trained4, tmp_path / "router", layout=_layout(4))
    assert sorted(p.name for p in folder.iterdir()) == ["model.d3", "policy.pt", "router.json"]
    meta = json.loads((folder / "router.json").read_text())
    assert meta["layout_version"] == OBSERVATION_LAYOUT_VERSION
    assert meta["layout"]["n_instances"] == 4 and meta["n_actions"] == 5
    assert meta["obs_size"] == _layout(4).size == len(meta["obs_names"])
    assert (meta["algorithm"], meta["seed"]) == ("cql", 0)
    assert meta["config"] == trained4.config.to_dict()
    assert meta["versions"]["d3rlpy"] == "2.8.1"

    obs = np.random.default_rng(0).random((200, _layout(4).size), dtype=np.float32)
    expected = trained4.algo.predict(obs).tolist()
    assert len(set(expected)) > 1  # the comparison is not trivially constant
    original = PolicyRouter(trained4.algo, layout=_layout(4))
    by_ts = load_router(folder)
    by_d3 = load_router(folder, prefer="d3", trust=True)
    assert by_ts.name == "policy-cql"
    for router in (original, by_ts, by_d3):
        assert [router.action_index(o) for o in obs] == expected
    # and through route(): same choices on check_router's random decisions
    states = [
        make_cluster_state(
            4,
            router_queue_len=k,
            n_running=[k % 3, 0, 1, 2],
            prompt_bucket_counts=np.full((4, 4), k % 5),
            decode_bucket_counts=np.full((4, 5), k % 7),
        )
        for k in range(30)
    ]
    requests = [RequestView(k, 0.0, 10 + 50 * k, predicted_bucket=k % 5) for k in range(30)]
    for r in (original, by_ts, by_d3):
        r.reset(_cluster(4), np.random.default_rng(0))
    routes = [
        [r.route(q, s) for q, s in zip(requests, states, strict=True)]
        for r in (original, by_ts, by_d3)
    ]
    assert routes[0] == routes[1] == routes[2]


def test_layout_version_mismatch_on_load_is_a_clear_error(
    trained4: TrainResult, tmp_path: Path
) -> None:
    folder = save_router(trained4, tmp_path / "old", layout=_layout(4), layout_version="0")
    msg = (
        f"was trained with observation layout version '0', but this routeplay encodes "
        f"observations with layout version {OBSERVATION_LAYOUT_VERSION!r}; its inputs would "
        "be misread. Fix: retrain it on transitions logged with this routeplay"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        load_router(folder)


def test_inconsistent_layout_shape_on_load_is_a_clear_error(
    trained4: TrainResult, tmp_path: Path
) -> None:
    folder = save_router(trained4, tmp_path / "r", layout=_layout(4))
    meta = json.loads((folder / "router.json").read_text())
    meta["layout"]["n_instances"] = 3
    (folder / "router.json").write_text(json.dumps(meta))
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"its layout gives (observation size, actions) = ({_layout(3).size}, 4) but the "
            f"stored policy expects ({_layout(4).size}, 5)"
        ),
    ):
        load_router(folder)
    with pytest.raises(ValueError, match=re.escape("prefer = 'onnx'; expected one of")):
        load_router(folder, prefer="onnx")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("policy has (observation size, actions)")):
        save_router(trained4, tmp_path / "bad", layout=_layout(2))


def test_logged_heuristic_to_trained_router_to_replay(tmp_path: Path) -> None:
    cluster = _cluster(2)
    rng = np.random.default_rng(np.random.SeedSequence(3))
    n = 40
    trace = pl.DataFrame(
        {
            "request_id": np.arange(n),
            "arrival_s": np.sort(rng.uniform(0, 4, n)),
            "prompt_tokens": rng.integers(20, 400, n),
            "output_tokens": rng.integers(1, 60, n),
        },
        schema={
            "request_id": pl.UInt64,
            "arrival_s": pl.Float64,
            "prompt_tokens": pl.UInt32,
            "output_tokens": pl.UInt32,
        },
    )
    from routeplay.replay.routers._builtin import LeastLoadedRouter

    log = log_transitions(
        [trace, trace],
        cluster,
        LeastLoadedRouter(),
        reward="paper-baseline",
        path=tmp_path / "log.parquet",
        epsilon=0.05,
        seed=1,
    )
    ds = build_dataset(log.path)
    assert ds.card.behaviour_rows[0][0] == "least-loaded+eps0.05"
    layout = default_layout(cluster)
    assert ds.obs_size == layout.size
    # the log almost never WAITs (only epsilon-random picks), so BC learns to route
    cfg = TrainConfig(algorithm="bc", seed=0, **{**TINY, "n_steps": 40, "learning_rate": 3e-3})
    res = train_router(cfg, ds, run_dir=tmp_path / "run", logger_adapter=NoopAdapterFactory())
    router = load_router(save_router(res, tmp_path / "router", layout=layout), wait_limit=10)
    out = run_replay(trace, cluster, router)
    assert out.requests.height == n
    assert out.requests["finish_s"].is_not_null().all()
    assert router.n_fallback_routes == 0  # every decision was the policy's own
    again_router = load_router(tmp_path / "router", prefer="d3", trust=True, wait_limit=10)
    again = run_replay(trace, cluster, again_router)
    assert out.requests["instance_id"].to_list() == again.requests["instance_id"].to_list()
    assert again_router.n_fallback_routes == router.n_fallback_routes


def test_wait_limit_hands_a_stuck_request_to_the_fallback() -> None:
    layout = _layout(2)
    policy = ConstantAction(2)  # index m = 2: WAIT
    router = PolicyRouter(policy, layout=layout, name="waiter", wait_limit=2)
    router.reset(_cluster(2), np.random.default_rng(0))
    state = make_cluster_state(2, n_queued=[3, 1])
    first = [router.route(RequestView(7, 0.0, 10), state) for _ in range(4)]
    assert first == [WAIT, WAIT, 1, WAIT]  # 3rd WAIT -> least-loaded instance 1
    assert router.n_fallback_routes == 1
    assert router.route(RequestView(8, 0.0, 10), state) == WAIT  # new request: count restarts
    pure = PolicyRouter(policy, layout=layout)
    pure.reset(_cluster(2), np.random.default_rng(0))
    assert {pure.route(RequestView(7, 0.0, 10), state) for _ in range(50)} == {WAIT}
    with pytest.raises(ValueError, match=re.escape("PolicyRouter wait_limit = -1; expected")):
        PolicyRouter(policy, layout=layout, wait_limit=-1)


@pytest.mark.parametrize("algorithm", ["bcq", "bc", "double-dqn"])
def test_every_algorithm_exports_to_identical_torchscript_actions(
    algorithm: str, tmp_path: Path
) -> None:
    res = _trained(2, tmp_path, algorithm=algorithm, seed=4)
    folder = save_router(res, tmp_path / "router", layout=_layout(2))
    obs = np.random.default_rng(1).random((100, _layout(2).size), dtype=np.float32)
    expected = res.algo.predict(obs).tolist()
    for prefer in ("torchscript", "d3"):
        router = load_router(folder, prefer=prefer, trust=True)  # type: ignore[arg-type]
        assert [router.action_index(o) for o in obs] == expected
