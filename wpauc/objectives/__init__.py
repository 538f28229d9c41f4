"""wpauc.objectives: GRPO as AUC, beam-search partial AUC and TAWin windowed partial AUC.

Pure torch (no Lightning). An objective (one file each, chosen by `class_path` in YAML)
only builds each context's group from a `RolloutContext`; `PolicyLoss` holds how the group
is optimised (its advantages and the rollout's log-probs in one `Rollout` record per RL
step); `functional` holds the maths (advantages, the policy loss, negative samplers, soft
window weights).
"""

from wpauc.objectives.base import Group, Objective, RolloutContext, group_statistics
from wpauc.objectives.beam_pauc import BeamPAUC
from wpauc.objectives.functional import (
    beam_negatives,
    grpo_advantages,
    k3_kl,
    policy_loss,
    rank_aware_penalties,
    sample_negatives,
    soft_window_weights,
)
from wpauc.objectives.grpo_auc import GRPOAUC
from wpauc.objectives.loss import PolicyLoss, Rollout
from wpauc.objectives.rank_aware import RankAwareReward
from wpauc.objectives.tawin import TAWinWPAUC

__all__ = [
    "GRPOAUC",
    "BeamPAUC",
    "Group",
    "Objective",
    "PolicyLoss",
    "RankAwareReward",
    "Rollout",
    "RolloutContext",
    "TAWinWPAUC",
    "beam_negatives",
    "group_statistics",
    "grpo_advantages",
    "k3_kl",
    "policy_loss",
    "rank_aware_penalties",
    "sample_negatives",
    "soft_window_weights",
]
