"""The Intelligent Router paper's Table 2 setup, small: what of its shape robustly holds.

Setup (``routeplay.replay.run_table2``, explained in ``docs/notes/table2.md``): cluster
``paper-2xv100`` (2 x Llama-2-7B, V100 gradients, 30k KV tokens), the three local
batching policies, the routers dedicated small-large, round robin and the (oracle)
decode balancer, the task-mix workload at 0.5 req/s (all-random) and 0.25 req/s (LH/HL),
a length predictor fitted on a separate training trace with the paper's time buckets.
Here: 2 orderings (``all-random``, ``lh-hl-random``) x 3 batching x 3 routers x 4
episodes of 300 requests (72 replays, a few seconds).

What the paper publishes: dedicated small-large is the worst in every column, and round
robin and decode balancer are within a few percent. What we find (full grid in the
notes, 20 episodes x 1,000 requests): the first holds everywhere, by a wide margin
(2.3-3.9x round robin). The second does NOT hold on the two random orderings: the
oracle decode balancer beats round robin by 11.9 % (``all-random``) and 20.5 %
(``lh-hl-random``); it is within a few percent only on the block orderings
(``lh-then-hl`` 5.5 %, ``hl-then-lh`` 3.0 %, not tested here). So this test asserts the
robust part only: decode balancer no worse than round robin. Nothing is loosened to make
the published claim pass.
"""

from __future__ import annotations

import polars as pl
import pytest
from routeplay.replay import TABLE2_RATES_PER_S, Table2Config, run_table2, table2_cell_means

ROUTERS = ("dedicated-small-large", "round-robin", "decode-balancer-oracle")
ORDERINGS = ("all-random", "lh-hl-random")
EPISODES = tuple(range(4))
N_REQUESTS = 300


@pytest.fixture(scope="module")
def cells() -> pl.DataFrame:
    grid = run_table2(
        Table2Config(
            n_requests=N_REQUESTS,
            episodes=EPISODES,
            orderings=ORDERINGS,
            routers=ROUTERS,
            n_train_requests=5_000,
        )
    )
    assert grid.height == len(ORDERINGS) * 3 * len(ROUTERS) * len(EPISODES)
    return table2_cell_means(grid)


def _e2e(cells: pl.DataFrame, ordering: str, batching: str) -> dict[str, float]:
    col = cells.filter((pl.col("ordering") == ordering) & (pl.col("batching") == batching))
    return dict(zip(col["router"].to_list(), col["e2e_mean_s"].to_list(), strict=True))


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("batching", ["fcfs", "least-work-left", "bin-packing"])
def test_dedicated_small_large_is_worst_in_every_column(
    cells: pl.DataFrame, ordering: str, batching: str
) -> None:
    e2e = _e2e(cells, ordering, batching)
    others = max(e2e["round-robin"], e2e["decode-balancer-oracle"])
    # Published: worst in every column. Ours: worst by a wide margin (> 1.3x the next).
    assert e2e["dedicated-small-large"] > 1.3 * others, e2e


@pytest.mark.parametrize("batching", ["fcfs", "least-work-left", "bin-packing"])
@pytest.mark.parametrize("ordering", ORDERINGS)
def test_decode_balancer_not_worse_than_round_robin(
    cells: pl.DataFrame, ordering: str, batching: str
) -> None:
    # Not "within a few percent" on these orderings (the oracle balancer is 12-20 %
    # better in the full grid, see the module docstring); what robustly holds is that
    # it is no worse than round robin.
    e2e = _e2e(cells, ordering, batching)
    assert e2e["decode-balancer-oracle"] <= e2e["round-robin"], e2e


def test_load_is_busy_but_stable(cells: pl.DataFrame) -> None:
    # Round robin keeps both instances busy most of the time without preempting: the
    # chosen load exercises the cluster but does not overload the 30k-token KV caches.
    rr = cells.filter(pl.col("router") == "round-robin")
    assert (rr["busy_0"] > 0.6).all() and (rr["busy_1"] > 0.6).all(), rr
    assert (rr["n_preemptions"] == 0).all(), rr
    assert TABLE2_RATES_PER_S["all-random"] == 2 * TABLE2_RATES_PER_S["lh-hl-random"]
