"""Diagnostics of a policy's item distribution, and of its distance to the true one."""

from __future__ import annotations

import torch
from torch import Tensor

DIAGNOSTICS = ("entropy", "top1_prob", "kl_to_oracle", "oracle_rank_corr")
"""The names `distribution_diagnostics` can return."""


def distribution_diagnostics(
    scores: Tensor, true_probs: Tensor | None = None, top: int = 50
) -> dict[str, Tensor]:
    """Per-context `[B]` diagnostics of the item distribution `pi = softmax(scores)`.

    Scores are item log-probs (summed code log-probs); `pi` renormalises them over the
    catalog. Returns `entropy` (nats), `top1_prob` and, with `true_probs` `[B, N]` (p),
    `kl_to_oracle` = KL(p || pi) and `oracle_rank_corr`, the Spearman correlation of pi
    with p on p's top `top` items (1: pi orders the items that matter as p does).
    """
    log_pi = scores.double().log_softmax(-1)
    pi = log_pi.exp()
    result = {
        "entropy": -(pi * log_pi).sum(-1),
        "top1_prob": pi.max(-1).values,
    }
    if true_probs is not None:
        p = true_probs.double()
        log_p = p.clamp_min(torch.finfo(torch.float64).tiny).log()
        result["kl_to_oracle"] = torch.where(p > 0, p * (log_p - log_pi), 0.0).sum(-1)
        head = p.argsort(-1, descending=True)[:, :top]
        result["oracle_rank_corr"] = row_spearman(log_pi.gather(-1, head), p.gather(-1, head))
    return {name: value.float() for name, value in result.items()}


def row_spearman(x: Tensor, y: Tensor) -> Tensor:
    """Row-wise Spearman correlation of `[B, k]` tensors (average ranks for ties)."""
    rank_x, rank_y = _row_ranks(x), _row_ranks(y)
    rank_x = rank_x - rank_x.mean(-1, keepdim=True)
    rank_y = rank_y - rank_y.mean(-1, keepdim=True)
    denominator = (rank_x.square().sum(-1) * rank_y.square().sum(-1)).sqrt()
    return torch.where(
        denominator > 0, (rank_x * rank_y).sum(-1) / denominator.clamp_min(1e-300), 0.0
    )


def _row_ranks(values: Tensor) -> Tensor:
    smaller = (values.unsqueeze(-2) < values.unsqueeze(-1)).double().sum(-1)
    equal = (values.unsqueeze(-2) == values.unsqueeze(-1)).double().sum(-1)
    return smaller + (equal - 1) / 2
