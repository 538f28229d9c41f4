"""Samplers and a resumable data loader that make training exact under resume and DDP.

Two guarantees the rest of wpauc relies on:

* **DDP equals one process.** :class:`GlobalBatchSampler` draws one seeded permutation per
  epoch, cuts it into *global* batches of ``batch_size * world_size`` samples and gives rank
  ``r`` the ``r``-th slice of each. The union of the ranks' batches at every step is the
  batch a single process would see, so averaged gradients match. :class:`EvalShardSampler`
  shards evaluation data without the padding duplicates of ``DistributedSampler``, so summed
  metric states count every sample exactly once.
* **Mid-epoch resume continues the same run.** :class:`ResumableDataLoader` reports how many
  batches of the current epoch the trainer has finished (read from Lightning's own progress
  counters, which are exact even with batch prefetching) and skips them when restored.

Both samplers subclass ``DistributedSampler`` so Lightning does not wrap them again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler


def _world() -> tuple[int, int]:
    """(world_size, rank) of the default process group, (1, 0) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class GlobalBatchSampler(DistributedSampler):
    """Per-epoch seeded permutation, split into global batches shared out across ranks.

    Yields sample indices for this rank; the DataLoader groups them into batches of
    ``batch_size``. The last global batch may be smaller; it is shared out equally, so up
    to ``world_size - 1`` samples of an epoch are left out under DDP (none in one process).

    Args:
        num_samples: size of the training split.
        batch_size: per-process batch size (a global batch is ``batch_size * world_size``).
        seed: the epoch-``e`` permutation is drawn with seed ``seed + e``.
        shuffle: False keeps the split order in every epoch.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, shuffle: bool = True):
        world_size, rank = _world()
        super().__init__(
            range(num_samples), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed
        )
        if num_samples < world_size:
            raise ValueError(
                f"the training split has {num_samples} samples, fewer than the {world_size} "
                "processes"
            )
        self.batch_size = batch_size
        self.skip_batches = 0  # set by ResumableDataLoader on resume, consumed by the next __iter__
        global_batch = batch_size * world_size
        self._num_full = num_samples // global_batch
        self._last_share = (num_samples - self._num_full * global_batch) // world_size

    def __len__(self) -> int:
        return self._num_full * self.batch_size + self._last_share

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(
                n, generator=torch.Generator().manual_seed(self.seed + self.epoch)
            )
        else:
            order = torch.arange(n)
        global_batch = self.batch_size * self.num_replicas
        full = order[: self._num_full * global_batch].view(
            self._num_full, self.num_replicas, self.batch_size
        )
        mine = [full[:, self.rank].reshape(-1)]
        if self._last_share:
            last = order[self._num_full * global_batch :][: self._last_share * self.num_replicas]
            mine.append(last.view(self.num_replicas, self._last_share)[self.rank])
        indices = torch.cat(mine)[self.skip_batches * self.batch_size :]
        self.skip_batches = 0
        return iter(indices.tolist())


class EvalShardSampler(DistributedSampler):
    """Contiguous-stride shards of an evaluation split, no sample repeated or dropped.

    Args:
        num_samples: size of the evaluation split; rank ``r`` gets ``r, r + world_size, ...``.
    """

    def __init__(self, num_samples: int):
        world_size, rank = _world()
        super().__init__(range(num_samples), num_replicas=world_size, rank=rank, shuffle=False)
        self.indices = list(range(rank, num_samples, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position inside an epoch survives a checkpoint.

    ``progress`` returns ``(epoch, batches finished in that epoch)``; Lightning saves
    :meth:`state_dict` in every checkpoint and calls :meth:`load_state_dict` on resume,
    before it first iterates, so the restored epoch's permutation is drawn and its finished
    batches are dropped as indices in the sampler, before any worker loads them.
    """

    progress: Callable[[], tuple[int, int]] | None = None

    def state_dict(self) -> dict[str, Any]:
        epoch, done = self.progress() if self.progress is not None else (0, 0)
        return {"epoch": epoch, "batches_done": done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(self.sampler, GlobalBatchSampler):
            raise TypeError(
                "ResumableDataLoader needs a GlobalBatchSampler to skip finished batches"
            )
        # Lightning draws the first batch before it calls set_epoch on a resumed run.
        self.sampler.set_epoch(int(state["epoch"]))
        self.sampler.skip_batches = int(state["batches_done"])
