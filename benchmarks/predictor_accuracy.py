"""Held-out accuracy of the output-length predictor (figures of docs/notes/estimator-predictor.md).

Run:
    ROUTEPLAY_DATA_DIR=../shared/data .venv/bin/python benchmarks/predictor_accuracy.py

Two studies, each on held-out data:
(a) Azure LLM inference 2023, code + conv combined, task = trace name; split by time
    (the first 70 % of the combined hour trains, the last 30 % tests);
(b) Vidur's arXiv summarisation lengths (no time, no task): seeded random 70/30 split.

Per bucket scheme (fitted on the training split only) it compares, on the SAME scheme:
the majority class, the histogram classifier without the task hint (prompt bins only),
with the task only, and with task + prompt bins. It prints Markdown tables.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
from routeplay.estimator import (
    BucketScheme,
    ConstantLengthPredictor,
    LinearLatencyModel,
    PredictorEvaluation,
    equal_width_buckets,
    evaluate_predictor,
    fit_length_predictor,
    quantile_buckets,
    time_buckets,
)

TEST_FRACTION = 0.3
N_BUCKETS = 6  # the time scheme has 6 buckets; the others use as many
SEED = 0

#: The paper's V100 model as the ``llama2-7b/v100-paper`` preset defines it: grad2 per
#: context token and an intercept making 1 sequence x 256 context tokens decode in 0.035 s.
PAPER_V100 = LinearLatencyModel(
    intercept_s=0.035 - 3.3e-5 * 256,
    prefill_s_per_token=3.2e-4,
    prefill_s_per_token2=0.0,
    decode_s_per_seq=0.0,
    decode_s_per_context_token=3.3e-5,
    name="llama2-7b/v100-paper",
)


def data_dir() -> Path:
    return Path(os.environ.get("ROUTEPLAY_DATA_DIR", "../shared/data"))


def load_azure_code_conv(root: Path) -> pl.DataFrame:
    """Both Azure 2023 traces in one canonical frame sorted by time, task = trace name."""
    frames = []
    for task in ("code", "conv"):
        raw = pl.read_csv(root / "azure-public-dataset" / f"AzureLLMInferenceTrace_{task}.csv")
        frames.append(
            raw.select(
                # 7 fractional digits: keep 6 (microseconds) for parsing; order is unaffected
                pl.col("TIMESTAMP")
                .str.slice(0, 26)
                .str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us")
                .alias("ts"),
                pl.col("ContextTokens").alias("prompt_tokens"),
                pl.col("GeneratedTokens").alias("output_tokens"),
                pl.lit(task).alias("task"),
            )
        )
    both = pl.concat(frames).sort(["ts", "task"])
    start = both.get_column("ts").min()
    return both.select(
        pl.int_range(pl.len(), dtype=pl.UInt64).alias("request_id"),
        ((pl.col("ts") - start).dt.total_microseconds() / 1e6).alias("arrival_s"),
        "prompt_tokens",
        "output_tokens",
        pl.col("task").cast(pl.Categorical),
    )


def split_by_time(trace: pl.DataFrame, test_fraction: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows are sorted by arrival: the first part trains, the later part tests."""
    n_train = int(round(trace.height * (1.0 - test_fraction)))
    return trace.head(n_train), trace.slice(n_train)


def load_arxiv(root: Path) -> pl.DataFrame:
    """Vidur's arXiv summarisation lengths as a canonical trace (row order as arrival)."""
    raw = pl.read_csv(
        root / "vidur_traces" / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"
    )
    return raw.select(
        pl.int_range(pl.len(), dtype=pl.UInt64).alias("request_id"),
        pl.int_range(pl.len(), dtype=pl.Int64).cast(pl.Float64).alias("arrival_s"),
        pl.col("num_prefill_tokens").alias("prompt_tokens"),
        pl.col("num_decode_tokens").alias("output_tokens"),
    )


