"""MiniOneRec's rank-aware reward on beam-search groups (for parity experiments)."""

from __future__ import annotations

import torch

from wpauc.objectives.base import Group, Objective, RolloutContext
from wpauc.objectives.functional import positive_beam_position, rank_aware_penalties


class RankAwareReward(Objective):
    """MiniOneRec's rank-aware reward on beam-search groups (for parity experiments).

    Beam search with `num_beams`; the target gets reward 1 and a non-target at beam
    position i gets `-(1/log2(i + 2)) / sum_j 1/log2(j + 2)` (sum over all `num_beams`
    positions), as MiniOneRec's rule reward + NDCG reward sum. Normal mode puts the
    positive in every group: when the beam misses it, it replaces the LAST beam
    (MiniOneRec's `add_gt` replaces the last generation even when the target is already
    there; we never duplicate it). "Positive only if generated": the group is exactly the
    beam list, and a group without the target gets reward 0 everywhere (MiniOneRec zeroes
    the NDCG penalties of hit-less groups), hence advantage 0. Advantages use the
    population std; MiniOneRec (via TRL) uses the unbiased one, a constant rescaling.

    Args:
        num_beams: beam width = group size G.
        positive_only_if_generated: the group is the beam list as generated; groups that
            miss the target contribute nothing. False: the target always joins.
    """

    def __init__(self, num_beams: int = 16, positive_only_if_generated: bool = False) -> None:
        if num_beams < 2:
            raise self._config_error("num_beams", f"must be >= 2, got {num_beams}")
        self.num_beams = num_beams
        self.positive_only_if_generated = positive_only_if_generated

    def check_catalog(self, num_items: int) -> None:
        if self.num_beams > num_items:
            raise self._config_error(
                "num_beams", f"= {self.num_beams} exceeds the catalog's {num_items} items"
            )

    def _build_group(self, context: RolloutContext) -> Group:
        target = context.target
        items, _ = context.scorer.beam(self.num_beams)
        positive_position = positive_beam_position(items, target)
        hit = positive_position < self.num_beams
        stats = {"positive_in_beam": hit.float().mean(), "positive_rank": positive_position}
        if not self.positive_only_if_generated:
            items = items.clone()
            items[~hit, -1] = target[~hit]
        is_positive = items == target.unsqueeze(-1)
        penalties = rank_aware_penalties(self.num_beams).to(items.device).expand(items.shape)
        rewards = torch.where(is_positive, 1.0, penalties)
        rewards = rewards * is_positive.any(-1, keepdim=True).float()
        member_mask = torch.ones(items.shape, dtype=torch.bool, device=items.device)
        return Group(items, rewards, member_mask, is_positive, None, stats)
