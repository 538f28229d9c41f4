"""Metrics against a known next-item distribution (the synthetic world), in pure torch.

Where the true probabilities P of the next item are known, a ranking's HR@K need not be
estimated from one sampled positive per context: its expectation is the probability mass of
the ranking's top K, free of the test split's sampling noise.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from wpauc.metrics.functional import validate_top_k


def expected_hit_rate(scores: Tensor, true_probs: Tensor, ks: Sequence[int]) -> Tensor:
    """``[B, len(ks)]`` expected HR@K of ranking by ``scores`` ``[B, N]``: the sum of
    ``true_probs`` ``[B, N]`` over each row's K highest-scored items (ties broken by
    ``torch.topk``)."""
    if scores.shape != true_probs.shape or scores.ndim != 2:
        raise ValueError(
            f"scores and true_probs must be [B, N] of one shape, got {list(scores.shape)} and"
            f" {list(true_probs.shape)}"
        )
    ks = [validate_top_k(k) for k in ks]
    if max(ks, default=0) > scores.shape[1]:
        raise ValueError(f"K = {max(ks)} exceeds the catalog's {scores.shape[1]} items")
    top = scores.topk(max(ks, default=1), dim=1).indices
    mass = true_probs.gather(1, top).to(torch.float64).cumsum(dim=1)
    return mass[:, [k - 1 for k in ks]].float()
