"""Iteration clocks: Vidur's composition on hand-made tables, files, the built-in clock."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
from routeplay.estimator import (
    IterationClock,
    fit_vidur_clock,
    get_clock,
    list_clocks,
    load_clock_file,
    save_clock,
)
from routeplay.estimator._clock import builtin_clock_path

from routeplay.cli import main


def _toy(**kw: object) -> IterationClock:
    """mlp i + 1 ms at 8 (i + 1) tokens; decode batch + 0.1 K/64; prefill kv/64 + chunk/100."""
    b, k = np.meshgrid(np.arange(1, 5), np.arange(1, 4), indexing="ij")  # batch 1..4, K 64..192
    kv, c = np.meshgrid(
        np.arange(0, 3), np.arange(1, 201), indexing="ij"
    )  # kv 0..128, chunk 1..200
    args: dict[str, object] = {
        "name": "toy",
        "n_layers": 2,
        "mlp_ms": np.arange(1.0, 33.0),  # up to 256 tokens
        "decode_ms": b + 0.1 * k,
        "prefill_ms": kv + c / 100.0,
    }
    args.update(kw)
    return IterationClock(**args)  # type: ignore[arg-type]


def test_a_single_prompt_rounds_its_tokens_up_to_eight() -> None:
    clock = _toy()
    # 10 tokens -> 16 -> mlp_ms[1] = 2; prefill row kv 0, chunk 10 -> 0.1 ms; x 2 layers
    assert clock.iteration_s([(10, 0)], []) == pytest.approx(2 * (2.0 + 0.1) / 1000, rel=1e-12)
    assert clock.iteration_s([(16, 0)], []) == pytest.approx(2 * (2.0 + 0.16) / 1000, rel=1e-12)
    assert clock.iteration_s([(17, 0)], []) == pytest.approx(2 * (3.0 + 0.17) / 1000, rel=1e-12)


def test_several_prompts_are_priced_as_one_of_sqrt_sum_of_squares() -> None:
    clock = _toy()
    # 30 + 40 tokens: mlp at 72 tokens (mlp_ms[8] = 9), attention of ONE 50-token chunk
    assert clock.iteration_s([(30, 0), (40, 0)], []) == pytest.approx(
        2 * (9.0 + 0.5) / 1000, rel=1e-12
    )
    # Vidur's prefill batching overhead applies to more than one prompt only
    over = _toy(prefill_overhead=0.1)
    assert over.iteration_s([(30, 0), (40, 0)], []) == pytest.approx(
        2 * (9.0 + 0.5 * 1.1) / 1000, rel=1e-12
    )
    assert over.iteration_s([(50, 0)], []) == pytest.approx(2 * (7.0 + 0.5) / 1000, rel=1e-12)


def test_cached_prompt_tokens_sum_per_request_rounded_to_64() -> None:
    clock = _toy()
    # cached 1 -> 64 and 65 -> 128: 64 + 128 = 192 -> row 3, beyond the table: its edge (128)
    t = clock.iteration_s([(10, 1), (10, 65)], [])
    agg = round(math.sqrt(200))  # 14
    assert t == pytest.approx(2 * (3.0 + 2 + agg / 100) / 1000, rel=1e-12)
    assert clock.iteration_s([(10, 64)], []) == pytest.approx(2 * (2.0 + 1.1) / 1000, rel=1e-12)


def test_decodes_use_the_batch_and_the_mean_context_rounded_up_to_64() -> None:
    clock = _toy()
    # contexts 100, 131 -> int(mean) 115 -> 128 (column 2); batch 2; 2 tokens -> 8
    assert clock.iteration_s([], [100, 131]) == pytest.approx(2 * (1.0 + 2.2) / 1000, rel=1e-12)
    # beyond the grid (batch 9 > 4, context 1000 > 192): the edge, as a forest predicts
    assert clock.iteration_s([], [1000] * 9) == pytest.approx(2 * (2.0 + 4.3) / 1000, rel=1e-12)
    over = _toy(decode_overhead=0.1)
    assert over.iteration_s([], [64]) == pytest.approx(2 * (1.0 + 1.1) / 1000, rel=1e-12)
    assert over.iteration_s([], [64, 64]) == pytest.approx(2 * (1.0 + 2.1 * 1.1) / 1000)


def test_mixed_iterations_add_both_parts_on_the_whole_batch() -> None:
    clock = _toy()
    # 20 prompt tokens + 3 decodes = 23 -> 24 tokens (mlp 3); prefill 0.2; decode 3 + 0.1
    t = clock.iteration_s([(20, 0)], [50, 50, 50])
    assert t == pytest.approx(2 * (3.0 + 0.2 + 3.1) / 1000, rel=1e-12)


def test_a_batch_beyond_the_profile_is_refused() -> None:
    with pytest.raises(ValueError, match=r"a batch of 257 tokens exceeds the profiled range \(256"):
        _toy().iteration_s([(200, 0), (57, 0)], [])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mlp_ms", np.array([1.0, -1.0]), "mlp_ms: expected a non-empty 1-d array"),
        ("decode_ms", np.ones(3), "decode_ms: expected a non-empty 2-d array"),
        ("prefill_ms", np.full((2, 2), np.nan), "prefill_ms: expected"),
        ("n_layers", 0, "n_layers = 0; expected >= 1"),
        ("decode_overhead", -0.1, "decode_overhead = -0.1; expected >= 0"),
    ],
)
def test_bad_clocks_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _toy(**{field: value})


def test_files_round_trip_and_never_unpickle(tmp_path: Path) -> None:
    clock = _toy(decode_overhead=0.1, provenance={"seed": 3})
    back = load_clock_file(save_clock(clock, tmp_path / "toy.npz"))
    assert back.name == "toy" and back.n_layers == 2 and back.decode_overhead == 0.1
    assert back.provenance == {"seed": 3}
    for key in ("mlp_ms", "decode_ms", "prefill_ms"):
        assert np.array_equal(getattr(back, key), getattr(clock, key))
    # a planted pickle (object array) is refused, its payload never runs
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Path.touch, (str(marker),))  # type: ignore[return-value]

    planted = tmp_path / "planted.npz"
    np.savez(planted, meta=np.array([Boom()], dtype=object), mlp_ms=np.ones(2))
    with pytest.raises(ValueError, match="is not a clock file"):
        load_clock_file(planted)
    assert not marker.exists()
    # an npz of another kind names what is wrong
    other = tmp_path / "other.npz"
    np.savez(
        other,
        meta=np.array('{"format": "x"}'),
        mlp_ms=np.ones(1),
        decode_ms=np.ones((1, 1)),
        prefill_ms=np.ones((1, 1)),
    )
    with pytest.raises(
        ValueError, match="clock format 'x'; expected 'routeplay-iteration-clock/1'"
    ):
        load_clock_file(other)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not a clock file"):
        load_clock_file(tmp_path / "junk.npz")
    assert zipfile.is_zipfile(tmp_path / "toy.npz")


def test_the_built_in_clock_loads_by_name_and_by_path() -> None:
    assert list_clocks() == ["vidur-forest/llama2-7b-a100"]
    clock = get_clock("vidur-forest/llama2-7b-a100")
    assert clock.decode_ms.shape == (128, 64) and clock.prefill_ms.shape == (65, 4096)
    assert clock.max_batch_tokens == 4096 and clock.n_layers == 32
    assert clock.decode_overhead == 0.0  # Llama-2-7B is not grouped-query
    assert clock.provenance["model"] == "meta-llama/Llama-2-7b-hf"
    same = get_clock(str(builtin_clock_path("vidur-forest/llama2-7b-a100")))
    assert np.array_equal(same.prefill_ms, clock.prefill_ms)
    # a longer prompt costs more; a bigger decode batch costs more
    assert clock.iteration_s([(2000, 0)], []) > clock.iteration_s([(1000, 0)], [])
    assert clock.iteration_s([], [1000] * 64) > clock.iteration_s([], [1000] * 8)
    with pytest.raises(ValueError, match="unknown clock 'nope'; expected one of"):
        get_clock("nope")


def test_fit_clock_reproduces_the_shipped_clock(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prof = str(data_dir / "vidur_profiling")
    assert main(["estimator", "fit-clock", "--profiling-dir", prof, "--check"]) == 0
    out = tmp_path / "clock.npz"
    assert main(["estimator", "fit-clock", "--profiling-dir", prof, "--out", str(out)]) == 0
    fresh = load_clock_file(out)
    shipped = get_clock("vidur-forest/llama2-7b-a100")
    assert np.array_equal(fresh.prefill_ms, shipped.prefill_ms)
    assert np.array_equal(fresh.decode_ms, shipped.decode_ms)
    # a changed table fails the check
    save_clock(_toy(name="vidur-forest/llama2-7b-a100"), out)
    capsys.readouterr()
    assert (
        main(["estimator", "fit-clock", "--profiling-dir", prof, "--out", str(out), "--check"]) == 1
    )
    assert "differs from a fresh fit" in capsys.readouterr().err
    other = fit_vidur_clock(prof, seed=1)
    assert not np.array_equal(other.prefill_ms, shipped.prefill_ms)  # the seed matters ...
    # ... but little: the typical cell moves by well under 5 %
    assert np.median(np.abs(other.prefill_ms / shipped.prefill_ms - 1.0)) < 0.05
    assert np.median(np.abs(other.decode_ms / shipped.decode_ms - 1.0)) < 0.05
