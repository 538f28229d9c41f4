"""wpauc.objectives: GRPO as AUC, beam-search partial AUC and TAWin windowed partial AUC.

Pure torch (no Lightning): `functional` holds the maths, `sampling` the negative samplers,
`objectives` one class per objective (chosen by `class_path` in YAML).
"""

from wpauc.objectives.functional import (
    grpo_advantages,
    k3_kl,
    policy_loss,
    rank_aware_penalties,
    window_bounds,
    window_mask,
)
from wpauc.objectives.objectives import (
    GRPOAUC,
    BeamPAUC,
    Objective,
    RankAwareReward,
    Rollout,
    TAWinWPAUC,
    soft_window_weights,
)
from wpauc.objectives.sampling import beam_negatives, sample_negatives

__all__ = [
    "GRPOAUC",
    "BeamPAUC",
    "Objective",
    "RankAwareReward",
    "Rollout",
    "TAWinWPAUC",
    "beam_negatives",
    "grpo_advantages",
    "k3_kl",
    "policy_loss",
    "rank_aware_penalties",
    "sample_negatives",
    "soft_window_weights",
    "window_bounds",
    "window_mask",
]
