"""Planted pickles: loading a router or resuming a run never unpickles them.

Each planted file would create a marker file if anything unpickled it (``__reduce__``
returns ``(Path.touch, (marker,))``). The tests assert that the marker never appears,
that the error is one line naming the file and the fix, and that the legitimate
``trust=True`` path still works.
"""

from __future__ import annotations

import json
import pathlib
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from d3rlpy.logging import NoopAdapterFactory
from rl_fakes import make_frame
from routeplay.offline_rl import (
    RoutingDataset,
    TrainConfig,
    TrainResult,
    build_dataset,
    load_router,
    save_router,
    train_router,
)
from routeplay.replay.rl._observation import ObservationLayout

from routeplay.cli import main

LAYOUT = ObservationLayout(n_instances=2, n_prompt_buckets=2, n_decode_buckets=1)
TINY: dict[str, Any] = {
    "hidden_units": (8,),
    "batch_size": 8,
    "n_steps": 10,
    "n_steps_per_epoch": 5,
    "checkpoint_every_steps": 5,
    "target_update_interval": 5,
}


class Planted:
    """Unpickling this object creates ``marker`` (stands for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (self.marker,))


def _plant(path: Path, marker: Path, kind: str) -> None:
    """Write a file at ``path`` that runs ``marker.touch()`` when unpickled."""
    if kind == "pickle":
        path.write_bytes(pickle.dumps(Planted(marker)))
    else:  # torch.save's zip format, as a real checkpoint or .d3 would be
        torch.save({"q_funcs": Planted(marker)}, path)
    assert not marker.exists()


def _one_line(text: str) -> str:
    assert "\n" not in text.strip() and "Traceback" not in text, text
    return text


@pytest.fixture(scope="module")
def dataset() -> RoutingDataset:
    frame = make_frame(n_episodes=2, n_steps=8, obs_size=LAYOUT.size, n_actions=3, seed=5)
    return build_dataset(frame, n_actions=3)


@pytest.fixture(scope="module")
def trained(dataset: RoutingDataset, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    run = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(algorithm="cql", **TINY)
    return train_router(cfg, dataset, run_dir=run, logger_adapter=NoopAdapterFactory())


@pytest.fixture()
def folder(trained: TrainResult, tmp_path: Path) -> Path:
    return save_router(trained, tmp_path / "router", layout=LAYOUT)


def test_prefer_d3_without_trust_refuses_before_unpickling(folder: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    _plant(folder / "model.d3", marker, "pickle")
    with pytest.raises(ValueError) as info:
        load_router(folder, prefer="d3")
    message = _one_line(str(info.value))
    assert not marker.exists()
    assert message.startswith(
        f"load_router(prefer='d3') would unpickle {str(folder / 'model.d3')!r}"
    )
    assert "Python pickle" in message and "trust=True" in message
    assert "prefer='torchscript'" in message


@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
def test_trusted_folder_with_a_replaced_d3_file_is_refused_by_its_hash(
    folder: Path, tmp_path: Path, kind: str
) -> None:
    marker = tmp_path / "ran"
    _plant(folder / "model.d3", marker, kind)
    with pytest.raises(ValueError) as info:
        load_router(folder, prefer="d3", trust=True)
    message = _one_line(str(info.value))
    assert not marker.exists()
    assert "but router.json records" in message and "was not loaded" in message


def test_trust_true_loads_the_legitimate_d3_file(folder: Path, trained: TrainResult) -> None:
    router = load_router(folder, prefer="d3", trust=True)
    obs = np.random.default_rng(1).random((30, LAYOUT.size), dtype=np.float32)
    assert [router.action_index(o) for o in obs] == trained.algo.predict(obs).tolist()


@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
def test_default_load_never_unpickles_a_planted_policy_file(
    folder: Path, tmp_path: Path, kind: str
) -> None:
    marker = tmp_path / "ran"
    _plant(folder / "policy.pt", marker, kind)
    meta = json.loads((folder / "router.json").read_text())
    meta.pop("sha256", None)  # as in a folder saved before hashes were recorded
    (folder / "router.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError) as info:
        load_router(folder)
    message = _one_line(str(info.value))
    assert not marker.exists()
    assert message.startswith(f"{str(folder / 'policy.pt')!r} is not a TorchScript archive")
    assert "nothing in it was run" in message


@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
def test_resume_never_unpickles_a_planted_checkpoint(
    dataset: RoutingDataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    cfg = TrainConfig(algorithm="cql", **TINY)
    run = tmp_path / "run"

    def crash_at_7(done: int) -> None:
        if done == 7:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        train_router(cfg, dataset, run_dir=run, callback=crash_at_7,
                     logger_adapter=NoopAdapterFactory())  # fmt: skip
    marker = tmp_path / "ran"
    _plant(run / "checkpoint" / "model.pt", marker, kind)
    # the variable that makes torch.load unpickle anything when weights_only is not given
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ValueError) as info:
        train_router(cfg, dataset, run_dir=run, logger_adapter=NoopAdapterFactory())
    message = _one_line(str(info.value))
    assert not marker.exists()
    assert message.startswith(
        f"{str(run / 'checkpoint' / 'model.pt')!r} is not a weights-only checkpoint"
    )
    assert "nothing in it was run" in message and "resume=False" in message


def test_resume_with_the_variable_set_still_resumes_a_real_checkpoint(
    dataset: RoutingDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    cfg = TrainConfig(algorithm="cql", **TINY)

    def crash_at_7(done: int) -> None:
        if done == 7:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        train_router(cfg, dataset, run_dir=tmp_path / "a", callback=crash_at_7,
                     logger_adapter=NoopAdapterFactory())  # fmt: skip
    resumed = train_router(
        cfg, dataset, run_dir=tmp_path / "a", logger_adapter=NoopAdapterFactory()
    )
    straight = train_router(
        cfg, dataset, run_dir=tmp_path / "b", logger_adapter=NoopAdapterFactory()
    )
    assert resumed.n_steps_resumed_from == 5
    obs = dataset.observations
    assert np.array_equal(resumed.algo.predict(obs), straight.algo.predict(obs))
    # the checkpoint holds only tensors and plain containers
    states = torch.load(tmp_path / "a" / "checkpoint" / "model.pt", weights_only=True)
    assert sorted(states) == ["optim", "q_funcs", "targ_q_funcs"]


def test_cli_evaluate_refuses_a_planted_policy_in_one_line(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    _plant(folder / "policy.pt", marker, "pickle")
    code = main(["evaluate", "--router", str(folder), "--task-mix", "--n-episodes", "2",
                 "--window-requests", "5", "--cluster", "v100x2", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert _one_line(err).startswith("routeplay evaluate: error: ")
    assert "has sha256" in err and "was not loaded" in err


def test_cli_train_resume_refuses_a_planted_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import routeplay.offline_rl as rl

    argv = ["train", "--task-mix", "--n-episodes", "2", "--window-requests", "6",
            "--cluster", "v100x2", "--behaviours", "round-robin", "--algorithm", "bc",
            "--n-steps", "5", "--batch-size", "4", "--quiet",
            "--out", str(tmp_path / "r")]  # fmt: skip

    def killed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(rl, "save_router", killed)
        assert main(argv) == 130
    staging = tmp_path / ".r.partial"
    marker = tmp_path / "ran"
    _plant(staging / "run" / "checkpoint" / "model.pt", marker, "torch-zip")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "r").exists()
    assert _one_line(err).startswith("routeplay train: error: ")
    assert "is not a weights-only checkpoint" in err and "--overwrite" in err
    shutil.rmtree(staging)
