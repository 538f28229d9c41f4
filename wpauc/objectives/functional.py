"""The maths of the RL objectives as pure torch functions (no Lightning, no models).

Shapes: B contexts, G members per group (the positive and its negatives), L code tokens.

Why GRPO with binary rewards is AUC (DESIGN.md section 2): a group holds the positive and
m negatives, rewards 1 and 0. With the *population* std the advantages are exactly
`A+ = sqrt(m)` and `A_j = -1/sqrt(m)`, so at ratio 1 the sequence-level loss
`-(1/G) sum_i A_i s_i` equals `-(1/(G sqrt(m))) sum_j (s+ - s_j)`, a linear pairwise AUC
surrogate. The unbiased std (torch's and TRL's default) only rescales every advantage by
the constant `sqrt((G - 1) / G)`, so the choice changes the step size, not the direction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from wpauc.metrics.functional import validate_window

RANK_TOLERANCE = 1e-9
"""Slack when turning a fraction of the catalog into a rank: `ceil(0.1 * 30)` must be 3,
not the 4 that floating point gives (0.1 * 30 == 3.0000000000000004). Products within this
distance above an integer count as that integer."""


def grpo_advantages(
    rewards: Tensor,
    eps: float = 1e-4,
    scale: bool = True,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """Group-relative advantages `(r - mean) / (std + eps)`, one group per row.

    Args:
        rewards: `[B, G]` rewards of the group members.
        eps: added to the std so near-constant groups do not blow up.
        scale: divide by `std + eps`; False only centres (Dr. GRPO style).
        mask: `[B, G]` bool, False for padding members: they are left out of the group
            statistics and get advantage 0. None means every member is real.
        weights: `[B, G]` non-negative member weights (the soft TAWin window). The mean and
            the population std become weighted ones and each advantage is multiplied by its
            member's weight, so weights in {0, 1} give exactly the hard group on the
            weight-1 members. None means weight 1 for every (unmasked) member.

    Returns:
        `[B, G]` advantages. The std is the POPULATION std (divide by the number of
        members, or by the weight sum), which gives `sqrt(m)` / `-1/sqrt(m)` for binary
        rewards (see the module docstring). A group whose members all share one reward gets
        advantage 0 exactly, even with `eps=0`.
    """
    if rewards.dim() != 2:
        raise ValueError(
            f"grpo_advantages: rewards must be [B, G], got shape {tuple(rewards.shape)}"
        )
    rewards = rewards.float()
    member_weights = torch.ones_like(rewards) if weights is None else weights.float()
    if mask is not None:
        member_weights = member_weights * mask.to(rewards.dtype)
    total = member_weights.sum(-1, keepdim=True)
    safe_total = total.clamp_min(torch.finfo(rewards.dtype).tiny)
    mean = (member_weights * rewards).sum(-1, keepdim=True) / safe_total
    centred = rewards - mean
    if scale:
        std = ((member_weights * centred.square()).sum(-1, keepdim=True) / safe_total).sqrt()
        denominator = std + eps
        centred = centred / torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    # Exact zeros for constant groups: float round-off in the mean would otherwise leave
    # tiny centred values that a near-zero std (eps=0) amplifies to +-1.
    present = member_weights > 0
    highest = torch.where(present, rewards, -math.inf).amax(-1, keepdim=True)
    lowest = torch.where(present, rewards, math.inf).amin(-1, keepdim=True)
    varied = highest > lowest
    return torch.where(varied & present, centred * member_weights, torch.zeros_like(centred))


def check_window(alpha: float, d: float, owner: str = "window") -> None:
    """Raise ValueError, naming `owner` and the key, unless 0 <= alpha, 0 < d, alpha + d <= 1
    (the metrics' own window check, so objectives and metrics accept the same windows)."""
    try:
        validate_window(alpha, d)
    except ValueError as error:
        raise ValueError(f"{owner}: {error}") from None


def rank_ceil(fraction: float, num_negatives: int) -> int:
    """`ceil(fraction * num_negatives)`, robust to floating point (see RANK_TOLERANCE)."""
    return max(0, math.ceil(fraction * num_negatives - RANK_TOLERANCE))


def window_bounds(num_negatives: int, alpha: float, d: float) -> tuple[int, int]:
    """0-based negative-ranks `[lo, hi)` of the WPAUC window FPR in `[alpha, alpha + d]`.

    `lo = ceil(alpha * n)` and `hi = ceil((alpha + d) * n)` with n = `num_negatives`: the
    negatives the positive has to out-rank for its ROC to reach TPR 1 inside the window.
    The window may hold no negative when `d * n < 1`; callers that need one check `hi > lo`.
    """
    if num_negatives < 0:
        raise ValueError(f"window_bounds: num_negatives must be >= 0, got {num_negatives}")
    check_window(alpha, d)
    hi = min(rank_ceil(alpha + d, num_negatives), num_negatives)
    return min(rank_ceil(alpha, num_negatives), hi), hi


def window_mask(neg_rank: Tensor, num_negatives: int, alpha: float, d: float) -> Tensor:
    """Bool mask of the negatives inside the window: 0-based `neg_rank` in `[lo, hi)`.

    `neg_rank` is the rank of each negative among the negatives only (the positive
    removed), `num_negatives` the catalog's n = N - 1; see `window_bounds`.
    """
    lo, hi = window_bounds(num_negatives, alpha, d)
    return (neg_rank >= lo) & (neg_rank < hi)


def rank_aware_penalties(num_beams: int) -> Tensor:
    """MiniOneRec's rank-aware penalties for the non-targets at beam positions 0..W-1.

    `-(1/log2(i + 2)) / sum_j 1/log2(j + 2)`: negative, summing to -1, largest in size at
    the top of the beam (a wrong item ranked first wastes the most NDCG).
    """
    if num_beams < 1:
        raise ValueError(f"rank_aware_penalties: num_beams must be >= 1, got {num_beams}")
    discounts = 1.0 / torch.log2(torch.arange(num_beams, dtype=torch.float64) + 2.0)
    return (-discounts / discounts.sum()).float()


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(policy || reference): `exp(r) - r - 1`, `r = ref - logp`.

    Non-negative, zero where the two agree, unbiased for the KL under policy samples.
    """
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1.0


def _sequence_then_batch_mean(
    per_token: Tensor, token_mask: Tensor, sequence_mask: Tensor
) -> Tensor:
    """TRL `grpo` aggregation: mean over each sequence's tokens, then over the sequences."""
    token_weights = token_mask.to(per_token.dtype)
    per_sequence = (per_token * token_weights).sum(-1) / token_weights.sum(-1).clamp_min(1.0)
    sequence_weights = sequence_mask.to(per_token.dtype)
    return (per_sequence * sequence_weights).sum() / sequence_weights.sum().clamp_min(1.0)


def policy_loss(
    logp: Tensor,
    old_logp: Tensor | None,
    ref_logp: Tensor | None,
    advantages: Tensor,
    token_mask: Tensor,
    member_mask: Tensor | None = None,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO-clipped GRPO loss with a k3 KL penalty, aggregated like TRL's `grpo` loss type.

    Per token: `-min(ratio * A, clip(ratio, 1 - epsilon, 1 + epsilon_high) * A)
    + beta * k3_kl(logp, ref_logp)` with `ratio = exp(logp - old_logp)`; then the mean over
    each sequence's valid tokens, then the mean over the valid sequences (members with
    `member_mask` True and at least one valid token). Because of the token mean, the item
    score this loss pushes on is length-normalised: `s(i|x) / len(code)`. For fixed-length
    SID codes that is a constant factor (the AUC reading of section 2 holds as is); for
    variable-length title codes it is not, and short titles get larger per-token steps.

    Args:
        logp: `[B, G, L]` per-token log-probs under the current policy (differentiable).
        old_logp: `[B, G, L]` log-probs of the policy that made the rollout. None means
            `logp.detach()`: with `num_iterations = 1` the rollout policy IS the current
            one, the ratio is 1 in value and its gradient is `grad logp` (as in TRL).
        ref_logp: `[B, G, L]` reference-model log-probs; needed when `beta != 0`.
        advantages: `[B, G]`, one per sequence, broadcast over its tokens.
        token_mask: `[B, G, L]` bool, True for real code tokens.
        member_mask: `[B, G]` bool, False for padding members; None means all real.
        epsilon: lower clip range, the ratio is clipped below at `1 - epsilon`.
        epsilon_high: upper clip range (DAPO "clip-higher"); None means `epsilon`.
        beta: weight of the k3 KL to the reference.

    Returns:
        `(loss, stats)`; `loss = pg_loss + beta * kl` where `pg_loss` and `kl` are the
        clipped surrogate and the k3 KL under the same aggregation. Stats (detached scalars):
        `pg_loss`, `kl`, `clip_ratio_low` / `clip_ratio_high` (fraction of valid tokens
        clipped at the lower bound with A < 0 / at the upper bound with A > 0, i.e. where
        the clip removes the gradient, as TRL counts them), `clip_ratio` (their sum) and
        `ratio_mean` (mean ratio over valid tokens).
    """
    if logp.dim() != 3:
        raise ValueError(f"policy_loss: logp must be [B, G, L], got shape {tuple(logp.shape)}")
    if token_mask.shape != logp.shape:
        raise ValueError(
            f"policy_loss: token_mask shape {tuple(token_mask.shape)} != logp shape "
            f"{tuple(logp.shape)}"
        )
    if advantages.shape != logp.shape[:2]:
        raise ValueError(
            f"policy_loss: advantages shape {tuple(advantages.shape)} != [B, G] = "
            f"{tuple(logp.shape[:2])}"
        )
    if beta != 0.0 and ref_logp is None:
        raise ValueError("policy_loss: ref_logp is required when beta != 0")
    upper = epsilon if epsilon_high is None else epsilon_high
    token_mask = token_mask.bool()
    sequence_mask = token_mask.any(-1)
    if member_mask is not None:
        sequence_mask = sequence_mask & member_mask.bool()
    # Padding members only count where both masks agree, also in the token statistics.
    valid_tokens = token_mask & sequence_mask.unsqueeze(-1)

    if old_logp is None:
        old_logp = logp.detach()
    ratio = torch.exp(logp - old_logp)
    clipped_ratio = torch.clamp(ratio, 1.0 - epsilon, 1.0 + upper)
    token_advantages = advantages.to(logp.dtype).unsqueeze(-1)
    per_token_pg = -torch.minimum(ratio * token_advantages, clipped_ratio * token_advantages)
    pg_loss = _sequence_then_batch_mean(per_token_pg, valid_tokens, sequence_mask)
    if ref_logp is not None:
        kl = _sequence_then_batch_mean(k3_kl(logp, ref_logp), valid_tokens, sequence_mask)
    else:
        kl = torch.zeros((), dtype=logp.dtype, device=logp.device)
    loss = pg_loss + beta * kl if beta != 0.0 else pg_loss

    with torch.no_grad():
        token_count = valid_tokens.sum().clamp_min(1)
        clipped_low = (ratio < 1.0 - epsilon) & (token_advantages < 0) & valid_tokens
        clipped_high = (ratio > 1.0 + upper) & (token_advantages > 0) & valid_tokens
        clip_low = clipped_low.sum() / token_count
        clip_high = clipped_high.sum() / token_count
        stats = {
            "pg_loss": pg_loss.detach(),
            "kl": kl.detach(),
            "clip_ratio_low": clip_low,
            "clip_ratio_high": clip_high,
            "clip_ratio": clip_low + clip_high,
            "ratio_mean": (ratio * valid_tokens).sum() / token_count,
        }
    return loss, stats