def split_random(
    trace: pl.DataFrame, test_fraction: float, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Seeded random split; both parts keep the original row order."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    is_test = np.zeros(trace.height, dtype=bool)
    n_test = int(round(trace.height * test_fraction))
    is_test[rng.choice(trace.height, size=n_test, replace=False)] = True
    mask = pl.Series(is_test)
    return trace.filter(~mask), trace.filter(mask)


def azure_schemes(train: pl.DataFrame) -> list[BucketScheme]:
    out = train.get_column("output_tokens")
    return [
        time_buckets(PAPER_V100, name="time (paper, V100 0.035 s/iter)"),
        time_buckets(PAPER_V100, (0.0, 0.5, 4.0, math.inf), name="time, 3 coarse buckets"),
        quantile_buckets(out, N_BUCKETS, task=train.get_column("task"), name="quantile per task"),
        equal_width_buckets(float(out.max()), N_BUCKETS, name="equal width"),
    ]


def arxiv_schemes(train: pl.DataFrame) -> list[BucketScheme]:
    out = train.get_column("output_tokens")
    return [
        time_buckets(PAPER_V100, name="time (paper, V100 0.035 s/iter)"),
        quantile_buckets(out, N_BUCKETS, name="quantile"),
        equal_width_buckets(float(out.max()), N_BUCKETS, name="equal width"),
    ]


BINS_GRID = (1.0, 2.0, 4.0, 8.0, 16.0)


def select_bins_per_octave(
    split: tuple[pl.DataFrame, pl.DataFrame], scheme: BucketScheme, features: tuple[str, ...]
) -> float:
    """The grid value with the best validation accuracy (ties -> the coarsest)."""
    fit, validation = split
    scores = [
        evaluate_predictor(
            fit_length_predictor(fit, scheme, features=features, bins_per_octave=b),
            validation,
            scheme,
        ).top1_accuracy
        for b in BINS_GRID
    ]
    return BINS_GRID[int(np.argmax(scores))]


def evaluate_all(
    train: pl.DataFrame,
    test: pl.DataFrame,
    schemes: list[BucketScheme],
    feature_sets: dict[str, tuple[str, ...]],
    inner_split: Callable[[pl.DataFrame], tuple[pl.DataFrame, pl.DataFrame]],
) -> tuple[pl.DataFrame, dict[tuple[str, str], PredictorEvaluation]]:
    rows = []
    evaluations: dict[tuple[str, str], PredictorEvaluation] = {}
    for scheme in schemes:
        predictors: dict[str, object] = {
            "majority class": ConstantLengthPredictor.fit(train, scheme)
        }
        for label, features in feature_sets.items():
            predictors[label] = fit_length_predictor(train, scheme, features=features)
        # the richest feature set again, its bin resolution chosen on an inner split of
        # the training data (never on the test split), then refitted on all of train
        label, features = list(feature_sets.items())[-1]
        bins = select_bins_per_octave(inner_split(train), scheme, features)
        predictors[f"{label}, {bins:g} bins/octave (validated)"] = fit_length_predictor(
            train, scheme, features=features, bins_per_octave=bins
        )
        for label, predictor in predictors.items():
            ev = evaluate_predictor(predictor, test, scheme)  # type: ignore[arg-type]
            evaluations[(scheme.name, label)] = ev
            rows.append({"predictor": label, **ev.summary()})
    return pl.DataFrame(rows), evaluations


def markdown_table(frame: pl.DataFrame) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.width]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


def confusion_markdown(ev: PredictorEvaluation) -> str:
    scheme = BucketScheme(ev.edges_tokens)
    labels = [f"{b}: {lab}" for b, lab in enumerate(scheme.labels())]
    header = "| true \\ predicted | " + " | ".join(str(b) for b in range(len(labels))) + " |"
    lines = [header, "|" + "---|" * (len(labels) + 1)]
    for b, lab in enumerate(labels):
        lines.append(f"| {lab} | " + " | ".join(str(int(c)) for c in ev.confusion[b]) + " |")
    return "\n".join(lines)


def edges_text(scheme: BucketScheme) -> str:
    return ", ".join("inf" if math.isinf(e) else f"{e:.1f}" for e in scheme.edges_tokens)


def report(
    title: str,
    train: pl.DataFrame,
    test: pl.DataFrame,
    schemes: list[BucketScheme],
    feature_sets: dict[str, tuple[str, ...]],
    main: str,
    inner_split: Callable[[pl.DataFrame], tuple[pl.DataFrame, pl.DataFrame]],
) -> None:
    print(f"## {title}\n")
    print(f"train {train.height} rows, test {test.height} rows\n")
    for scheme in schemes:
        shares = np.bincount(
            scheme.assign(test.get_column("output_tokens")), minlength=scheme.n_buckets
        )
        print(
            f"- {scheme.name}: edges [{edges_text(scheme)}] tokens; test share per bucket "
            f"{np.round(shares / shares.sum(), 3).tolist()}"
        )
    table, evaluations = evaluate_all(train, test, schemes, feature_sets, inner_split)
    print()
    print(markdown_table(table.drop("n_requests")))
    print()
    for scheme in schemes:
        print(f"Confusion matrix, {main}, scheme {scheme.name} (rows true, columns predicted):\n")
        print(confusion_markdown(evaluations[(scheme.name, main)]))
        print()


def main() -> int:
    root = data_dir()
    if not root.is_dir():
        print(f"data mirror {root} not found; set ROUTEPLAY_DATA_DIR", file=sys.stderr)
        return 1
    azure = load_azure_code_conv(root)
    train, test = split_by_time(azure, TEST_FRACTION)
    cut = float(test.get_column("arrival_s").min())
    print(f"# Output-length predictor accuracy (held out, test fraction {TEST_FRACTION})\n")
    print(
        f"Azure split at arrival_s = {cut:.1f} s; test tasks: "
        f"{test.get_column('task').value_counts(sort=True).rows()}\n"
    )
    report(
        "(a) Azure 2023 code + conv, task = trace, split by time",
        train,
        test,
        azure_schemes(train),
        {
            "prompt only (no task hint)": ("prompt_tokens",),
            "task only": ("task",),
            "task + prompt": ("task", "prompt_tokens"),
        },
        main="task + prompt",
        inner_split=lambda t: split_by_time(t, TEST_FRACTION),
    )
    arxiv = load_arxiv(root)
    a_train, a_test = split_random(arxiv, TEST_FRACTION, SEED)
    report(
        f"(b) arXiv summarisation (Vidur), random split seed {SEED}",
        a_train,
        a_test,
        arxiv_schemes(a_train),
        {"prompt bins": ("prompt_tokens",)},
        main="prompt bins",
        inner_split=lambda t: split_random(t, TEST_FRACTION, SEED + 1),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
