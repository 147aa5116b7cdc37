"""The Intelligent Router paper's five-task mix: fitted lengths, classes, orderings."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from routeplay.datasets import (
    PAPER_TASKS,
    REQUEST_CLASSES,
    TASK_ORDERINGS,
    TaskMixConfig,
    TaskSpec,
    fit_task_lengths,
    generate_task_mix,
    request_class,
    validate_trace,
)
from routeplay.datasets._taskmix import (
    LINEAR_HEAVY_PROMPT_TOKENS,
    PAPER_HEAVY_DECODE_TOKENS,
    PAPER_HEAVY_PROMPT_TOKENS,
    DiscreteLogNormal,
)
from scipy import special

# Table 1 of Jain et al. (2025), typed in from the paper (docs/design.md, System A):
# task -> (mean prompt tokens, mean decode tokens, heavy-decode share).
PUBLISHED = {
    "translation": (29, 62, 0.092),
    "eli5": (30, 334, 0.582),
    "imdb": (212, 143, 0.410),
    "squad": (125, 220, 0.480),
    "wnut": (26, 64, 0.087),
}


@pytest.fixture(scope="module")
def big_mix() -> pl.DataFrame:
    return generate_task_mix(TaskMixConfig(n_requests=100_000, seed=0))


def test_paper_constants() -> None:
    assert {t.name: (t.mean_prompt_tokens, t.mean_output_tokens, t.heavy_output_share)
            for t in PAPER_TASKS} == PUBLISHED  # fmt: skip
    # 5 s of decode at 0.035 s/iteration; 0.5 s of prefill at 3.2e-4 s/token (p^2 and p).
    assert PAPER_HEAVY_DECODE_TOKENS == 143 and 142 * 0.035 < 5.0 <= 143 * 0.035
    assert PAPER_HEAVY_PROMPT_TOKENS == 40 and 3.2e-4 * 39**2 < 0.5 <= 3.2e-4 * 40**2
    assert LINEAR_HEAVY_PROMPT_TOKENS == 1563


def test_fit_matches_published_figures_exactly() -> None:
    frame = fit_task_lengths().to_frame()
    assert frame["feasible"].all()
    np.testing.assert_allclose(frame["fitted_mean_prompt_tokens"], frame["mean_prompt_tokens"],
                               rtol=1e-9)  # fmt: skip
    np.testing.assert_allclose(frame["fitted_mean_output_tokens"], frame["mean_output_tokens"],
                               rtol=1e-9)  # fmt: skip
    np.testing.assert_allclose(frame["fitted_heavy_output_share"], frame["heavy_output_share"],
                               atol=1e-8)  # fmt: skip
    # the lower-sigma root is chosen for tasks with mean below the threshold
    assert fit_task_lengths().task("translation").output.sigma < 1.2


@pytest.mark.parametrize(("mu", "sigma"), [(3.6, 1.0), (1.0, 2.5), (5.0, 0.05)])
def test_discrete_mean_equals_brute_force_sum(mu: float, sigma: float) -> None:
    # E[ceil X] = sum_{k>=0} P(X > k): summed term by term to 5e6, plus the closed-form
    # integral of the survival function beyond (E[(X - K)+]) with the trapezoid end term.
    big_k = 5_000_000
    k = np.arange(1, big_k, dtype=np.float64)
    z = (np.log(big_k) - mu) / sigma
    tail = np.exp(mu + sigma**2 / 2) * special.ndtr(sigma - z) - big_k * special.ndtr(-z)
    brute = 1.0 + special.ndtr((mu - np.log(k)) / sigma).sum() + tail + special.ndtr(-z) / 2
    np.testing.assert_allclose(DiscreteLogNormal(mu=mu, sigma=sigma).mean(), brute, rtol=1e-9)


def test_conditional_sampling_respects_bounds() -> None:
    dist = DiscreteLogNormal(mu=3.5, sigma=1.0)
    rng = np.random.default_rng(np.random.SeedSequence(0))
    heavy = dist.sample(rng, 20_000, min_tokens=143)
    light = dist.sample(rng, 20_000, max_tokens=142)
    assert heavy.min() >= 143 and light.max() <= 142 and light.min() >= 1
    # conditional mean of the light part agrees with the exact distribution
    k = np.arange(1, 143)
    pmf = dist_pmf(dist, k)
    np.testing.assert_allclose(light.mean(), (k * pmf).sum() / pmf.sum(), rtol=0.02)


def dist_pmf(dist: DiscreteLogNormal, k: np.ndarray) -> np.ndarray:
    upper = special.ndtr((np.log(k) - dist.mu) / dist.sigma)
    lower = special.ndtr((np.log(np.maximum(k - 1, 1e-300)) - dist.mu) / dist.sigma)
    return upper - lower


def test_generated_mix_matches_published_means_and_shares(big_mix: pl.DataFrame) -> None:
    stats = big_mix.group_by("task").agg(
        pl.len().alias("n"),
        pl.col("prompt_tokens").mean().alias("prompt"),
        pl.col("output_tokens").mean().alias("output"),
        (pl.col("output_tokens") >= 143).mean().alias("heavy"),
    )
    got = {row[0]: row[1:] for row in stats.iter_rows()}
    assert set(got) == set(PUBLISHED)
    for task, (prompt, output, heavy) in PUBLISHED.items():
        n, got_prompt, got_output, got_heavy = got[task]
        assert n == 20_000
        np.testing.assert_allclose(got_prompt, prompt, rtol=0.03, err_msg=task)
        np.testing.assert_allclose(got_output, output, rtol=0.03, err_msg=task)
        np.testing.assert_allclose(got_heavy, heavy, atol=0.015, err_msg=task)


def test_generated_mix_is_a_valid_poisson_trace(big_mix: pl.DataFrame) -> None:
    validate_trace(big_mix)
    assert big_mix.schema["task"] == pl.Categorical
    assert big_mix["request_id"].to_list() == list(range(big_mix.height))
    gaps = np.diff(big_mix["arrival_s"].to_numpy())
    assert big_mix.item(0, "arrival_s") == 0.0
    np.testing.assert_allclose([gaps.mean(), gaps.std()], [1 / 20, 1 / 20], rtol=0.02)


def test_prompt_cv_is_the_configured_one(big_mix: pl.DataFrame) -> None:
    cv = big_mix.group_by("task").agg(
        (pl.col("prompt_tokens").std() / pl.col("prompt_tokens").mean()).alias("cv")
    )
    # ceil() adds a little relative spread to short prompts; 0.5 is the continuous CV
    np.testing.assert_allclose(cv["cv"].to_numpy(), 0.5, atol=0.03)


def test_same_seed_same_frame_different_seed_different() -> None:
    for ordering in TASK_ORDERINGS:
        config = TaskMixConfig(n_requests=300, ordering=ordering, seed=5)
        first = generate_task_mix(config)
        assert_frame_equal(first, generate_task_mix(config))
        other = generate_task_mix(dataclasses.replace(config, seed=6))
        assert not first.equals(other)


def _classes(frame: pl.DataFrame) -> list[str]:
    return request_class(frame).cast(pl.String).to_list()


def test_all_random_has_every_class_and_exact_task_counts() -> None:
    mix = generate_task_mix(TaskMixConfig(n_requests=2000, seed=1))
    assert set(_classes(mix)) == set(REQUEST_CLASSES)
    counts = dict(mix["task"].cast(pl.String).value_counts().iter_rows())
    assert counts == {name: 400 for name in PUBLISHED}
    # tasks are interleaved, not in blocks
    tasks = mix["task"].cast(pl.String).to_numpy()
    assert (tasks[1:] != tasks[:-1]).sum() > 1000


def test_lh_hl_orderings_hold_the_same_requests_in_the_documented_order() -> None:
    n = 1001
    frames = {
        o: generate_task_mix(TaskMixConfig(n_requests=n, ordering=o, seed=2))
        for o in ("lh-hl-random", "lh-then-hl", "hl-then-lh")
    }
    n_lh, n_hl = n // 2, n - n // 2
    assert _classes(frames["lh-then-hl"]) == ["LH"] * n_lh + ["HL"] * n_hl
    assert _classes(frames["hl-then-lh"]) == ["HL"] * n_hl + ["LH"] * n_lh
    mixed = np.array(_classes(frames["lh-hl-random"]))
    assert (mixed == "LH").sum() == n_lh and (mixed == "HL").sum() == n_hl
    assert (mixed[1:] != mixed[:-1]).sum() > n // 4  # interleaved, not two blocks
    content = ["prompt_tokens", "output_tokens", "task"]
    reference = frames["lh-then-hl"].select(content).with_columns(pl.col("task").cast(pl.String))
    for frame in frames.values():
        assert_frame_equal(
            frame.select(content).with_columns(pl.col("task").cast(pl.String)).sort(content),
            reference.sort(content),
        )
        assert_frame_equal(frame.select("arrival_s"), frames["lh-then-hl"].select("arrival_s"))
    # LH comes mostly from ELI5, HL from IMDb and SQuAD (exact class probabilities)
    lh_tasks = frames["lh-then-hl"].head(n_lh)["task"].cast(pl.String).value_counts(sort=True)
    assert lh_tasks.item(0, "task") == "eli5"


def test_task_weights_select_tasks() -> None:
    mix = generate_task_mix(TaskMixConfig(n_requests=50, task_weights={"imdb": 1.0}))
    assert mix["task"].cast(pl.String).unique().to_list() == ["imdb"]


def test_request_class_thresholds_are_inclusive() -> None:
    frame = pl.DataFrame({"prompt_tokens": [39, 40, 39, 40], "output_tokens": [142, 142, 143, 143]})
    assert _classes(frame) == ["LL", "HL", "LH", "HH"]
    assert request_class(frame).dtype == pl.Enum(list(REQUEST_CLASSES))
    assert _classes(frame.with_columns(pl.col("prompt_tokens") * 10)) == ["HL", "HL", "HH", "HH"]
    custom = request_class(frame, heavy_prompt_tokens=1563, heavy_decode_tokens=10)
    assert custom.cast(pl.String).to_list() == ["LH", "LH", "LH", "LH"]


def test_request_class_median_option() -> None:
    frame = pl.DataFrame({"prompt_tokens": [1, 2, 3, 4, 5], "output_tokens": [1] * 5})
    # median 3: prompts strictly longer than the median are heavy
    assert _classes(frame) == ["LL"] * 5
    by_median = request_class(frame, heavy_prompt_tokens="median").cast(pl.String).to_list()
    assert by_median == ["LL", "LL", "LL", "HL", "HL"]


def test_median_of_the_paper_mix_equals_the_quadratic_threshold(big_mix: pl.DataFrame) -> None:
    assert big_mix["prompt_tokens"].median() == PAPER_HEAVY_PROMPT_TOKENS


def test_request_class_errors() -> None:
    frame = pl.DataFrame({"prompt_tokens": [1], "output_tokens": [1]})
    with pytest.raises(ValueError, match=re.escape(
        "heavy_prompt_tokens='mean' is invalid; expected an integer >= 1 or 'median' "
        "(paper default 40)."
    )):  # fmt: skip
        request_class(frame, heavy_prompt_tokens="mean")
    with pytest.raises(ValueError, match=re.escape(
        "heavy_decode_tokens=0 is invalid; expected an integer >= 1 (paper default 143)."
    )):  # fmt: skip
        request_class(frame, heavy_decode_tokens=0)
    with pytest.raises(ValueError, match=re.escape(
        "request_class: missing column(s) ['output_tokens']"
    )):  # fmt: skip
        request_class(frame.drop("output_tokens"))


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"ordering": "sorted"}, "ordering='sorted' is unknown; expected one of ('all-random', "
                                 "'lh-hl-random', 'lh-then-hl', 'hl-then-lh')."),
        ({"task_weights": {"chat": 1.0}}, "task_weights names unknown task(s) ['chat']; "
                                          "expected names from ['translation', 'eli5', 'imdb', "
                                          "'squad', 'wnut']."),
        ({"task_weights": {"eli5": -1.0}}, "task_weights {'eli5': -1.0} are invalid; expected "
                                           "finite weights >= 0."),
        ({"task_weights": {"eli5": 0.0}}, "task_weights={'eli5': 0.0} sum to 0"),
        ({"n_requests": 0}, "n_requests=0 is invalid; expected an integer >= 1."),
        ({"rate_per_s": float("inf")}, "rate_per_s=inf is invalid; expected a finite number > 0."),
        ({"seed": -1}, "seed=-1 is invalid; expected an integer >= 0."),
    ],
)  # fmt: skip
def test_config_errors(kwargs: dict[str, object], msg: str) -> None:
    with pytest.raises(ValueError, match=re.escape(msg)):
        TaskMixConfig(**kwargs)


def test_impossible_class_for_ordering_raises() -> None:
    config = TaskMixConfig(n_requests=10, ordering="lh-then-hl", heavy_prompt_tokens=10**7)
    with pytest.raises(ValueError, match=re.escape(
        "ordering='lh-then-hl' needs HL requests, but no task with positive weight produces "
        "them with heavy_prompt_tokens=10000000 and heavy_decode_tokens=143"
    )):  # fmt: skip
        generate_task_mix(config)


def test_infeasible_share_warns_and_keeps_the_mean() -> None:
    # mean 30 tokens cannot have 30 % of outputs >= 143 tokens with a lognormal
    spec = TaskSpec(name="toy", mean_prompt_tokens=10, mean_output_tokens=30,
                    heavy_output_share=0.30)  # fmt: skip
    with pytest.warns(UserWarning, match=re.escape(
        "task 'toy': no discretised lognormal with mean 30 output tokens has "
        "P(output >= 143) = 0.3000; using the closest achievable share"
    )):  # fmt: skip
        fit = fit_task_lengths((spec,), prompt_cv=0.31)
    row = fit.to_frame().row(0, named=True)
    assert row["feasible"] is False
    np.testing.assert_allclose(row["fitted_mean_output_tokens"], 30, rtol=1e-9)
    assert 0.0 < row["fitted_heavy_output_share"] < 0.30


def test_custom_threshold_refits_the_share() -> None:
    spec = dataclasses.replace(PAPER_TASKS[3], heavy_output_tokens=200)
    fit = fit_task_lengths((spec,), prompt_cv=0.5)
    np.testing.assert_allclose(fit.tasks[0].output.sf(200), 0.48, atol=1e-8)


def test_spec_errors() -> None:
    with pytest.raises(ValueError, match=re.escape(
        "TaskSpec 'x': heavy_output_share=58.2 is invalid; expected a fraction in [0, 1)"
    )):  # fmt: skip
        TaskSpec(name="x", mean_prompt_tokens=3, mean_output_tokens=4, heavy_output_share=58.2)
    with pytest.raises(ValueError, match=re.escape(
        "TaskSpec 'x': mean_output_tokens=1 is invalid; expected a finite mean > 1 token"
    )):  # fmt: skip
        TaskSpec(name="x", mean_prompt_tokens=3, mean_output_tokens=1, heavy_output_share=0.1)
