"""torchmetrics Metrics: the mean over users of the per-user metrics in
:mod:`wpauc.metrics.functional`.

Each ``update(scores [B, N], target [B])`` reduces the batch to one
:class:`~wpauc.metrics.functional.PositiveRanks` and adds the per-user values to sum
states, so the DDP result (states summed over processes) equals the single-process one.
``update_ranks(gt, ge, num_negatives)`` adds a batch from those counts directly, and
``RankingMetrics(metrics, rank_cap=C)`` takes counts resolved only below rank C (HR@K and
NDCG@K only). `RankingMetrics` reports any list of metric specs (:mod:`wpauc.metrics.specs`).
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from wpauc.metrics.functional import PositiveRanks, positive_ranks, validate_top_k
from wpauc.metrics.specs import (
    AUCSpec,
    HitRateSpec,
    MetricSpec,
    NDCGSpec,
    WPAUCSpec,
    metric_specs,
)

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

    def update_ranks(
        self, gt: Tensor, ge: Tensor, num_negatives: int, beyond_cap: Tensor | None = None
    ) -> None:
        """Add the users of one batch from their positives' counts alone (e.g. from
        :func:`wpauc.decoding.exact_positive_ranks`, which never scores the whole catalog).

        Args:
            gt: ``[B]`` integer: negatives scored strictly above each user's positive.
            ge: ``[B]`` integer: negatives scored at or above it (``gt`` + ties).
            num_negatives: ``n = N - 1``, the catalog size less the positive.
            beyond_cap: ``[B]`` bool, users whose counts are only lower bounds at or past a rank
                cap (``exact_positive_ranks(rank_cap=...)``); only a ``RankingMetrics`` built
                with a ``rank_cap`` accepts them. ``None``: every count is exact.

        Raises:
            ValueError: impossible counts; capped counts this metric cannot use.
        """
        if beyond_cap is not None and (
            not isinstance(beyond_cap, Tensor)
            or beyond_cap.dtype != torch.bool
            or beyond_cap.shape != gt.shape
        ):
            raise ValueError(f"beyond_cap must be a bool tensor shaped like gt {list(gt.shape)}")
        self._check_capped_counts(gt, beyond_cap)
        self.update(PositiveRanks(gt=gt, ge=ge, num_negatives=num_negatives))

    def _check_capped_counts(self, gt: Tensor, beyond_cap: Tensor | None) -> None:
        """Refuse counts cut at a rank cap: every metric here needs the exact counts."""
        if beyond_cap is not None and bool(beyond_cap.any()):
            raise ValueError(
                f"{type(self).__name__} needs exact counts, but {int(beyond_cap.sum())} users are"
                " beyond a rank cap (only lower bounds are known). Rank without a cap, or use"
                " RankingMetrics(rank_cap=...), which reports HR@K and NDCG@K only (AUC and"
                " WPAUC need every count)"
            )

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
        spec = HitRateSpec(k)
        self.k = spec.k
        super().__init__([spec], **kwargs)

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
        spec = NDCGSpec(k)
        self.k = spec.k
        super().__init__([spec], **kwargs)

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
        super().__init__([AUCSpec()], **kwargs)

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
        spec = WPAUCSpec(alpha, d)
        self.alpha, self.d = spec.alpha, spec.d
        super().__init__([spec], **kwargs)

    def compute(self) -> Tensor:
        """Mean WPAUC over all users seen (all processes under DDP)."""
        return self._means()[0]


class RankingMetrics(_MeanOverUsers):
    """Several metrics in one Metric: one rank computation per batch, one sync.

    ``metrics`` are specs (:mod:`wpauc.metrics.specs`) or their keys: ``hr@K``, ``ndcg@K``,
    ``auc``, ``wpauc@[A,B]`` (the FPR window ``[A, B]``), or any other registered family.
    ``compute()`` returns a dict with one value per metric, in the order given, keyed by the
    spec's key with ``prefix`` in front (``val/hr@10``). Use: ``update(scores, target)`` (or
    ``update_ranks``) per batch, then ``log_dict(compute())`` and ``reset()``.

    With a ``rank_cap`` the counts may be cut at that rank (``update_ranks(...,
    beyond_cap)``, e.g. from ``exact_positive_ranks(rank_cap=...)``): only metrics of the top
    K with K <= ``rank_cap`` (HR@K, NDCG@K) stay exact, so only those may be asked for; AUC
    and WPAUC need every count.
    """

    def __init__(
        self,
        metrics: Sequence[str | MetricSpec],
        prefix: str = "",
        rank_cap: int | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            metrics: the metrics, as specs or keys (e.g. ``["hr@10", "ndcg@10", "auc",
                "wpauc@[0,0.01]"]``, or ``wpauc.metrics.specs.DEFAULT_METRICS``).
            prefix: prepended to every key, e.g. ``"val/"``.
            rank_cap: the rank at which counts may be cut (at least every K of the metrics,
                which must all be metrics of the top K). ``None``: exact counts only.
            kwargs: torchmetrics ``Metric`` options.
        """
        specs = metric_specs(metrics)
        if rank_cap is not None:
            rank_cap = validate_top_k(rank_cap)
            for spec in specs:
                if spec.cutoff is None:
                    raise ValueError(
                        f"{spec.key} with rank_cap={rank_cap}: it needs every count, which"
                        " counts cut at a rank cap do not give"
                    )
                if spec.cutoff > rank_cap:
                    raise ValueError(
                        f"rank_cap={rank_cap} is below K={spec.cutoff} of {spec.key}: a metric"
                        " of the top K is only exact for K <= rank_cap"
                    )
        super().__init__(specs, **kwargs)
        self.rank_cap = rank_cap
        """Rank at which counts may be cut (``None``: exact counts only)."""
        self.specs = tuple(specs)
        """The metrics, in the order of ``compute()``."""
        self.names = tuple(prefix + spec.key for spec in specs)
        """The keys of ``compute()``, in order."""

    def at_k(self) -> dict[str, list[tuple[int, str]]]:
        """The metrics of the top K by family, each as ``(K, key)`` pairs by K (e.g.
        ``{"hr": [(1, "val/hr@1"), (10, "val/hr@10")], "ndcg": [...]}``): what a figure of
        metric@K against K draws."""
        curves: dict[str, list[tuple[int, str]]] = {}
        for spec, name in zip(self.specs, self.names, strict=True):
            if spec.cutoff is not None:
                curves.setdefault(spec.family, []).append((spec.cutoff, name))
        return {family: sorted(points) for family, points in curves.items()}

    def _check_capped_counts(self, gt: Tensor, beyond_cap: Tensor | None) -> None:
        """Without a cap, refuse capped counts; with one, a user beyond it must have
        ``gt >= rank_cap``, so that every HR@K and NDCG@K computed from its bounds is 0."""
        if self.rank_cap is None or beyond_cap is None:
            super()._check_capped_counts(gt, beyond_cap)
            return
        short = beyond_cap & (gt < self.rank_cap)
        if short.any():
            row = int(short.nonzero()[0, 0])
            raise ValueError(
                f"ranks row {row} is beyond the cap with gt={int(gt[row])} < rank_cap="
                f"{self.rank_cap}: its HR@K and NDCG@K would not be exact (counts cut at a "
                "smaller cap?)"
            )

    def compute(self) -> dict[str, Tensor]:
        """Each metric's mean over all users seen (all processes under DDP), by key."""
        return dict(zip(self.names, self._means(), strict=True))


__all__ = ["AUC", "NDCG", "HitRate", "RankingMetrics", "WindowedPartialAUC"]
