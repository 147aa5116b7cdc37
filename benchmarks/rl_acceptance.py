"""Issue 12's acceptance table for the mixed cluster: learned routers beside the references.

Regimes (``--regime``, one per run):

* ``hetero-80``: 2 x A100 + 2 x V100 (``hetero-a100x2-v100x2``), the paper's task mix at
  80 req/s; pass: learned >= +5 % vs min-min and >= +0.5 % vs ``min-total-latency``.
* ``hetero-20``: the same cluster at 20 req/s; pass: no worse than -0.5 % vs min-min.
* ``conv-4x``: the Azure 2023 conversation trace at 4x its logged rate on 4 x A100
  (``a100x4``; the rate where docs/notes/headroom.md shows >= 3 % headroom: +15.5 % for
  ``min-total-latency`` over round robin), the earlier 1,000-request windows for
  training and the later ones held out (the hour holds 19 windows, so 10 test episodes
  of 1,000 requests instead of 20 x 2,000); pass: learned >= the best heuristic.

Everything goes through the product's one pipeline (``Scenario.prepare``,
``train_scenario``, ``evaluate_scenario``): one task-mix trace of ``(n_train + n_test) x
2,000`` requests is cut into 2,000-request windows; the earlier ``n_train`` windows fit
the length predictor and are logged (behaviours with 10 % random actions) to train the
learned routers; the later ``n_test`` windows (20 by default) are held out and replayed
by every router, paired. Nothing is selected on the test windows: the learning settings
are fixed below (reward settings: the main job's, chosen on its validation windows,
docs/notes/reports.md; the logged behaviour: chosen on probe runs of another trace seed)
and each algorithm is trained with 3 seeds, every seed reported.

The comparison is ``compare_routers`` (paired over episodes, 2,000 bootstrap resamples,
Holm-adjusted t-test) against min-min and against ``min-total-latency``; the headroom
references (``lookahead-oracle``, pooled cluster) are quoted from docs/notes/headroom.md
(same cluster and rates, other episodes): the lookahead is too slow to replay 40,000
decisions per regime here.

* ``paper-4xv100``: the paper's overload regime (4 x ``v100-paper``, task mix at 20
  req/s, 2,000-request episodes); the learned policy is a *scheduler*
  (``LearningConfig(decision="schedule")``, logs of ``late-binding-spf``); pass: >= +5 %
  vs min-min and no worse than ``late-binding-spf`` (point estimate >= 0, or not
  significantly worse: Holm p >= 0.01).

Run::

    .venv/bin/python benchmarks/rl_acceptance.py --regime hetero-80 --out runs/acceptance-80
    .venv/bin/python benchmarks/rl_acceptance.py --regime hetero-20 --out runs/acceptance-20
    .venv/bin/python benchmarks/rl_acceptance.py --regime paper-4xv100 --out runs/acceptance-paper
    .venv/bin/python benchmarks/rl_acceptance.py --regime hetero-80 --quick --out runs/acc-q
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import polars as pl
from routeplay.estimator import compare_routers
from routeplay.offline_rl import LearningConfig, evaluate_scenario, train_scenario
from routeplay.replay import Scenario

REGIMES: dict[str, dict[str, float]] = {
    "hetero-80": {"rate_per_s": 80.0, "vs_minmin": 0.05, "vs_mtl": 0.005},
    "hetero-20": {"rate_per_s": 20.0, "vs_minmin": -0.005, "vs_mtl": float("nan")},
    # the best heuristic there is min-total-latency (docs/notes/headroom.md)
    "conv-4x": {"rate_scale": 4.0, "vs_minmin": float("nan"), "vs_mtl": 0.0},
    # learned *schedulers* (LearningConfig.decision = "schedule"); the second reference
    # is late-binding-spf, and "no worse" is a point estimate >= 0 or a difference that
    # is not significant (Holm p >= 0.01)
    # (its task mix holds requests that take ~4,000 s on a V100: the replays get 2 h of
    # simulated slack past the last arrival instead of the default 30 minutes)
    "paper-4xv100": {
        "rate_per_s": 20.0,
        "vs_minmin": 0.05,
        "vs_mtl": 0.0,
        "schedule": 1.0,
        "sim_slack_s": 7200.0,
    },
}
HEURISTICS = ("round-robin", "least-connections", "min-min", "min-total-latency")
#: the paper regime's table: the balancing references, the late-binding scheduler and
#: its clairvoyant twin (the headroom reference: true output lengths; ORACLE)
SCHEDULER_HEURISTICS = (
    "round-robin",
    "min-min",
    "min-total-latency",
    "late-binding-spf",
    "late-binding-spf-oracle",
)
SEEDS = (0, 1, 2)


def log(msg: str) -> None:
    """Print with a wall-clock stamp."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


#: Logged behaviour: the strongest deployable heuristic of docs/notes/headroom.md. Chosen
#: on probe runs with another trace seed (``--scenario-seed 99``), never on the reported
#: test episodes; the probes and the layout-2 runs are in docs/notes/offline-rl-results.md.
BEHAVIOURS = ("min-total-latency",)


def learning(
    seed: int,
    algorithms: tuple[str, ...],
    n_steps: int,
    behaviours: tuple[str, ...],
    decision: str = "route",
) -> LearningConfig:
    """The learning settings (fixed; not chosen on any test window)."""
    return LearningConfig(
        decision=decision,
        behaviours=behaviours,
        epsilon=0.1,
        reward="paper-workload-guided",
        algorithms=algorithms,
        n_steps=n_steps,
        reward_normalization="standardize",
        target_update_interval=100,
        seed=seed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regime", choices=sorted(REGIMES), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-train", type=int, default=10)
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--episode-requests", type=int, default=2000)
    parser.add_argument("--algorithms", default="cql,bc")
    parser.add_argument("--n-steps", type=int, default=5000)
    parser.add_argument(
        "--behaviours",
        default=None,
        help=f"default: {','.join(BEHAVIOURS)} (routers); the scheduler default in paper-4xv100",
    )
    parser.add_argument("--seeds", default=",".join(str(s) for s in SEEDS))
    parser.add_argument("--heuristics", default=None, help=f"default: {','.join(HEURISTICS)}")
    parser.add_argument(
        "--scenario-seed",
        type=int,
        default=12,
        help="seed of the task-mix trace and the replays (12: the reported run; use "
        "another for probes, so that no design choice sees the reported test episodes)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.n_test, args.episode_requests, args.n_steps = 2, 3, 200, 200
    regime = REGIMES[args.regime]
    schedule = bool(regime.get("schedule"))
    decision = "schedule" if schedule else "route"
    second_ref = "late-binding-spf" if schedule else "min-total-latency"
    if args.behaviours is None:
        args.behaviours = "" if schedule else ",".join(BEHAVIOURS)  # "": the default
    if args.heuristics is None:
        args.heuristics = ",".join(SCHEDULER_HEURISTICS if schedule else HEURISTICS)
    algorithms = tuple(a.strip() for a in args.algorithms.split(",") if a.strip())
    behaviours = tuple(b.strip() for b in args.behaviours.split(",") if b.strip())
    seeds = tuple(int(x) for x in args.seeds.split(",") if x.strip())
    heuristics = tuple(h.strip() for h in args.heuristics.split(",") if h.strip())
    n_windows = args.n_train + args.n_test
    if "rate_scale" in regime:  # the Azure trace: its own length sets the windows
        scenario = Scenario(
            trace="azure-2023-conv",
            rate_scale=regime["rate_scale"],
            cluster="a100x4",
            episode_requests=args.episode_requests if args.quick else 1000,
            max_test_episodes=None if not args.quick else args.n_test,
            test_fraction=0.5,
            predictor="histogram",
            timeline_sample_interval_s=None,
            seed=args.scenario_seed,
        )
    else:
        scenario = Scenario(
            trace="task-mix",
            task_mix={
                "n_requests": n_windows * args.episode_requests,
                "rate_per_s": regime["rate_per_s"],
            },
            cluster="paper-4xv100" if schedule else "hetero-a100x2-v100x2",
            episode_requests=args.episode_requests,
            test_fraction=args.n_test / n_windows,
            predictor="histogram",
            timeline_sample_interval_s=None,
            seed=args.scenario_seed,
        )
    prepared = scenario.prepare()
    log(
        f"{args.regime}: train windows {[e.index for e in prepared.train]}, test windows "
        f"{[e.index for e in prepared.test]} (held out)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    learned = {}
    for seed in seeds:
        t0 = time.perf_counter()
        res = train_scenario(
            prepared,
            learning(seed, algorithms, args.n_steps, behaviours, decision),
            args.out / f"s{seed}",
        )
        if seed == seeds[0]:
            for label in res.routers:
                log(res.describe(label))
        for label, router in res.routers.items():
            learned[f"{label}-s{seed}"] = router
        log(f"trained {sorted(res.routers)} seed {seed} in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    slack = {"sim_slack_s": regime["sim_slack_s"]} if "sim_slack_s" in regime else {}
    ev = evaluate_scenario(prepared, learned, heuristics, baseline="round-robin", **slack)
    log(
        f"replayed {len(learned) + len(heuristics)} routers x {len(prepared.test)} episodes "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    requests = ev.replays.requests
    requests.write_parquet(args.out / "requests.parquet")
    rows = []
    for ref in ("min-min", second_ref):
        cmp = compare_routers(requests, baseline=ref, statistics=("mean",), n_boot=2000)
        frame = cmp.to_frame().select(
            "router",
            pl.lit(ref).alias("versus"),
            "router_value_s",
            "relative_improvement",
            "ci_low",
            "ci_high",
            "p_ttest_holm",
        )
        rows.append(frame)
    table = pl.concat(rows)
    table.write_csv(args.out / "acceptance.csv")
    with pl.Config(tbl_rows=100, tbl_cols=20, tbl_width_chars=200):
        print(ev.to_frame())
        print(table)
    fb = ev.fallbacks.group_by("router").agg(pl.col("n_fallback_routes").sum())
    print(fb.sort("router"))
    for label in sorted(learned):
        lab = [r for r in table["router"].unique().to_list() if r.startswith(label)]
        if not lab:
            continue
        row_mm = table.filter((pl.col("router") == lab[0]) & (pl.col("versus") == "min-min"))
        row_mtl = table.filter((pl.col("router") == lab[0]) & (pl.col("versus") == second_ref))
        vs_mm = float(row_mm["relative_improvement"][0])
        vs_mtl = float(row_mtl["relative_improvement"][0])
        p_mtl = float(row_mtl["p_ttest_holm"][0])
        ok = all(
            value >= bar
            for value, bar in ((vs_mm, regime["vs_minmin"]), (vs_mtl, regime["vs_mtl"]))
            if bar == bar  # NaN: no bar in this regime
        )
        if schedule and not ok and vs_mm >= regime["vs_minmin"]:
            ok = p_mtl >= 0.01  # "no worse than late-binding-spf": not significantly worse
        log(
            f"{lab[0]}: {vs_mm:+.2%} vs min-min, {vs_mtl:+.2%} vs {second_ref} (Holm p "
            f"{p_mtl:.3g}): {'PASS' if ok else 'fail'} (see the CIs and p-values above)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
