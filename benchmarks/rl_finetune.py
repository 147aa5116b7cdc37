"""Online fine-tuning with validation selection: each paper reward variant vs its offline start.

Issue 12 acceptance row "online fine-tuning, each reward variant: the fine-tuned policy is
no worse than its offline start on held-out episodes". One offline start, then each of
the paper's three reward variants fine-tuned from it with the library's validation
selection (:func:`routeplay.offline_rl.fine_tune_online` with ``validation_episodes``),
then every kept policy against the start on held-out TEST episodes never used for
training or selection.

Data (task mix, 20 req/s, ``--cluster``, default ``v100x4``; every split has its own seeds):

* offline logs: the five heuristics (round robin, least connections, jsq-tokens, min-min,
  impact-greedy) with epsilon 0.1 on training seeds ``10_000 + k`` (2,000 requests), the
  episodes split among the heuristics, workload-guided reward;
* offline start: CQL "setting B" of docs/notes/offline-rl-results.md (standardised
  rewards, alpha 5, target sync 150, 15,000 steps), trained here (``<out>/offline-cql``;
  reused when the checkpoint is there);
* fine-tuning episodes: training seeds ``10_000 + k``, 500 requests, 40 episodes (the
  env picks one per episode);
* validation episodes (selection only): training-side seeds ``40_000 + k``, 2,000 requests;
* test episodes (evaluation only): seeds ``20_000 + k``, 2,000 requests, 20 episodes.

Each variant starts from a fresh load of the same offline checkpoint; rewards are in the
offline run's units (``RewardTransform.wrap``). The kept policies and the start are
replayed on the test episodes with :func:`evaluate_routers` (paired; learned routers
wrapped with a 0.1 s fallback bound, the bound the validation replays use too), and each
kept policy is compared with the start by :func:`routeplay.estimator.compare_routers`
(paired over episodes, bootstrap CI, t and Wilcoxon tests, Holm across the three).

Run: ``.venv/bin/python benchmarks/rl_finetune.py --out runs/rl_finetune [--quick]``.
Writes ``validation-curves.parquet`` (one row per evaluation, all variants),
``online-curves-long.parquet`` (step, metric, value, run: the reports' learning-curve
chart input), ``learning-curves.parquet`` (per training episode), ``ft-<variant>/``,
``evaluation.parquet``, ``start-vs-kept.parquet``, ``evaluation.txt`` and ``info.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import polars as pl
from routeplay.datasets import TaskMixConfig, generate_task_mix_episodes
from routeplay.estimator import compare_routers, fit_task_mix_predictor
from routeplay.offline_rl import (
    OnlineConfig,
    PolicyRouter,
    TrainConfig,
    build_dataset,
    evaluate_routers,
    fine_tune_online,
    train_router,
)
from routeplay.replay import ClusterConfig, default_layout, log_transitions, make_cluster
from routeplay.replay import make_router as make_heuristic

HEURISTICS = ("round-robin", "least-connections", "jsq-tokens", "min-min", "impact-greedy")
VARIANTS = ("paper-baseline", "paper-workload-aware", "paper-workload-guided")
SHORT = {
    "paper-baseline": "ft-baseline",
    "paper-workload-aware": "ft-aware",
    "paper-workload-guided": "ft-guided",
}
LOG_REWARD = "paper-workload-guided"
WAIT_BOUND_S = 0.1
RATE = 20.0


def cql_config(n_steps: int) -> TrainConfig:
    """Setting B of the second pass (docs/notes/offline-rl-results.md, "Final runs")."""
    return TrainConfig(
        algorithm="cql",
        n_steps=n_steps,
        n_steps_per_epoch=min(1000, n_steps),
        checkpoint_every_steps=n_steps,
        seed=0,
        gamma=0.99,
        target_update_interval=150,
        reward_normalization="standardize",
        reward_scale=1.0,
        cql_alpha=5.0,
    )


def get_cluster(name: str) -> ClusterConfig:
    """A built-in cluster; ``hetero`` is short for ``hetero-a100x2-v100x2``."""
    return make_cluster("hetero-a100x2-v100x2" if name == "hetero" else name)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mix(first_seed: int, n: int, n_requests: int) -> list[pl.DataFrame]:
    return generate_task_mix_episodes(
        TaskMixConfig(n_requests=n_requests, rate_per_s=RATE, seed=first_seed), n
    )


def chart_curves(long: pl.DataFrame, out: Path) -> None:
    """The validation curves of every variant as a small report (HTML + PNG) in ``out``."""
    from routeplay.reports import Report, ReportSection, learning_curve_chart, write_report

    report = Report(
        title="Online fine-tuning: validation curves per reward variant",
        metadata={
            "data": "task mix, validation episodes (training side)",
            "cluster": "v100x4",
            "seed": 0,
            "significance_method": "none (curves only)",
        },
        sections=(
            ReportSection(
                key="online-curves",
                title="Validation mean E2E and online return during fine-tuning",
                chart=learning_curve_chart(
                    long, title="Online fine-tuning: losses, online return, validation E2E"
                ),
            ),
        ),
    )
    write_report(report, out, image_formats=("png",))
    log(f"curves charted in {out / 'report.html'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/rl_finetune"))
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (< 1 min)")
    parser.add_argument("--cluster", default="v100x4", help="builtin cluster name or 'hetero'")
    parser.add_argument("--steps", type=int, help="env steps per variant (10,000)")
    parser.add_argument("--eval-every", type=int, help="steps between evaluations (1,000)")
    parser.add_argument("--patience", type=int, default=4, help="evaluations w/o improvement")
    parser.add_argument("--n-validation", type=int, help="validation episodes (4)")
    parser.add_argument("--learning-rate", type=float, help="fine-tuning LR (default: offline)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    n_steps = args.steps or (300 if quick else 10_000)
    eval_every = args.eval_every or (100 if quick else 1000)
    n_req = 200 if quick else 2000
    n_logs = 5 if quick else 20
    n_val = args.n_validation or (2 if quick else 4)
    n_test = 3 if quick else 20
    offline_steps = 300 if quick else 15_000
    t_all = time.perf_counter()

    cluster = get_cluster(args.cluster)
    predictor = fit_task_mix_predictor(
        "llama2-7b/v100-scaled", TaskMixConfig(n_requests=4000, seed=999)
    )
    layout = default_layout(cluster, None, predictor)

    # -- offline logs and the offline CQL start --
    log_eps = mix(10_000, n_logs, n_req)
    per = max(1, n_logs // len(HEURISTICS))
    files = []
    for j, h in enumerate(HEURISTICS):
        path = args.out / "logs" / f"train-{h}.parquet"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            res = log_transitions(
                log_eps[j * per : (j + 1) * per],
                cluster,
                make_heuristic(h),
                reward=LOG_REWARD,
                path=path,
                epsilon=0.1,
                seed=1,
                predictor=predictor,
                episode_offset=j * per,
            )
            log(f"logged {h}: {res.n_episodes} episodes, {res.n_transitions} transitions")
        files.append(path)
    dataset = build_dataset(files)
    cfg_offline = cql_config(offline_steps)
    run = args.out / "offline-cql"
    t0 = time.perf_counter()
    offline = train_router(cfg_offline, dataset, run_dir=run, resume=True)
    tf = offline.reward_transform
    assert tf is not None
    log(
        f"offline CQL: {offline.n_steps_done} steps (resumed from "
        f"{offline.n_steps_resumed_from}) in {time.perf_counter() - t0:.0f} s; reward "
        f"transform shift {tf.shift:.4f} factor {tf.factor:.6f}"
    )

    # -- fine-tuning with validation selection, once per reward variant --
    ft_eps = mix(10_000, 40, 100 if quick else 500)
    validation = mix(40_000, n_val, n_req)
    online_cfg = OnlineConfig(
        n_steps=n_steps,
        n_steps_per_epoch=min(1000, n_steps),
        epsilon_start=0.1,
        epsilon_end=0.02,
        eval_every_steps=eval_every,
        patience=args.patience,
        learning_rate=args.learning_rate,
        max_router_wait_s=WAIT_BOUND_S,
        seed=0,
    )
    learned: dict[str, PolicyRouter] = {"cql": PolicyRouter(offline.algo, layout=layout)}
    info: dict[str, object] = {
        "cluster": args.cluster,
        "offline_config": cfg_offline.to_dict(),
        "online_config": online_cfg.to_dict(),
        "n_log_episodes": n_logs,
        "episode_requests": n_req,
        "n_validation": n_val,
        "n_test": n_test,
        "variants": {},
    }
    curves, validations, longs = [], [], []
    for variant in VARIANTS:
        start = train_router(cfg_offline, dataset, run_dir=run, resume=True)  # fresh copy
        res = fine_tune_online(
            start,
            ft_eps,
            cluster,
            reward=tf.wrap(variant),
            run_dir=args.out / f"ft-{variant}",
            config=online_cfg,
            predictor=predictor,
            validation_episodes=validation,
        )
        log(
            f"{variant}: {res.n_steps_done} steps, {res.wall_time_s:.0f} s, kept step "
            f"{res.kept_step} (validation {res.start_validation_e2e_s:.4f} -> "
            f"{res.kept_validation_e2e_s:.4f} s), stopped early {res.stopped_early}\n"
            f"{res.validation.drop('reward')}"
        )
        info["variants"][variant] = res.selection() | {  # type: ignore[index]
            "wall_time_s": round(res.wall_time_s, 1)
        }
        curves.append(res.curve)
        validations.append(res.validation)
        longs.append(res.chart_frame(SHORT[variant]))
        learned[SHORT[variant]] = PolicyRouter(res.algo, layout=layout, name=SHORT[variant])
    pl.concat(curves).write_parquet(args.out / "learning-curves.parquet")
    pl.concat(validations).write_parquet(args.out / "validation-curves.parquet")
    long = pl.concat(longs)
    long.write_parquet(args.out / "online-curves-long.parquet")
    chart_curves(long, args.out / "curves")

    # -- held-out test episodes: heuristics, the start, the kept policies --
    test = mix(20_000, n_test, n_req)
    t0 = time.perf_counter()
    ev = evaluate_routers(
        learned,
        HEURISTICS,
        test,
        cluster,
        baseline="round-robin",
        predictor=predictor,
        max_router_wait_s=WAIT_BOUND_S,
    )
    log(f"evaluated on {n_test} test episodes in {time.perf_counter() - t0:.0f} s")
    start_label = "cql+fallback"
    kept_labels = [SHORT[v] + "+fallback" for v in VARIANTS]
    frame = ev.replays.requests.filter(pl.col("router").is_in([start_label, *kept_labels]))
    cmp = compare_routers(frame, baseline=start_label, statistics=("mean",), n_boot=2000, seed=0)
    by = {c.router: c for c in cmp.comparisons if c.metric == "e2e_s"}
    means = dict(
        frame.group_by("router", "episode")
        .agg(pl.col("e2e_s").mean())
        .group_by("router")
        .agg(pl.col("e2e_s").mean())
        .iter_rows()
    )
    rows = []
    for variant, label in zip(VARIANTS, kept_labels, strict=True):
        c = by[label]
        sel = info["variants"][variant]  # type: ignore[index]
        worse = c.relative_improvement < 0 and c.p_ttest_holm < 0.01
        rows.append(
            {
                "variant": variant,
                "kept_step": sel["kept_step"],
                "stopped_early": sel["stopped_early"],
                "n_steps_done": sel["n_steps_done"],
                "start_validation_e2e_s": sel["start_validation_e2e_s"],
                "kept_validation_e2e_s": sel["kept_validation_e2e_s"],
                "start_test_e2e_s": means[start_label],
                "kept_test_e2e_s": means[label],
                "improvement_vs_start": c.relative_improvement,
                "ci_low": c.ci_low,
                "ci_high": c.ci_high,
                "p_ttest_holm": c.p_ttest_holm,
                "p_wilcoxon_holm": c.p_wilcoxon_holm,
                "no_worse_than_start": not worse,
            }
        )
    table = pl.DataFrame(rows)
    table.write_parquet(args.out / "start-vs-kept.parquet")
    ev.to_frame().write_parquet(args.out / "evaluation.parquet")
    lines = [
        f"kept policy vs its offline start on {n_test} held-out test episodes "
        "(paired, Holm over the 3 variants; 'no worse' = not significantly slower at 0.01)",
        f"{'variant':<22} {'kept':>6} {'start E2E':>9} {'kept E2E':>9} {'vs start':>9} "
        f"{'95% CI':>20} {'p_holm':>8} {'no worse':>8}",
    ]
    for r in rows:
        ci = f"[{r['ci_low']:+.2%}, {r['ci_high']:+.2%}]"
        lines.append(
            f"{r['variant']:<22} {r['kept_step']:>6} {r['start_test_e2e_s']:>9.4f} "
            f"{r['kept_test_e2e_s']:>9.4f} {r['improvement_vs_start']:>+9.2%} {ci:>20} "
            f"{r['p_ttest_holm']:>8.2g} {str(r['no_worse_than_start']):>8}"
        )
    text = "\n".join(lines)
    (args.out / "evaluation.txt").write_text(text + "\n\n" + ev.summary() + "\n")
    info["wall_time_s"] = round(time.perf_counter() - t_all, 1)
    (args.out / "info.json").write_text(json.dumps(info, indent=2, default=str))
    print(text, flush=True)
    print(ev.summary(), flush=True)
    log(f"done in {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
