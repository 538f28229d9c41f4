"""Learning-rate schedules for `model.scheduler` (stepped once per optimizer step)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine(LambdaLR):
    """Linear warm-up from 0 to the optimizer's rate, then cosine decay to
    ``min_lr_ratio`` times it at ``total_steps`` (held there afterwards).

    With ``total_steps=None`` the module sets it to the run's
    ``trainer.estimated_stepping_batches`` (``max_epochs`` x batches, or ``max_steps``), so a
    config need not repeat the data size. Early stopping ends a run before the decay does.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 0,
        total_steps: int | None = None,
        min_lr_ratio: float = 0.0,
    ):
        if warmup_steps < 0:
            raise ValueError(f"WarmupCosine.warmup_steps must be >= 0, got {warmup_steps}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"WarmupCosine.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.warmup_steps = warmup_steps
        self.total_steps: int | None = None
        if total_steps is not None:
            self.set_total_steps(total_steps)
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, self.factor)

    def set_total_steps(self, total_steps: int) -> None:
        """Set where the decay ends; it must lie past the warm-up (also when the module sets
        it from the run's length)."""
        if total_steps <= self.warmup_steps:
            raise ValueError(
                f"WarmupCosine.total_steps ({total_steps}) must exceed warmup_steps "
                f"({self.warmup_steps})"
            )
        self.total_steps = total_steps

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rate after `step` optimizer steps."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.total_steps is None:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine
