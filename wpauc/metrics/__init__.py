"""Exact ranking metrics over full-catalog scores (docs/design.md, "The metrics contract").

Metrics (torchmetrics, mean over users): :class:`HitRate`, :class:`NDCG`, :class:`AUC`,
:class:`WindowedPartialAUC`, and :class:`RankingMetrics` for any list of metric specs at once
(:mod:`wpauc.metrics.specs`: ``"hr@10"``, ``"ndcg@5"``, ``"auc"``, ``"wpauc@[0,0.01]"``).
Per-user functional forms live in :mod:`wpauc.metrics.functional`; everything in its and the
specs' ``__all__`` is exported here.
"""

from wpauc.metrics import functional, specs
from wpauc.metrics.functional import *  # noqa: F403 - the functionals, as functional.__all__ lists
from wpauc.metrics.ranking import AUC, NDCG, HitRate, RankingMetrics, WindowedPartialAUC
from wpauc.metrics.specs import *  # noqa: F403 - the specs, as specs.__all__ lists them

__all__ = [
    "AUC",
    "NDCG",
    "HitRate",
    "RankingMetrics",
    "WindowedPartialAUC",
    "functional",
    "specs",
    *functional.__all__,
    *specs.__all__,
]
