"""The training sampler gives DDP ranks the slices of the single-process batches, evaluation
shards count every sample once, and the resumable loader skips finished batches."""

from unittest import mock

import pytest

from wpauc.data import loaders
from wpauc.data.loaders import EvalShardSampler, GlobalBatchSampler, ResumableDataLoader


def _batches(indices: list[int], batch_size: int) -> list[list[int]]:
    return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]


def _sampler(
    world_size: int, rank: int, num_samples: int, batch_size: int, **kwargs
) -> GlobalBatchSampler:
    with mock.patch.object(loaders, "_world", return_value=(world_size, rank)):
        return GlobalBatchSampler(num_samples, batch_size, **kwargs)


@pytest.mark.parametrize("num_samples", [48, 53])
def test_ddp_ranks_share_out_the_single_process_batches(num_samples):
    single = _batches(list(_sampler(1, 0, num_samples, 8, seed=5)), 8)
    ranks = [_batches(list(_sampler(2, r, num_samples, 4, seed=5)), 4) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    for step, (left, right) in enumerate(zip(*ranks, strict=True)):
        assert sorted(left + right) == sorted(single[step][: len(left) + len(right)])
    covered = sum(len(b) for b in ranks[0] + ranks[1])
    assert num_samples - covered < 2  # at most world_size - 1 left out


def test_one_process_covers_every_sample_once_with_a_new_order_each_epoch():
    sampler = _sampler(1, 0, 37, 8, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert sorted(first) == list(range(37)) and list(sampler) != first


def test_eval_shards_are_disjoint_and_complete():
    shards = []
    for rank in range(3):
        with mock.patch.object(loaders, "_world", return_value=(3, rank)):
            shards.append(list(EvalShardSampler(10)))
    assert sorted(sum(shards, [])) == list(range(10))


def test_resumable_loader_skips_the_finished_batches_of_the_saved_epoch():
    data = list(range(30))
    sampler = GlobalBatchSampler(len(data), 4, seed=2)
    loader = ResumableDataLoader(data, batch_size=4, sampler=sampler)
    sampler.set_epoch(3)
    full = [b.tolist() for b in loader]
    loader.progress = lambda: (3, 2)
    state = loader.state_dict()

    resumed_sampler = GlobalBatchSampler(len(data), 4, seed=2)
    resumed = ResumableDataLoader(data, batch_size=4, sampler=resumed_sampler)
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == full[2:]
    assert [b.tolist() for b in resumed] == full  # the skip applies to one iteration only
