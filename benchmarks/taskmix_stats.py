"""Print the task-mix tables of docs/notes/taskmix.md.

Run: ``.venv/bin/python benchmarks/taskmix_stats.py`` (n=100,000 requests, seed 0).
"""

from __future__ import annotations

import sys

import polars as pl
from routeplay.datasets import (
    TASK_ORDERINGS,
    TaskMixConfig,
    fit_task_lengths,
    generate_task_mix,
    request_class,
)


def main(n_requests: int = 100_000, seed: int = 0) -> None:
    fit = fit_task_lengths()
    print("## Fitted parameters (exact values of the discrete distributions)\n")
    print(
        "| task | prompt mu | prompt sigma | output mu | output sigma | exact mean output "
        "| exact P(output >= 143) | P(output > 4096) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for task in fit.tasks:
        print(
            f"| {task.spec.name} | {task.prompt.mu:.4f} | {task.prompt.sigma:.4f} "
            f"| {task.output.mu:.4f} | {task.output.sigma:.4f} | {task.output.mean():.4f} "
            f"| {task.output.sf(143):.4f} | {task.output.sf(4097):.5f} |"
        )

    mix = generate_task_mix(TaskMixConfig(n_requests=n_requests, seed=seed))
    stats = (
        mix.group_by("task")
        .agg(
            pl.len().alias("n"),
            pl.col("prompt_tokens").mean().alias("prompt"),
            pl.col("output_tokens").mean().alias("output"),
            (pl.col("output_tokens") >= 143).mean().alias("heavy"),
            pl.col("prompt_tokens").median().alias("prompt_p50"),
            pl.col("output_tokens").median().alias("output_p50"),
            pl.col("output_tokens").quantile(0.99).alias("output_p99"),
            pl.col("output_tokens").max().alias("output_max"),
        )
        .with_columns(pl.col("task").cast(pl.String))
    )
    by_task = {row["task"]: row for row in stats.iter_rows(named=True)}
    print(f"\n## Generated (n={n_requests:,}, seed {seed}, all-random) vs published\n")
    print(
        "| task | n | mean prompt gen / pub | mean output gen / pub | heavy-decode share "
        "gen / pub | prompt p50 | output p50 / p99 / max |"
    )
    print("|---|---|---|---|---|---|---|")
    for task in fit.tasks:
        row, spec = by_task[task.spec.name], task.spec
        print(
            f"| {spec.name} | {row['n']:,} | {row['prompt']:.1f} / {spec.mean_prompt_tokens} "
            f"| {row['output']:.1f} / {spec.mean_output_tokens} "
            f"| {100 * row['heavy']:.2f} % / {100 * spec.heavy_output_share:.1f} % "
            f"| {row['prompt_p50']:.0f} | {row['output_p50']:.0f} / {row['output_p99']:.0f} "
            f"/ {row['output_max']} |"
        )

    print("\n## Class shares of the all-random mix\n")
    print("| prompt threshold | LL | LH | HL | HH |")
    print("|---|---|---|---|---|")
    median = mix["prompt_tokens"].median()
    for label, threshold in (
        ("40 tokens (quadratic reading, default)", 40),
        ("1,563 tokens (linear reading)", 1563),
        (f"median of the mix ({median:.0f}; heavy = longer)", "median"),
    ):
        shares = request_class(mix, heavy_prompt_tokens=threshold).value_counts(normalize=True)
        got = dict(shares.with_columns(pl.col("request_class").cast(pl.String)).iter_rows())
        print(
            f"| {label} | "
            + " | ".join(f"{100 * got.get(c, 0.0):.2f} %" for c in ("LL", "LH", "HL", "HH"))
            + " |"
        )
    print("\nExact per-task class probabilities (prompt threshold 40, decode 143):\n")
    probs = fit.class_probabilities()
    print("| task | LL | LH | HL | HH |")
    print("|---|---|---|---|---|")
    for row in probs.iter_rows(named=True):
        print(
            f"| {row['task']} | "
            + " | ".join(f"{row[c]:.4f}" for c in ("LL", "LH", "HL", "HH"))
            + " |"
        )

    print("\n## Orderings (n=2,000, seed 0): class sequence summary\n")
    print("| ordering | LL | LH | HL | HH | class changes along the sequence | last arrival (s) |")
    print("|---|---|---|---|---|---|---|")
    for ordering in TASK_ORDERINGS:
        frame = generate_task_mix(TaskMixConfig(ordering=ordering, seed=seed))  # type: ignore[arg-type]
        classes = request_class(frame).cast(pl.String)
        counts = dict(classes.value_counts().iter_rows())
        changes = int((classes != classes.shift(1)).sum())
        print(
            f"| {ordering} | "
            + " | ".join(str(counts.get(c, 0)) for c in ("LL", "LH", "HL", "HH"))
            + f" | {changes} | {frame['arrival_s'][-1]:.1f} |"
        )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
