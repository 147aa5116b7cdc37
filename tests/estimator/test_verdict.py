from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from routeplay.estimator import (
    ComparisonResult,
    Verdict,
    compare_routers,
    compute_verdict,
    episodes_needed,
    format_change,
    format_p,
    format_percent,
)
from scipy import stats

# Per-episode load (scales every latency of an episode) and a small per-episode jitter:
# paired differences vary a little, so the t-tests are not degenerate.
SCALE = [1.0, 1.1, 0.95, 1.05, 1.0, 1.15, 0.9, 1.05]
JITTER = [0.00, 0.01, -0.01, 0.02, -0.02, 0.01, 0.0, -0.01]


def _episodes(short: float, long: float, jitter: float = 0.0, n: int = 8) -> list[list[float]]:
    """Two requests per episode (a short and a long one), scaled by the episode's load."""
    return [
        [short * s * (1 + jitter * j), long * s * (1 + jitter * j / 2)]
        for s, j in zip(SCALE[:n], JITTER[:n], strict=True)
    ]


def _requests(per_router: dict[str, list[list[float]]]) -> pl.DataFrame:
    rows = [
        {"router": router, "episode": e, "e2e_s": value}
        for router, episodes in per_router.items()
        for e, values in enumerate(episodes)
        for value in values
    ]
    return pl.DataFrame(rows)


def _compare(
    frame: pl.DataFrame, statistics: tuple[str, ...] = ("mean", "p99")
) -> ComparisonResult:
    return compare_routers(frame, baseline="rr", statistics=statistics, n_boot=500, seed=0)


def _summary(frame: pl.DataFrame) -> pl.DataFrame:
    """Like router_summary_table: mean over episodes of the per-episode statistics."""
    per_episode = frame.group_by("router", "episode", maintain_order=True).agg(
        pl.col("e2e_s").mean().alias("e2e_s_mean"),
        pl.col("e2e_s").quantile(0.99, interpolation="linear").alias("e2e_s_p99"),
    )
    return per_episode.group_by("router", maintain_order=True).agg(
        pl.len().alias("n_episodes"), pl.col("e2e_s_mean").mean(), pl.col("e2e_s_p99").mean()
    )


def _assert_serialisable(verdict: Verdict) -> None:
    json.dumps(verdict.to_dict(), allow_nan=False)
    text = verdict.to_text()
    assert "<" not in text.replace("p < ", "") and ">" not in text
    assert text.splitlines()[0] == verdict.headline
    assert text.splitlines()[1:] == [f"  {line}" for line in verdict.lines]


def test_formatting_helpers() -> None:
    assert format_percent(-0.0321) == "−3.2 %"
    assert format_percent(0.0) == "0.0 %"
    assert format_percent(-0.00004) == "0.00 %"  # rounds to zero: no sign
    assert format_percent(float("nan")) == "n/a"
    assert format_change(-0.0321, -0.041, -0.023) == "−3.2 % [−4.1, −2.3]"
    assert format_change(0.01, float("nan"), 0.02) == "+1.0 %"
    assert format_p(0.049999) == "p = 0.05"
    assert format_p(0.00099, label="Holm p") == "Holm p < 0.001"
    assert format_p(None) == "p n/a"


