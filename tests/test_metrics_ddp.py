"""Two CPU processes (gloo), each updating with its share of the batches: the synced
compute() equals the single-process result."""

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from wpauc.metrics import AUC, RankingMetrics, WindowedPartialAUC, WPAUCSpec

WORLD_SIZE = 2
TOP_K = (1, 5)
WINDOWS = [(0.0, 0.1), (0.05, 0.1)]


def make_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Five batches of different sizes, integer scores (ties) over 31 items."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for num_users in (7, 3, 12, 5, 9):
        scores = torch.randint(0, 8, (num_users, 31), generator=generator).float()
        target = torch.randint(31, (num_users,), generator=generator)
        batches.append((scores, target))
    return batches


def build_metrics() -> dict:
    return {
        "collection": RankingMetrics(
            [
                *(f"{name}@{k}" for name in ("hr", "ndcg") for k in TOP_K),
                "auc",
                *(WPAUCSpec(*window) for window in WINDOWS),
            ]
        ),
        "auc": AUC(),
        "wpauc": WindowedPartialAUC(*WINDOWS[1]),
    }


def run_metrics(batches) -> dict:
    metrics = build_metrics()
    for scores, target in batches:
        for metric in metrics.values():
            metric.update(scores, target)
    return {name: metric.compute() for name, metric in metrics.items()}


def ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        # rank 0 gets 3 batches, rank 1 gets 2: uneven user counts must still average right
        results = run_metrics(make_batches()[rank::WORLD_SIZE])
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_ddp_compute_equals_single_process(tmp_path):
    mp.spawn(ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    expected = run_metrics(make_batches())
    for rank in range(WORLD_SIZE):
        results = torch.load(tmp_path / f"rank{rank}.pt")
        assert results["collection"].keys() == expected["collection"].keys()
        torch.testing.assert_close(results, expected)
    # the shards alone differ from the whole, so the test would notice a missing sync
    assert run_metrics(make_batches()[0::WORLD_SIZE])["auc"] != expected["auc"]
