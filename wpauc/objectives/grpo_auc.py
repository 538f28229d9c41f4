"""GRPO with sampled negatives: full AUC (uniform) or AUC weighted by the policy."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from wpauc.objectives.base import Group, Objective, RolloutContext, positive_first_group
from wpauc.objectives.functional import sample_negatives


class GRPOAUC(Objective):
    """GRPO with sampled negatives: full AUC (uniform) or AUC weighted by the policy.

    Group = the positive + m negatives drawn from the catalog without the positive.

    Args:
        num_negatives: m, negatives per group (G = m + 1).
        sampler: "uniform" draws negatives uniformly from the catalog (full AUC); "policy"
            draws them from the policy's item distribution `softmax(scores / temperature)`
            over the catalog (AUC weighted by pi).
        temperature: SEQUENCE-level temperature of the policy sampler: it divides the whole
            item score `s(i|x)`, so items are drawn with probability proportional to
            `pi(i|x)^(1/T)`. This is not token-level sampling temperature, which would
            renormalise at every step.
        replacement: draw negatives i.i.d. (duplicates possible); with replacement the
            policy sampler's expected surrogate weights each negative exactly by its
            probability. Default: m distinct negatives.
        pairwise: "linear" weighs every negative alike (GRPO's linear pairwise
            surrogate); "logistic" weighs negative j by `sigmoid((s_j - s+) / tau)`, the
            derivative of the bounded logistic pairwise loss, so pairs the positive already
            wins by a margin stop pushing (see `logistic_pair_weights`).
        pairwise_temperature: tau of the logistic weights, in summed log-prob units.
    """

    def __init__(
        self,
        num_negatives: int = 16,
        sampler: Literal["uniform", "policy"] = "uniform",
        temperature: float = 1.0,
        replacement: bool = False,
        pairwise: Literal["linear", "logistic"] = "linear",
        pairwise_temperature: float = 1.0,
    ) -> None:
        if num_negatives < 1:
            raise self._config_error("num_negatives", f"must be >= 1, got {num_negatives}")
        if sampler not in ("uniform", "policy"):
            raise self._config_error("sampler", f"must be 'uniform' or 'policy', got {sampler!r}")
        if not temperature > 0.0:
            raise self._config_error("temperature", f"must be > 0, got {temperature}")
        self._set_pairwise(pairwise, pairwise_temperature)
        self.num_negatives = num_negatives
        self.sampler = sampler
        self.temperature = temperature
        self.replacement = replacement

    def check_catalog(self, num_items: int) -> None:
        if not self.replacement and self.num_negatives > num_items - 1:
            raise self._config_error(
                "num_negatives",
                f"= {self.num_negatives} exceeds the {num_items - 1} negatives of the catalog",
            )

    def _build_group(self, context: RolloutContext) -> Group:
        scorer, target = context.scorer, context.target
        stats: dict[str, Tensor] = {}
        if self.sampler == "uniform":
            logits = torch.zeros(target.shape[0], scorer.num_items, device=target.device)
        else:
            scores = scorer.scores()
            positive_score = scores.gather(-1, target.unsqueeze(-1))
            # Ties count against the positive, as in HR@K: rank = #negatives with s >= s+.
            stats["positive_rank"] = (scores >= positive_score).sum(-1) - 1
            logits = scores / self.temperature
        negatives = sample_negatives(
            logits,
            target,
            self.num_negatives,
            generator=context.generator,
            replacement=self.replacement,
        )
        group = positive_first_group(target, negatives, stats)
        group = self._weigh_pairs(group, scorer)
        return group
