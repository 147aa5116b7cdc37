"""LinearLatencyModel: the iteration formula, vectorisation, closed forms, validation."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from routeplay.estimator import LinearLatencyModel, get_preset

M = LinearLatencyModel(
    intercept_s=0.01,
    prefill_batch_s=-0.003,
    prefill_s_per_token=6e-5,
    prefill_s_per_token2=5e-9,
    decode_s_per_seq=4e-5,
    decode_s_per_context_token=3e-7,
)


def test_iteration_time_by_hand() -> None:
    # 0.01 - 0.003 + 6e-5*512 + 5e-9*512*(512+128) + 4e-5*8 + 3e-7*4000
    expected = 0.01 - 0.003 + 0.03072 + 0.0016384 + 0.00032 + 0.0012
    got = M.iteration_time_s(
        prefill_tokens=512,
        prefill_sq_tokens=512 * 640,
        n_decode_seqs=8,
        decode_context_tokens=4000,
    )
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-12)
    # the prefill fixed cost only applies when there is prefill work
    assert M.decode_iteration_time_s(8, 4000) == pytest.approx(0.01 + 0.00032 + 0.0012, rel=1e-12)


def test_empty_batch_takes_no_time() -> None:
    assert (
        M.iteration_time_s(
            prefill_tokens=0, prefill_sq_tokens=0, n_decode_seqs=0, decode_context_tokens=0
        )
        == 0.0
    )


def test_vectorised_equals_scalar_calls() -> None:
    p = np.array([0, 64, 0, 2048])
    n = np.array([3, 0, 0, 17])
    ctx = np.array([900, 0, 0, 17 * 1000])
    vec = M.iteration_time_s(
        prefill_tokens=p, prefill_sq_tokens=p * p, n_decode_seqs=n, decode_context_tokens=ctx
    )
    one = [
        M.iteration_time_s(
            prefill_tokens=int(a),
            prefill_sq_tokens=int(a * a),
            n_decode_seqs=int(b),
            decode_context_tokens=int(c),
        )
        for a, b, c in zip(p, n, ctx, strict=True)
    ]
    np.testing.assert_allclose(vec, one, rtol=1e-12)
    assert vec[2] == 0.0


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 64), ctx=st.integers(0, 10_000), k=st.integers(0, 300))
def test_decode_run_closed_form_matches_the_loop(n: int, ctx: int, k: int) -> None:
    loop = sum(float(M.decode_iteration_time_s(n, ctx + n * i)) for i in range(k))
    assert float(M.decode_run_time_s(n, ctx, k)) == pytest.approx(loop, rel=1e-9, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(
    p=st.integers(1, 4000),
    out=st.integers(1, 300),
    others=st.integers(0, 20),
    other_ctx=st.integers(0, 20_000),
)
def test_request_time_is_prefill_plus_its_decode_iterations(
    p: int, out: int, others: int, other_ctx: int
) -> None:
    prefill = M.iteration_time_s(
        prefill_tokens=p,
        prefill_sq_tokens=p * p,
        n_decode_seqs=others,
        decode_context_tokens=other_ctx,
    )
    decode = sum(
        float(M.decode_iteration_time_s(others + 1, other_ctx + p + 1 + i)) for i in range(out - 1)
    )
    got = M.request_time_s(p, out, n_other_seqs=others, other_context_tokens=other_ctx)
    assert float(got) == pytest.approx(float(prefill) + decode, rel=1e-9)


def test_request_time_grows_with_load_on_a_preset() -> None:
    m = get_preset("llama2-7b/a100")
    loads = m.request_time_s(
        500,
        100,
        n_other_seqs=np.array([0, 8, 32]),
        other_context_tokens=np.array([0, 8 * 800, 32 * 800]),
    )
    assert np.all(np.diff(loads) > 0)


def test_from_throughput() -> None:
    m = LinearLatencyModel.from_throughput(5000.0)
    assert m.name == "throughput-5000tok/s"
    assert float(m.request_time_s(1000, 1)) == pytest.approx(0.2, rel=1e-12)
    with pytest.raises(ValueError, match=re.escape("tokens_per_s = 0.0; expected a positive rate")):
        LinearLatencyModel.from_throughput(0.0)


def test_validation_errors() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "LinearLatencyModel.decode_s_per_context_token = nan; expected a finite number"
        ),
    ):
        LinearLatencyModel(
            intercept_s=0.0,
            prefill_s_per_token=0.0,
            prefill_s_per_token2=0.0,
            decode_s_per_seq=0.0,
            decode_s_per_context_token=float("nan"),
        )
    with pytest.raises(
        ValueError, match=re.escape("LinearLatencyModel has a negative base cost: intercept_s=-0.1")
    ):
        LinearLatencyModel(
            intercept_s=-0.1,
            prefill_s_per_token=0.0,
            prefill_s_per_token2=0.0,
            decode_s_per_seq=0.0,
            decode_s_per_context_token=0.0,
        )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "decode_s_per_context_token",
            -1.0,
            "LinearLatencyModel.decode_s_per_context_token = -1.0; expected a value >= 0",
        ),
        (
            "prefill_s_per_token2",
            -1e-9,
            "LinearLatencyModel.prefill_s_per_token2 = -1e-09; expected a value >= 0",
        ),
        (
            "prefill_batch_s",
            -0.5,
            "LinearLatencyModel: intercept_s + prefill_batch_s = -0.49 (intercept_s=0.01, "
            "prefill_batch_s=-0.5); expected >= 0",
        ),
    ],
)
def test_negative_slopes_and_fixed_costs_are_refused(
    field: str, value: float, message: str
) -> None:
    # Each of these replayed before and reported negative latencies (-107,159 s mean E2E).
    coefficients = dict(
        intercept_s=0.01,
        prefill_s_per_token=1e-4,
        prefill_s_per_token2=0.0,
        decode_s_per_seq=1e-4,
        decode_s_per_context_token=0.0,
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        LinearLatencyModel(**{**coefficients, field: value})


def test_a_negative_prefill_batch_cost_within_the_intercept_is_allowed() -> None:
    # the fitted A100 preset has prefill_batch_s = -0.0029 s beside a 0.0100 s intercept
    m = LinearLatencyModel(
        intercept_s=0.01,
        prefill_s_per_token=1e-4,
        prefill_s_per_token2=0.0,
        decode_s_per_seq=1e-4,
        decode_s_per_context_token=0.0,
        prefill_batch_s=-0.003,
    )
    assert m.prefill_batch_s == -0.003
