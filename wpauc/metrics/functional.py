"""Per-user ranking metrics over full-catalog scores, in pure torch (docs/design.md).

Every metric takes ``scores`` ``[B, N]`` (one row per user, one column per catalog item,
higher is better) and ``target`` ``[B]`` (the column of each user's positive) and returns
``[B]`` float32 per-user values. The other ``n = N - 1`` items of a row are the user's
negatives, and a row reduces to two counts:

    gt = #{negatives j: s_j > s+}        ge = #{negatives j: s_j >= s+}

The user's ROC curve is 0 for FPR below ``gt / n``, rises linearly to 1 at ``ge / n``
(the negatives tied with the positive) and is 1 after; this is exactly sklearn's
``roc_curve`` for that row. From it:

- ``windowed_partial_auc(alpha, d) = (1 / d) * integral_{alpha}^{alpha + d} TPR(f) df``
- ``auc = windowed_partial_auc(0, 1) = 1 - (gt + ge) / (2 n)`` (a tie counts 1/2)
- ``hit_rate@K = 1[ge < K]`` and ``ndcg@K = 1[ge < K] / log2(ge + 2)``: ties count
  against the positive, so constant scores earn nothing.

To evaluate several metrics on one batch, compute :func:`positive_ranks` once and pass it
to the ``*_from_ranks`` functions.
"""

from dataclasses import dataclass
from numbers import Integral

import torch
from torch import Tensor

from wpauc.window import validate_window


@dataclass(frozen=True)
class PositiveRanks:
    """Where each user's positive sits among its negatives: all any metric here needs."""

    gt: Tensor
    """``[B]`` long: number of negatives scored strictly above the positive."""
    ge: Tensor
    """``[B]`` long: number of negatives scored at or above the positive (``gt`` + ties)."""
    num_negatives: int
    """``n = N - 1``: negatives per user (the whole catalog but the positive)."""

    def __post_init__(self) -> None:
        if not isinstance(self.num_negatives, Integral) or self.num_negatives < 1:
            raise ValueError(f"num_negatives must be an integer >= 1, got {self.num_negatives!r}")
        for name in ("gt", "ge"):
            value = getattr(self, name)
            if not isinstance(value, Tensor) or value.ndim != 1 or value.is_floating_point():
                raise ValueError(f"{name} must be a 1-D integer tensor, got {_describe(value)}")
        if self.gt.shape != self.ge.shape:
            raise ValueError(
                f"gt and ge must have the same shape, got {self.gt.shape} and {self.ge.shape}"
            )
        bad = (self.gt < 0) | (self.ge < self.gt) | (self.ge > self.num_negatives)
        if bad.any():
            row = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"ranks row {row}: need 0 <= gt <= ge <= num_negatives={self.num_negatives}, "
                f"got gt={int(self.gt[row])}, ge={int(self.ge[row])}"
            )


def validate_top_k(k: int) -> int:
    """Return ``k`` as an int, or raise ValueError unless it is an integer >= 1."""
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def positive_ranks(scores: Tensor, target: Tensor) -> PositiveRanks:
    """Count, for each row of ``scores`` ``[B, N]``, the negatives scored above (``gt``) and
    at or above (``ge``) the positive in column ``target[b]``."""
    _check_scores_and_target(scores, target)
    positive = scores.gather(1, target.unsqueeze(1))
    gt = (scores > positive).sum(dim=1)
    # the positive ties with itself: remove it from the count
    ge = (scores >= positive).sum(dim=1) - 1
    return PositiveRanks(gt=gt, ge=ge, num_negatives=scores.shape[1] - 1)


def hit_rate_from_ranks(ranks: PositiveRanks, k: int) -> Tensor:
    """``[B]`` HR@k = 1[ge < k]: the positive is in the top k even when ties go against it."""
    k = validate_top_k(k)
    return (ranks.ge < k).float()


def ndcg_from_ranks(ranks: PositiveRanks, k: int) -> Tensor:
    """``[B]`` NDCG@k = 1[ge < k] / log2(ge + 2) (one relevant item, so the ideal DCG is 1)."""
    k = validate_top_k(k)
    gain = 1.0 / torch.log2(ranks.ge.to(_work_dtype(ranks.ge)) + 2.0)
    return torch.where(ranks.ge < k, gain, torch.zeros_like(gain)).float()


