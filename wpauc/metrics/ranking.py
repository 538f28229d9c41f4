"""torchmetrics Metrics: the mean over users of the per-user metrics in
:mod:`wpauc.metrics.functional`.

Each ``update(scores [B, N], target [B])`` reduces the batch to one
:class:`~wpauc.metrics.functional.PositiveRanks` and adds the per-user values to sum
states, so the DDP result (states summed over processes) equals the single-process one.
``update_ranks(gt, ge, num_negatives)`` adds a batch from those counts directly.
"""

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from wpauc.metrics.functional import (
    PositiveRanks,
    auc_from_ranks,
    hit_rate_from_ranks,
    ndcg_from_ranks,
    positive_ranks,
    validate_top_k,
    windowed_partial_auc_from_ranks,
)
from wpauc.window import validate_window, wpauc_key

PerUserMetric = Callable[[PositiveRanks], Tensor]


class _MeanOverUsers(Metric):
    """Means over users of several per-user metrics, all fed from one rank computation."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    total: Tensor
    count: Tensor

    def __init__(self, per_user: Sequence[PerUserMetric], **kwargs: Any) -> None:
        """
        Args:
            per_user: functions ``PositiveRanks -> [B]`` per-user values, one per metric.
            kwargs: torchmetrics ``Metric`` options (``dist_sync_on_step``, ``process_group``...).
        """
        super().__init__(**kwargs)
        self._per_user = list(per_user)
        self.add_state("total", default=torch.zeros(len(self._per_user)), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, scores: Tensor | PositiveRanks, target: Tensor | None = None) -> None:
        """Add the users of one batch: ``scores`` ``[B, N]`` over the catalog and ``target``
        ``[B]`` the column of each user's positive, or the positives' counts as one
        :class:`PositiveRanks` (what :meth:`update_ranks` passes). Both go through this
        method so that torchmetrics counts the update."""
        ranks = scores if isinstance(scores, PositiveRanks) else positive_ranks(scores, target)
        values = torch.stack([metric(ranks) for metric in self._per_user], dim=1)
        self.total += values.sum(dim=0)
        self.count += values.shape[0]

    def update_ranks(self, gt: Tensor, ge: Tensor, num_negatives: int) -> None:
        """Add the users of one batch from their positives' counts alone (e.g. from
        :func:`wpauc.decoding.exact_positive_ranks`, which never scores the whole catalog).

        Args:
            gt: ``[B]`` integer: negatives scored strictly above each user's positive.
            ge: ``[B]`` integer: negatives scored at or above it (``gt`` + ties).
            num_negatives: ``n = N - 1``, the catalog size less the positive.
        """
        self.update(PositiveRanks(gt=gt, ge=ge, num_negatives=num_negatives))

    def _means(self) -> Tensor:
        return self.total / self.count


class HitRate(_MeanOverUsers):
    """HR@k: share of users whose positive is in the top ``k`` (ties count against it)."""

    def __init__(self, k: int, **kwargs: Any) -> None:
        """
        Args:
            k: cut-off, an integer >= 1.
            kwargs: torchmetrics ``Metric`` options.
        """
        self.k = validate_top_k(k)
        super().__init__([partial(hit_rate_from_ranks, k=self.k)], **kwargs)

    def compute(self) -> Tensor:
        """Mean HR@k over all users seen (all processes under DDP)."""
        return self._means()[0]


class NDCG(_MeanOverUsers):
    """NDCG@k with one relevant item: mean of ``1[rank < k] / log2(rank + 2)``, where rank
    counts the negatives scored at or above the positive."""

    def __init__(self, k: int, **kwargs: Any) -> None:
        """
        Args:
            k: cut-off, an integer >= 1.
            kwargs: torchmetrics ``Metric`` options.
        """
        self.k = validate_top_k(k)
        super().__init__([partial(ndcg_from_ranks, k=self.k)], **kwargs)

    def compute(self) -> Tensor:
        """Mean NDCG@k over all users seen (all processes under DDP)."""
        return self._means()[0]


class AUC(_MeanOverUsers):
    """Per-user ROC AUC of the positive against the rest of the catalog (a tie counts 1/2),
    averaged over users."""

    def __init__(self, **kwargs: Any) -> None:
        """
        Args:
            kwargs: torchmetrics ``Metric`` options.
        """
        super().__init__([auc_from_ranks], **kwargs)

    def compute(self) -> Tensor:
        """Mean AUC over all users seen (all processes under DDP)."""
        return self._means()[0]


class WindowedPartialAUC(_MeanOverUsers):
    """WPAUC: per-user mean TPR over the FPR window ``[alpha, alpha + d]``, averaged over users."""

    def __init__(self, alpha: float, d: float, **kwargs: Any) -> None:
        """
        Args:
            alpha: window start (FPR), in [0, 1].
            d: window width, in (0, 1], with ``alpha + d <= 1``.
            kwargs: torchmetrics ``Metric`` options.
        """
        self.alpha, self.d = validate_window(alpha, d)
        super().__init__(
            [partial(windowed_partial_auc_from_ranks, alpha=self.alpha, d=self.d)], **kwargs
        )

    def compute(self) -> Tensor:
        """Mean WPAUC over all users seen (all processes under DDP)."""
        return self._means()[0]


class RankingMetrics(_MeanOverUsers):
    """All validation metrics in one Metric: one rank computation per batch, one sync.

    ``compute()`` returns a dict with, in this order, ``hr@K`` for each K in ``top_k``,
    then ``ndcg@K`` for each K, then ``auc``, then ``wpauc@[A,B]`` for each window
    ``(alpha, d)`` with ``A = alpha`` and ``B = alpha + d`` printed with ``:g`` (e.g.
    ``(0.001, 0.002)`` -> ``wpauc@[0.001,0.003]``); every key starts with ``prefix``.
    Use: ``update(scores, target)`` per batch, then ``log_dict(compute())`` and ``reset()``.
    """

    def __init__(
        self,
        top_k: Sequence[int] = (3, 5, 10),
        windows: Sequence[Sequence[float]] = (),
        prefix: str = "",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            top_k: cut-offs K for HR@K and NDCG@K (MiniOneRec reports 3, 5, 10).
            windows: FPR windows as ``(alpha, d)`` pairs, one WPAUC each.
            prefix: prepended to every key, e.g. ``"val/"``.
            kwargs: torchmetrics ``Metric`` options.
        """
        top_k = [validate_top_k(k) for k in top_k]
        names = [f"hr@{k}" for k in top_k] + [f"ndcg@{k}" for k in top_k] + ["auc"]
        per_user: list[PerUserMetric] = [partial(hit_rate_from_ranks, k=k) for k in top_k]
        per_user += [partial(ndcg_from_ranks, k=k) for k in top_k]
        per_user.append(auc_from_ranks)
        for index, window in enumerate(windows):
            if (
                isinstance(window, (str, bytes))
                or not isinstance(window, Sequence)
                or len(window) != 2
            ):
                raise ValueError(f"windows[{index}] must be a pair (alpha, d), got {window!r}")
            alpha, d = validate_window(*window)
            names.append(wpauc_key(alpha, d))
            per_user.append(partial(windowed_partial_auc_from_ranks, alpha=alpha, d=d))
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"top_k and windows give duplicate metrics: {duplicates}")
        super().__init__(per_user, **kwargs)
        self.names = tuple(prefix + name for name in names)
        """The keys of ``compute()``, in order."""

    def compute(self) -> dict[str, Tensor]:
        """Each metric's mean over all users seen (all processes under DDP), by key."""
        return dict(zip(self.names, self._means(), strict=True))


__all__ = ["AUC", "NDCG", "HitRate", "RankingMetrics", "WindowedPartialAUC"]
