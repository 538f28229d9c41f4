"""Exact ranking metrics over full-catalog scores (docs/design.md, "The metrics contract").

Metrics (torchmetrics, mean over users): :class:`HitRate`, :class:`NDCG`, :class:`AUC`,
:class:`WindowedPartialAUC`, and :class:`RankingMetrics` for all of them at once.
Per-user functional forms live in :mod:`wpauc.metrics.functional`.
"""

from wpauc.metrics import functional
from wpauc.metrics.functional import (
    PositiveRanks,
    auc,
    auc_from_ranks,
    hit_rate,
    hit_rate_from_ranks,
    ndcg,
    ndcg_from_ranks,
    positive_ranks,
    validate_top_k,
    windowed_partial_auc,
    windowed_partial_auc_from_ranks,
)
from wpauc.metrics.ranking import AUC, NDCG, HitRate, RankingMetrics, WindowedPartialAUC

__all__ = [
    "AUC",
    "NDCG",
    "HitRate",
    "PositiveRanks",
    "RankingMetrics",
    "WindowedPartialAUC",
    "auc",
    "auc_from_ranks",
    "functional",
    "hit_rate",
    "hit_rate_from_ranks",
    "ndcg",
    "ndcg_from_ranks",
    "positive_ranks",
    "validate_top_k",
    "windowed_partial_auc",
    "windowed_partial_auc_from_ranks",
]