def windowed_partial_auc_from_ranks(ranks: PositiveRanks, alpha: float, d: float) -> Tensor:
    """``[B]`` mean TPR over the FPR window ``[alpha, alpha + d]`` of each user's ROC."""
    alpha, d = validate_window(alpha, d)
    n = ranks.num_negatives
    dtype = _work_dtype(ranks.gt)
    gt, ge = ranks.gt.to(dtype), ranks.ge.to(dtype)
    # Work in units of negatives (FPR * n): the ROC is 0 before gt, rises linearly over the
    # ties [gt, ge] and is 1 after ge. Integrate each piece over its overlap with [lo, hi].
    lo, hi = alpha * n, min(alpha + d, 1.0) * n
    ramp_start = torch.full_like(gt, lo).clamp(min=gt, max=ge)
    ramp_end = torch.full_like(gt, hi).clamp(min=gt, max=ge)
    # mean height of the ramp over [ramp_start, ramp_end] times its length; without ties
    # the overlap is empty, so the clamp only avoids 0 / 0
    ramp_area = (
        (ramp_end - ramp_start) * ((ramp_start + ramp_end) / 2 - gt) / (ge - gt).clamp(min=1)
    )
    flat_area = (hi - ge.clamp(min=lo)).clamp(min=0)
    return ((ramp_area + flat_area) / (hi - lo)).float()


def auc_from_ranks(ranks: PositiveRanks) -> Tensor:
    """``[B]`` AUC = WPAUC(0, 1) = 1 - (gt + ge) / (2 n): sklearn's ``roc_auc_score``."""
    return windowed_partial_auc_from_ranks(ranks, 0.0, 1.0)


def hit_rate(scores: Tensor, target: Tensor, k: int) -> Tensor:
    """``[B]`` per-user HR@k of ``scores`` ``[B, N]``, positives at columns ``target``."""
    return hit_rate_from_ranks(positive_ranks(scores, target), k)


def ndcg(scores: Tensor, target: Tensor, k: int) -> Tensor:
    """``[B]`` per-user NDCG@k of ``scores`` ``[B, N]``, positives at columns ``target``."""
    return ndcg_from_ranks(positive_ranks(scores, target), k)


def auc(scores: Tensor, target: Tensor) -> Tensor:
    """``[B]`` per-user AUC of ``scores`` ``[B, N]``, positives at columns ``target``."""
    return auc_from_ranks(positive_ranks(scores, target))


def windowed_partial_auc(scores: Tensor, target: Tensor, alpha: float, d: float) -> Tensor:
    """``[B]`` per-user WPAUC over FPR ``[alpha, alpha + d]`` of ``scores`` ``[B, N]`` with
    positives at columns ``target`` ``[B]``."""
    return windowed_partial_auc_from_ranks(positive_ranks(scores, target), alpha, d)


def _check_scores_and_target(scores: Tensor, target: Tensor) -> None:
    if not isinstance(scores, Tensor) or scores.ndim != 2 or not scores.is_floating_point():
        raise ValueError(f"scores must be a 2-D float tensor [B, N], got {_describe(scores)}")
    batch, num_items = scores.shape
    if num_items < 2:
        raise ValueError(
            f"scores must have N >= 2 columns (a positive and a negative), got N={num_items}"
        )
    if (
        not isinstance(target, Tensor)
        or target.is_floating_point()
        or target.is_complex()
        or target.dtype == torch.bool
    ):
        raise ValueError(f"target must be an integer tensor [B], got {_describe(target)}")
    if target.shape != (batch,):
        raise ValueError(
            f"target must have shape [B]=[{batch}] to match scores, got {list(target.shape)}"
        )
    if target.device != scores.device:
        raise ValueError(f"target is on {target.device} but scores on {scores.device}")
    out_of_range = (target < 0) | (target >= num_items)
    if out_of_range.any():
        row = int(out_of_range.nonzero()[0, 0])
        raise ValueError(
            f"target[{row}]={int(target[row])} is not a column of scores (N={num_items})"
        )
    finite_rows = torch.isfinite(scores).all(dim=1)
    if not finite_rows.all():
        row = int((~finite_rows).nonzero()[0, 0])
        bad = scores[row][~torch.isfinite(scores[row])][0].item()
        raise ValueError(
            f"scores row {row} holds a non-finite value ({bad}); ranks would be meaningless"
        )


def _work_dtype(tensor: Tensor) -> torch.dtype:
    # float64 keeps the window integral exact to ~1e-15 even for catalogs of millions;
    # MPS has no float64
    return torch.float32 if tensor.device.type == "mps" else torch.float64


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    return f"{type(value).__name__} {value!r}"[:200]


__all__ = [
    "PositiveRanks",
    "auc",
    "auc_from_ranks",
    "hit_rate",
    "hit_rate_from_ranks",
    "ndcg",
    "ndcg_from_ranks",
    "positive_ranks",
    "validate_top_k",
    "windowed_partial_auc",
    "windowed_partial_auc_from_ranks",
]
