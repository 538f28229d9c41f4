"""Baselines scored on the same splits and exact metrics as the policy: counting ones
(popularity, last-item transitions) and SASRec.

Every baseline returns ``[S, N]`` scores over the whole catalog for the samples of a split,
and is fitted on ``fit_samples(data, refit)``: the training split by default, so that valid
serves model selection only, as for the policy (docs/design.md §8).
"""

from wpauc.baselines.counting import (
    item_popularity,
    last_item_transition_scores,
    popularity_scores,
    transition_counts,
)
from wpauc.baselines.sasrec import (
    SASRec,
    SASRecConfig,
    fit_sasrec,
    next_item_loss,
    sasrec_metrics,
    sasrec_scores,
)
from wpauc.data.catalog import fit_samples

__all__ = [
    "SASRec",
    "SASRecConfig",
    "fit_samples",
    "fit_sasrec",
    "item_popularity",
    "last_item_transition_scores",
    "next_item_loss",
    "popularity_scores",
    "sasrec_metrics",
    "sasrec_scores",
    "transition_counts",
]