def test_router_wins_significantly_and_leads_the_runner_up() -> None:
    # "fast" halves the short requests (lowest mean), "tail" trims the long ones (lowest p99)
    frame = _requests(
        {
            "rr": _episodes(1.0, 10.0),
            "fast": _episodes(0.2, 10.0, 1.0),
            "tail": _episodes(1.5, 9.0, -1.0),
        }
    )
    comparison = _compare(frame)
    verdict = compute_verdict(comparison)
    assert verdict.headline == (
        "fast has the lowest mean end-to-end latency, 7.3 % lower than rr "
        "(significant, Holm p < 0.001)."
    )
    assert verdict.lines == (
        "Mean E2E: lowest fast at 5.229 s; vs rr 5.638 s: −7.3 % [−7.7, −6.9], "
        "Holm p < 0.001: significantly faster.",
        "fast vs the runner-up tail (5.38 s): −2.8 % [−3.8, −1.9], p < 0.001: a real lead.",
        "p99 E2E: lowest tail at 9.146 s; vs rr 10.16 s: −10.0 % [−10.3, −9.5], "
        "Holm p < 0.001: significantly faster.",
        "Episodes: 2 would be needed to detect fast's −7.3 % in mean E2E with 80 % power "
        "(alpha 0.05); this run has 8: enough.",
    )
    # the numbers are the comparison's
    row = comparison.get("fast", "e2e_s", "mean")
    assert verdict.mean is not None and verdict.mean.versus_baseline is not None
    assert verdict.mean.versus_baseline.relative_improvement == row.relative_improvement
    assert verdict.mean.versus_baseline.ci_low == row.ci_low
    assert verdict.mean.versus_baseline.p_value == row.p_ttest_holm
    assert verdict.mean.routers == ("fast",) and verdict.p99 is not None
    assert verdict.p99.routers == ("tail",)
    # the runner-up comparison is paired over the per-episode means
    pe = comparison.per_episode.filter(pl.col("statistic") == "mean")
    fast = pe.filter(pl.col("router") == "fast")["value_s"].to_numpy()
    tail = pe.filter(pl.col("router") == "tail")["value_s"].to_numpy()
    runner = verdict.mean.runner_up
    assert runner is not None and runner.reference == "tail" and not runner.holm
    assert runner.relative_improvement == pytest.approx(1 - fast.mean() / tail.mean())
    assert runner.p_value == pytest.approx(stats.ttest_rel(tail, fast).pvalue)
    assert runner.ci_low is not None and runner.ci_high is not None
    assert runner.ci_low < runner.relative_improvement < runner.ci_high
    assert verdict.learned == () and verdict.best_heuristic is None
    assert verdict.episodes is not None and verdict.episodes.enough is True
    data = verdict.to_dict()
    assert data["lowest_mean"]["routers"] == ["fast"]
    assert data["lowest_p99"]["versus_baseline"]["router"] == "tail"
    assert data["alpha"] == 0.05
    _assert_serialisable(verdict)


def test_baseline_wins() -> None:
    frame = _requests(
        {
            "rr": _episodes(1.0, 10.0),
            "slow": _episodes(1.3, 10.5, 1.0),
            "slower": _episodes(1.5, 11.0, -1.0),
        }
    )
    verdict = compute_verdict(_compare(frame))
    assert verdict.headline == (
        "The baseline rr has the lowest mean end-to-end latency; no router beats it "
        "(closest: slow, 7.3 % slower)."
    )
    assert verdict.lines[0] == (
        "Mean E2E: lowest rr (baseline) at 5.638 s; closest slow 6.049 s vs rr: "
        "+7.3 % [+6.7, +7.8], Holm p < 0.001: significantly slower."
    )
    assert verdict.lines[1].startswith("p99 E2E: lowest rr (baseline) at 10.16 s; closest slow")
    assert verdict.mean is not None and verdict.mean.routers == ("rr",)
    assert verdict.mean.runner_up is None  # the closest router is already compared
    assert len(verdict.lines) == 3 and verdict.lines[2].startswith("Episodes: ")
    _assert_serialisable(verdict)


def test_learned_router_behind_the_best_heuristic() -> None:
    frame = _requests(
        {
            "rr": _episodes(1.0, 10.0),
            "jsq": _episodes(0.8, 9.5, 1.0),
            "cql": _episodes(1.2, 10.0, -1.0),
        }
    )
    comparison = _compare(frame)
    verdict = compute_verdict(comparison, learned=["cql"])
    assert verdict.headline == (
        "jsq has the lowest mean end-to-end latency, 6.3 % lower than rr "
        "(significant, Holm p < 0.001)."
    )
    assert verdict.best_heuristic == "jsq"
    assert (
        "Learned router cql: mean E2E 5.739 s, +8.7 % [+7.7, +9.8] vs the best heuristic "
        "jsq (5.28 s), p < 0.001: significantly slower."
    ) in verdict.lines
    (cql,) = verdict.learned
    pe = comparison.per_episode.filter(pl.col("statistic") == "mean")
    learned = pe.filter(pl.col("router") == "cql")["value_s"].to_numpy()
    best = pe.filter(pl.col("router") == "jsq")["value_s"].to_numpy()
    assert cql.change == pytest.approx(learned.mean() / best.mean() - 1)
    assert cql.p_value == pytest.approx(stats.ttest_rel(best, learned).pvalue)
    assert cql.significant is True and cql.outcome() == "significantly slower"
    assert verdict.to_dict()["learned"][0]["reference"] == "jsq"
    # no runner-up line: the runner-up of jsq is the baseline (already compared)
    assert not any("runner-up" in line for line in verdict.lines)


def test_learned_router_compared_with_the_baseline_when_it_is_the_best_heuristic() -> None:
    frame = _requests(
        {"rr": _episodes(1.0, 10.0), "a": _episodes(1.1, 10.2, 1.0), "b": _episodes(1.2, 9.9, -1.0)}
    )
    verdict = compute_verdict(_compare(frame), learned=["a", "b"])
    assert verdict.best_heuristic == "rr"
    assert [c.router for c in verdict.learned] == ["a", "b"]
    assert all(c.holm and c.reference == "rr" for c in verdict.learned)  # two learned: Holm
    assert "Holm p" in verdict.lines[-2] and verdict.lines[-2].startswith("Learned router b:")


def test_too_few_episodes() -> None:
    # 3 episodes, a 1 % effect that varies a lot from episode to episode
    frame = _requests(
        {
            "rr": [[1.0, 3.0], [1.0, 3.0], [1.0, 3.0]],
            "jsq": [[0.95, 2.9], [1.0, 3.04], [0.97, 2.96]],
        }
    )
    comparison = _compare(frame, statistics=("mean",))
    verdict = compute_verdict(comparison)
    row = comparison.get("jsq")
    needed = episodes_needed(row.relative_improvement, row.sd_episode_relative_improvement)
    assert needed > 3
    assert verdict.episodes is not None
    assert verdict.episodes.n_needed == needed and verdict.episodes.enough is False
    assert verdict.lines[-1] == (
        f"Episodes: {needed} would be needed to detect jsq's −1.5 % in mean E2E with "
        "80 % power (alpha 0.05); this run has 3: too few, treat the result as preliminary."
    )
    assert verdict.headline == (
        "jsq has the lowest mean end-to-end latency, 1.5 % lower than rr, but the "
        f"difference is not significant (p = {row.p_ttest_holm:.2g})."
    )
    assert verdict.p99 is None  # neither compared nor in a summary
    _assert_serialisable(verdict)


def test_ties() -> None:
    same = _episodes(1.0, 10.0)
    frame = _requests({"rr": same, "twin": same, "slow": _episodes(1.2, 10.5, 1.0)})
    verdict = compute_verdict(_compare(frame, statistics=("mean",)))
    assert verdict.headline == (
        "rr (baseline) and twin tie for the lowest mean end-to-end latency (5.638 s)."
    )
    assert verdict.lines[0] == (
        "Mean E2E: lowest rr (baseline) and twin tie at 5.638 s; vs rr 5.638 s: "
        "0.0 % [0.0, 0.0], Holm p = 1: not significant."
    )
    assert verdict.mean is not None and verdict.mean.routers == ("rr", "twin")
    # a tie without the baseline still states the change against it
    frame = _requests(
        {"rr": _episodes(1.0, 10.0), "a": _episodes(0.8, 9.0), "b": _episodes(0.8, 9.0)}
    )
    verdict = compute_verdict(_compare(frame, statistics=("mean",)))
    # every episode: mean (0.8 + 9) / 2 = 4.9 vs (1 + 10) / 2 = 5.5 -> 1 - 4.9 / 5.5 = 10.9 %
    assert verdict.headline == (
        "a and b tie for the lowest mean end-to-end latency, 10.9 % lower than rr "
        "(significant, Holm p < 0.001)."
    )


def test_p99_from_the_summary_when_not_compared_and_missing_values() -> None:
    frame = _requests(
        {"rr": _episodes(1.0, 10.0), "fast": _episodes(0.5, 10.0, 1.0), "tail": _episodes(1.0, 9.0)}
    )
    comparison = _compare(frame, statistics=("mean",))
    summary = _summary(frame)
    verdict = compute_verdict(comparison, summary)
    # p99 of two values a < b is a + 0.99 (b - a): tail 8.92, rr 9.91 (x mean load 1.025)
    assert verdict.p99 is not None and verdict.p99.source == "summary"
    assert verdict.p99.routers == ("tail",)
    assert verdict.lines[2] == (
        "p99 E2E: lowest tail at 9.143 s; vs rr 10.16 s: −10.0 % (from the router table; "
        "p99 not compared statistically in this run)."
    )
    # null / NaN values in the summary are skipped, not ranked
    holes = summary.with_columns(
        pl.when(pl.col("router") == "tail")
        .then(None)
        .otherwise(pl.col("e2e_s_p99"))
        .alias("e2e_s_p99")
    )
    assert compute_verdict(comparison, holes).p99.routers == ("fast",)  # type: ignore[union-attr]
    nan = summary.with_columns(pl.lit(float("nan")).alias("e2e_s_p99"))
    assert compute_verdict(comparison, nan).p99 is None


