from __future__ import annotations

import re
from pathlib import Path

import pytest
from routeplay.replay.engine._clusters import (
    cluster_from_dict,
    list_clusters,
    load_cluster,
    make_cluster,
)


def test_toml_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "action_interval_s = 0.05\n"
        '[[instances]]\nname = "big"\ncount = 2\nmax_running_seqs = 8\n'
        "[instances.latency]\nintercept_s = 0.01\nprefill_s_per_token = 1e-4\n"
        "prefill_s_per_token2 = 0.0\ndecode_s_per_seq = 1e-3\ndecode_s_per_context_token = 0.0\n"
        '[[instances]]\nname = "tps"\ntokens_per_s = 3000.0\nbatching = "bin-packing"\n'
    )
    cluster = load_cluster(path)
    assert cluster.action_interval_s == 0.05
    assert [i.name for i in cluster.instances] == ["big-0", "big-1", "tps"]
    assert cluster.instances[0].max_running_seqs == 8
    assert cluster.instances[0].latency.decode_s_per_seq == 1e-3
    assert cluster.instances[2].latency.prefill_s_per_token == pytest.approx(1 / 3000)
    assert cluster.instances[2].batching == "bin-packing"


def test_hetero_3k5k7k_cluster() -> None:
    c = make_cluster("hetero-3k5k7k")
    assert [i.max_running_seqs for i in c.instances] == [3, 5, 7]
    assert [round(1 / i.latency.prefill_s_per_token) for i in c.instances] == [3000, 5000, 7000]


def test_former_cluster_name_still_builds_with_a_deprecation_warning() -> None:
    new = make_cluster("hetero-3k5k7k")
    with pytest.warns(
        DeprecationWarning, match="'seed000-hetero' is deprecated; use 'hetero-3k5k7k'"
    ):
        assert make_cluster("seed000-hetero") == new
    with pytest.warns(DeprecationWarning, match="use 'hetero-3k5k7k'"):
        assert load_cluster("seed000-hetero") == new
    assert "seed000-hetero" not in list_clusters()


@pytest.mark.parametrize("name", list_clusters())
def test_builtin_clusters_build(name: str) -> None:
    assert make_cluster(name).n_instances >= 2


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=re.escape("unknown instances[0] key(s) ['max_runing_seqs']")
    ):
        cluster_from_dict({"instances": [{"tokens_per_s": 1.0, "max_runing_seqs": 3}]})
    with pytest.raises(ValueError, match="Did you mean 'max_running_seqs'"):
        cluster_from_dict({"instances": [{"tokens_per_s": 1.0, "max_runing_seqs": 3}]})
    with pytest.raises(ValueError, match=re.escape("expected exactly one of 'preset'")):
        cluster_from_dict({"instances": [{"name": "x"}]})
    with pytest.raises(ValueError, match=re.escape("unknown cluster 'a100x5'")):
        make_cluster("a100x5")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_cluster(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[instances]\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_cluster(bad)
