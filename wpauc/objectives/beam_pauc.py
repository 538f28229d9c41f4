"""Top-m beam-search negatives: one-way partial AUC."""

from __future__ import annotations

import torch
from torch import Tensor

from wpauc.decoding import ItemScorer
from wpauc.objectives.base import Group, Objective, positive_first_group


class BeamPAUC(Objective):
    """Top-m beam-search negatives: one-way partial AUC, FPR <= m / n.

    Beam search of width m + 1; the positive is removed from the beam list if there, and
    the top m of the rest are the negatives.

    Args:
        num_negatives: m, negatives per group (G = m + 1); beam width m + 1.
    """

    def __init__(self, num_negatives: int = 16) -> None:
        if num_negatives < 1:
            raise self._config_error("num_negatives", f"must be >= 1, got {num_negatives}")
        self.num_negatives = num_negatives

    def check_catalog(self, num_items: int) -> None:
        width = self.num_negatives + 1
        if width > num_items:
            raise self._config_error(
                "num_negatives",
                f"= {self.num_negatives} needs beam width {width} > the catalog's "
                f"{num_items} items",
            )

    def _build_group(
        self, scorer: ItemScorer, target: Tensor, generator: torch.Generator | None
    ) -> Group:
        ranked = self._ranked_negatives(scorer, target, self.num_negatives + 1)
        return positive_first_group(target, ranked.items, ranked.stats)
