"""The workload-impact estimator: equations against hand-computed values, direction, errors."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from routeplay.estimator import (
    ImpactConfig,
    ImpactEstimate,
    estimate_impact,
    estimate_impact_batch,
    impact_penalty,
)


def test_equations_match_hand_computed_values() -> None:
    # p_i = 20, d_i = 100, S = [5000, 0, 1200], defaults grad1 3.2e-4, grad2 3.3e-5,
    # eps 0.5 s, decode scale 1 s, alpha 0.5, prompt_power 2. By hand:
    # T_p = 3.2e-4 * (400 + S) = [1.728, 0.128, 0.512]
    # r_p = [1 - 1.728/0.5, 1 (0.128 <= 0.5), 1 - 0.512/0.5] = [-2.456, 1, -0.024]
    # r_d = tanh(3.3e-5 * (120 - S)) = tanh([-0.16104, 0.00396, -0.03564])
    est = estimate_impact(20, 100, [5000, 0, 1200])
    assert_allclose(est.r_p, [-2.456, 1.0, -0.024], rtol=1e-12)
    expected_r_d = [math.tanh(-0.16104), math.tanh(0.00396), math.tanh(-0.03564)]
    assert_allclose(est.r_d, expected_r_d, rtol=1e-12)
    assert_allclose(est.r_mix, 0.5 * est.r_p + 0.5 * np.asarray(expected_r_d), rtol=1e-12)
    assert est.best_instance == 1


def test_eps_plateau_boundary_is_inclusive() -> None:
    # T_p = grad1 * (p^2 + S) exactly eps -> r_p = 1 (the slide's "<= eps")
    cfg = ImpactConfig(grad1_s_per_token=0.01, eps_s=1.0, prompt_power=1)
    est = estimate_impact(50, 0, [50, 51], cfg)  # T_p = 0.01 * (50 + 50) = 1.0, then 1.01
    assert est.r_p[0] == 1.0
    assert_allclose(est.r_p[1], 1.0 - 1.01 / 1.0, rtol=1e-12)


def test_prompt_power_one_is_linear_in_the_prompt() -> None:
    cfg = ImpactConfig(prompt_power=1)
    est = estimate_impact(1000, 10, [2000], cfg)
    # T_p = 3.2e-4 * (1000 + 2000) = 0.96 s -> r_p = 1 - 0.96 / 0.5
    assert_allclose(est.r_p, [1.0 - 0.96 / 0.5], rtol=1e-12)


def test_alpha_weights_the_two_terms() -> None:
    only_prefill = estimate_impact(30, 10, [100, 9000], ImpactConfig(alpha=1.0))
    only_decode = estimate_impact(30, 10, [100, 9000], ImpactConfig(alpha=0.0))
    assert_allclose(only_prefill.r_mix, only_prefill.r_p)
    assert_allclose(only_decode.r_mix, only_decode.r_d)


def test_idle_instance_beats_loaded_one_and_reward_direction() -> None:
    est = estimate_impact(500, 200, [40_000, 0, 10_000])
    assert est.best_instance == 1
    # rewards: higher = less impact, so every term ranks idle > lightly > heavily loaded
    for r in (est.r_p, est.r_d, est.r_mix):
        assert r[1] >= r[2] >= r[0]
    assert est.r_mix[0] < est.r_mix[2] < est.r_mix[1]


def test_ties_go_to_lowest_index() -> None:
    assert estimate_impact(10, 10, [300, 100, 100]).best_instance == 1
    assert estimate_impact(10, 10, [0, 0, 0, 0]).best_instance == 0


def test_relative_cost_favours_a_faster_instance_with_equal_load() -> None:
    est = estimate_impact(100, 100, [20_000, 20_000], relative_cost=[1.0, 0.5])
    assert est.best_instance == 1
    # relative_cost 0.5 halves both gradients on instance 1
    assert_allclose(est.r_d[1], math.tanh(0.5 * 3.3e-5 * (200 - 20_000)), rtol=1e-12)
    assert_allclose(est.r_p[1], 1.0 - 0.5 * 3.2e-4 * (100**2 + 20_000) / 0.5, rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    p=st.integers(1, 20_000),
    d=st.integers(0, 4_000),
    loads=st.lists(st.integers(0, 200_000), min_size=1, max_size=8),
)
def test_properties_bounds_argmax_and_constant_request_term(
    p: int, d: int, loads: list[int]
) -> None:
    est = estimate_impact(p, d, loads)
    assert est.r_p.shape == est.r_d.shape == est.r_mix.shape == (len(loads),)
    assert (est.r_p <= 1.0).all()
    assert ((est.r_d >= -1.0) & (est.r_d <= 1.0)).all()
    assert est.best_instance == int(np.argmax(est.r_mix))
    # the minimum-impact instance holds the fewest tokens (both terms fall with S)
    assert loads[est.best_instance] == min(loads)
    # p_i + d_i is the same for every instance: changing d_i never changes the argmax
    assert estimate_impact(p, d + 777, loads).best_instance == est.best_instance
    assert impact_penalty(est, est.best_instance) == 0.0
    for m in range(len(loads)):
        assert impact_penalty(est, m) >= 0.0


def test_batch_matches_single_calls_row_by_row() -> None:
    p = np.array([10, 800, 3000])
    d = np.array([5.0, 120.0, 40.0])
    s = np.array([[0, 500, 9000], [7000, 100, 100], [300, 300, 0]])
    batch = estimate_impact_batch(p, d, s)
    assert batch.best_instance.tolist() == [0, 1, 2]
    assert len(batch) == 3
    for k in range(3):
        one = estimate_impact(p[k], d[k], s[k])
        assert_allclose(batch.r_mix[k], one.r_mix, rtol=1e-15)
        assert batch[k].best_instance == one.best_instance
    shared = estimate_impact_batch(p, d, s[0])
    assert shared.r_mix.shape == (3, 3)
    frame = batch.to_frame()
    assert frame.height == 9
    assert frame.filter("is_best").get_column("instance").to_list() == [0, 1, 2]


def test_penalty_definition() -> None:
    est = estimate_impact(10, 10, [0, 4000, 100])
    assert impact_penalty(est, 0) == 0.0
    assert impact_penalty(est, 1) == pytest.approx(est.r_mix[0] - est.r_mix[1], rel=1e-15)
    assert impact_penalty(est, 1) > impact_penalty(est, 2) > 0.0
    assert impact_penalty(est, np.int64(2)) == impact_penalty(est, 2)


def test_to_frame_one_row_per_instance() -> None:
    est = estimate_impact(10, 10, [100, 0])
    frame = est.to_frame()
    assert frame.columns == ["instance", "r_p", "r_d", "r_mix", "is_best"]
    assert frame.get_column("is_best").to_list() == [False, True]
    assert_allclose(frame.get_column("r_mix").to_numpy(), est.r_mix)


def test_config_is_frozen_and_replaceable() -> None:
    cfg = ImpactConfig()
    assert (cfg.grad1_s_per_token, cfg.grad2_s_per_token, cfg.alpha) == (3.2e-4, 3.3e-5, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.alpha = 0.1  # type: ignore[misc]
    assert dataclasses.replace(cfg, eps_s=2.0).eps_s == 2.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"alpha": -0.1},
            "ImpactConfig.alpha = -0.1; expected a weight in [0, 1]. "
            "Fix: pass e.g. alpha=0.5 (the paper's value).",
        ),
        ({"eps_s": 0.0}, "ImpactConfig.eps_s = 0.0; expected a finite time > 0 seconds."),
        (
            {"decode_scale_s": float("inf")},
            "ImpactConfig.decode_scale_s = inf; expected a finite time > 0 seconds.",
        ),
        (
            {"grad1_s_per_token": -1e-4},
            "ImpactConfig.grad1_s_per_token = -0.0001; expected a finite gradient >= 0",
        ),
        ({"prompt_power": 3}, "ImpactConfig.prompt_power = 3; expected 1 or 2."),
    ],
)
def test_config_errors(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ImpactConfig(**kwargs)  # type: ignore[arg-type]


def test_input_errors() -> None:
    with pytest.raises(ValueError, match=re.escape("tokens_in_system has value -5.0 at index 1;")):
        estimate_impact(10, 10, [0, -5])
    with pytest.raises(
        ValueError, match=re.escape("tokens_in_system has shape (0,); expected (m,)")
    ):
        estimate_impact(10, 10, [])
    with pytest.raises(ValueError, match=re.escape("prompt_tokens has value nan;")):
        estimate_impact(float("nan"), 10, [0])
    with pytest.raises(ValueError, match=re.escape("must be scalars, got shapes (2,) and ()")):
        estimate_impact([1, 2], 10, [0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("relative_cost has shape (1,); expected (2,)")):
        estimate_impact(10, 10, [0, 0], relative_cost=[1.0])
    with pytest.raises(
        ValueError, match=re.escape("tokens_in_system has shape (3, 2); expected (2, m)")
    ):
        estimate_impact_batch([1, 2], [1, 2], np.zeros((3, 2)))
    with pytest.raises(
        ValueError, match=re.escape("tokens_in_system has value -1.0 at index (1, 0);")
    ):
        estimate_impact_batch([1, 2], [1, 2], [[0, 0], [-1, 0]])


def test_penalty_errors() -> None:
    est = estimate_impact(10, 10, [0, 0])
    with pytest.raises(
        ValueError, match=re.escape("chosen_instance = -1; expected an instance index in range(2)")
    ):
        impact_penalty(est, -1)
    with pytest.raises(ValueError, match=re.escape("chosen_instance = 1.0; expected an int")):
        impact_penalty(est, 1.0)  # type: ignore[arg-type]
    assert isinstance(est, ImpactEstimate)
