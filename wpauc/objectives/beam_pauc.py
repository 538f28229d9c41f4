"""Top-m beam-search negatives: one-way partial AUC."""

from __future__ import annotations

from typing import Literal

from wpauc.objectives.base import (
    Group,
    Objective,
    RolloutContext,
    gate_contexts,
    positive_first_group,
)


class BeamPAUC(Objective):
    """Top-m beam-search negatives: one-way partial AUC, FPR <= m / n.

    Beam search of width m + 1; the positive is removed from the beam list if there, and
    the top m of the rest are the negatives.

    Args:
        num_negatives: m, negatives per group (G = m + 1); beam width m + 1.
        positive_only_if_generated: a context contributes only when the beam of width m + 1
            holds its positive (MiniOneRec's mode); the others get advantage 0.
        pairwise: "linear" weighs every negative alike (GRPO's linear pairwise
            surrogate); "logistic" weighs negative j by `sigmoid((s_j - s+) / tau)`, the
            derivative of the bounded logistic pairwise loss, so pairs the positive already
            wins by a margin stop pushing (see `logistic_pair_weights`).
        pairwise_temperature: tau of the logistic weights, in summed log-prob units.
    """

    def __init__(
        self,
        num_negatives: int = 16,
        positive_only_if_generated: bool = False,
        pairwise: Literal["linear", "logistic"] = "linear",
        pairwise_temperature: float = 1.0,
    ) -> None:
        if num_negatives < 1:
            raise self._config_error("num_negatives", f"must be >= 1, got {num_negatives}")
        self._set_pairwise(pairwise, pairwise_temperature)
        self.num_negatives = num_negatives
        self.positive_only_if_generated = positive_only_if_generated

    def check_catalog(self, num_items: int) -> None:
        width = self.num_negatives + 1
        if width > num_items:
            raise self._config_error(
                "num_negatives",
                f"= {self.num_negatives} needs beam width {width} > the catalog's "
                f"{num_items} items",
            )

    def _build_group(self, context: RolloutContext) -> Group:
        width = self.num_negatives + 1
        ranked = self._ranked_negatives(context, width)
        group = positive_first_group(context.target, ranked.items, ranked.stats)
        group = self._weigh_pairs(group, context.scorer)
        if self.positive_only_if_generated:
            group = gate_contexts(group, ranked.stats["positive_rank"] < width)
        return group