def test_only_the_mean_in_the_summary_and_no_mean_compared() -> None:
    frame = _requests({"rr": _episodes(1.0, 10.0), "tail": _episodes(1.0, 9.0, 1.0)})
    comparison = _compare(frame, statistics=("p99",))
    verdict = compute_verdict(comparison, _summary(frame))
    assert verdict.mean is not None and verdict.mean.source == "summary"
    assert verdict.headline == (
        "tail has the lowest mean end-to-end latency, 9.1 % lower than rr "
        "(not tested statistically)."
    )
    assert verdict.episodes is None  # the mean was not tested
    verdict = compute_verdict(comparison)  # without a summary: the p99 leads the headline
    assert verdict.mean is None and verdict.headline.startswith(
        "tail has the lowest p99 end-to-end latency, 10.0 % lower than rr (significant"
    )
    assert verdict.episodes is not None and verdict.episodes.statistic == "p99"


def test_one_router_besides_the_baseline_and_no_learned_router() -> None:
    frame = _requests({"rr": _episodes(1.0, 10.0), "jsq": _episodes(0.9, 9.8, 1.0)})
    verdict = compute_verdict(_compare(frame))
    assert verdict.mean is not None and verdict.mean.versus_baseline is not None
    assert not verdict.mean.versus_baseline.holm  # a family of one: no adjustment
    assert "Holm" not in verdict.headline and "(significant, p " in verdict.headline
    assert verdict.mean.runner_up is None and verdict.learned == ()
    assert [line.split(":")[0] for line in verdict.lines] == ["Mean E2E", "p99 E2E", "Episodes"]


def test_episode_check_edge_cases() -> None:
    # identical every episode: the change is exactly 0, nothing to detect
    same = _episodes(1.0, 10.0)
    verdict = compute_verdict(_compare(_requests({"rr": same, "twin": same})))
    assert verdict.episodes is not None and verdict.episodes.n_needed is None
    assert verdict.episodes.reason == (
        "the observed change is exactly 0: there is no effect to detect"
    )
    assert verdict.lines[-1] == (
        "Episodes: this run has 8; the number needed to detect twin's 0.0 % in mean E2E is "
        "unknown: the observed change is exactly 0: there is no effect to detect."
    )
    # the same relative change in every episode: SD 0, any 2 episodes show it
    frame = _requests({"rr": _episodes(1.0, 10.0), "x": _episodes(0.5, 5.0)})
    check = compute_verdict(_compare(frame)).episodes
    assert check is not None and check.sd == pytest.approx(0.0, abs=1e-12)
    assert check.n_needed == 2 and check.enough is True


def test_errors_name_the_problem() -> None:
    comparison = _compare(_requests({"rr": _episodes(1.0, 10.0), "x": _episodes(0.9, 9.0)}))
    with pytest.raises(ValueError, match=r"metric 'ttft_s' was not compared.*\['e2e_s'\]"):
        compute_verdict(comparison, metric="ttft_s")
    with pytest.raises(ValueError, match=r"learned router\(s\) \['cql'\] are not compared"):
        compute_verdict(comparison, learned=["cql"])
    with pytest.raises(ValueError, match=r"alpha = 1.5; expected a number in \(0, 1\)"):
        compute_verdict(comparison, alpha=1.5)


def test_method_states_alpha_and_coverage() -> None:
    comparison = _compare(_requests({"rr": _episodes(1.0, 10.0), "x": _episodes(0.9, 9.0, 1.0)}))
    verdict = compute_verdict(comparison, alpha=0.01)
    assert "[95 % CI]" in verdict.method and "p < 0.01" in verdict.method
    assert "8 paired episodes" in verdict.method
    assert verdict.to_dict()["alpha"] == 0.01 and math.isfinite(verdict.confidence)
    assert np.isclose(verdict.confidence, 0.95)


def test_enough_by_the_power_estimate_but_not_significant_is_not_called_enough() -> None:
    # Every episode shows the same -1 % (SD 0: the power estimate says 2 episodes do), but
    # the episodes' loads differ 10x, so the paired t-test on seconds (0.02 s and 0.2 s)
    # is far from significant. Before, the verdict called 2 episodes "enough".
    frame = _requests({"rr": [[1.0, 3.0], [10.0, 30.0]], "jsq": [[0.99, 2.97], [9.9, 29.7]]})
    comparison = _compare(frame, statistics=("mean",))
    verdict = compute_verdict(comparison)
    assert verdict.episodes is not None and verdict.episodes.n_needed == 2
    assert comparison.get("jsq").p_ttest_holm > 0.05
    assert verdict.lines[-1] == (
        "Episodes: 2 would be needed to detect jsq's −1.0 % in mean E2E with 80 % power "
        "(alpha 0.05); this run has 2: enough by this estimate, yet the difference is not "
        "significant, so the estimate (from so few episodes) is not to be trusted: run more "
        "episodes."
    )
    _assert_serialisable(verdict)
