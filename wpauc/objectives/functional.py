"""The maths of the RL objectives as pure torch functions (no Lightning, no models).

Shapes: B contexts, G members per group (the positive and its negatives), L code tokens.

Why GRPO with binary rewards is AUC (docs/design.md): a group holds the positive and
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


AGGREGATIONS = ("sequence_mean", "token_mean", "sequence_sum")
"""How `policy_loss` reduces per-token terms: the mean over each sequence's tokens, then
over sequences (TRL's `grpo`); the mean over all valid tokens of the batch (DAPO); the sum
over each sequence's tokens, then the mean over sequences (the loss on the item score
`s(i|x)` itself, with no length normalisation)."""


def aggregate(
    per_token: Tensor, token_mask: Tensor, sequence_mask: Tensor, aggregation: str
) -> Tensor:
    """Reduce `[B, G, L]` per-token terms to a scalar as `aggregation` says (see
    `AGGREGATIONS`); `token_mask` `[B, G, L]` and `sequence_mask` `[B, G]` mark what counts."""
    token_weights = token_mask.to(per_token.dtype)
    if aggregation == "token_mean":
        return (per_token * token_weights).sum() / token_weights.sum().clamp_min(1.0)
    per_sequence = (per_token * token_weights).sum(-1)
    if aggregation == "sequence_mean":
        per_sequence = per_sequence / token_weights.sum(-1).clamp_min(1.0)
    elif aggregation != "sequence_sum":
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
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
    aggregation: str = "sequence_mean",
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO-clipped GRPO loss with a k3 KL penalty, aggregated like TRL's `grpo` loss type.

    Per token: `-min(ratio * A, clip(ratio, 1 - epsilon, 1 + epsilon_high) * A)
    + beta * k3_kl(logp, ref_logp)` with `ratio = exp(logp - old_logp)`; then the mean over
    each sequence's valid tokens, then the mean over the valid sequences (members with
    `member_mask` True and at least one valid token). Because of the token mean, the item
    score this loss pushes on is length-normalised: `s(i|x) / len(code)`. For fixed-length
    SID codes that is a constant factor (the AUC reading of docs/design.md holds as is); for
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
        aggregation: how per-token terms are reduced, one of `AGGREGATIONS`; the
            description above is the default, `"sequence_mean"`.

    Returns:
        `(loss, stats)`; `loss = pg_loss + beta * kl` where `pg_loss` and `kl` are the
        clipped surrogate and the k3 KL under the same aggregation. Stats (detached scalars):
        `pg_loss`, `kl`, `clip_ratio_low` / `clip_ratio_high` (fraction of valid tokens
        clipped at the lower bound with A < 0 / at the upper bound with A > 0, i.e. where
        the clip removes the gradient, as TRL counts them), `clip_ratio` (their sum) and
        `ratio_mean` (mean ratio over valid tokens) and `surrogate`, the advantage-weighted
        log-probs under the same aggregation: the value whose gradient the unclipped loss
        follows (for binary rewards `sum_j (s+ - s_j) / (G sqrt(m))` of length-normalised
        scores, a pairwise margin), which
        unlike `pg_loss` is not 0 by construction at ratio 1.
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
    pg_loss = aggregate(per_token_pg, valid_tokens, sequence_mask, aggregation)
    if ref_logp is not None:
        kl = aggregate(k3_kl(logp, ref_logp), valid_tokens, sequence_mask, aggregation)
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
            "surrogate": aggregate(
                token_advantages * logp.detach(), valid_tokens, sequence_mask, aggregation
            ),
        }
    return loss, stats


def soft_window_weights(negative_scores: Tensor, lo: int, hi: int, temperature: float) -> Tensor:
    """Soft membership of each negative in the window of negative-ranks `[lo, hi)`.

    Args:
        negative_scores: `[B, R]` scores of the negatives in rank order (best first).
        lo: first window rank.
        hi: one past the last window rank.
        temperature: tau of the sigmoid edges, in score units.

    Returns:
        `[B, R]` weights `sigmoid((t_top - s) / tau) * sigmoid((s - t_bottom) / tau)` with
        the edges at the score midpoints between ranks lo - 1 | lo and hi - 1 | hi (open
        edges when lo = 0 or hi = R).
    """
    num_ranked = negative_scores.shape[-1]
    if not 0 <= lo < hi <= num_ranked:
        raise ValueError(
            f"soft_window_weights: need 0 <= lo < hi <= {num_ranked}, got [{lo}, {hi})"
        )
    scores = negative_scores.float()
    weights = torch.ones_like(scores)
    if lo > 0:
        top_edge = 0.5 * (scores[:, lo - 1] + scores[:, lo])
        weights = weights * torch.sigmoid((top_edge.unsqueeze(-1) - scores) / temperature)
    if hi < num_ranked:
        bottom_edge = 0.5 * (scores[:, hi - 1] + scores[:, hi])
        weights = weights * torch.sigmoid((scores - bottom_edge.unsqueeze(-1)) / temperature)
    return weights


def logistic_pair_weights(
    positive_score: Tensor, negative_scores: Tensor, temperature: float
) -> Tensor:
    """`[B, m]` weight of each negative under the logistic pairwise loss.

    The loss `tau * log(1 + exp(-(s+ - s_j) / tau))` of the margin `s+ - s_j` has derivative
    `-sigmoid((s_j - s+) / tau)`: close to 1 for a negative that out-scores the positive,
    close to 0 for one it already beats by several tau (a saturated pair), 1/2 at a tie.
    Used as member weights of a GRPO group with binary rewards, the expected update becomes
    `sum_j w_j (s+ - s_j) / sqrt(m_eff)`, the gradient of the bounded surrogate, where the
    linear GRPO surrogate weighs every pair alike.

    Args:
        positive_score: `[B]` the positive's score per context.
        negative_scores: `[B, m]` the negatives' scores.
        temperature: tau, in score (summed log-prob) units.
    """
    return torch.sigmoid(
        (negative_scores.float() - positive_score.float().unsqueeze(-1)) / temperature
    )


def rank_gate(positive_rank: Tensor, lo: int, hi: int) -> Tensor:
    """`[B]` bool: the positive's negative-rank (negatives scored above it) is in `[lo, hi)`."""
    return (positive_rank >= lo) & (positive_rank < hi)


def _draw_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    # Random draws must happen on the generator's device; results move back afterwards.
    return generator.device if generator is not None else fallback


def sample_negatives(
    logits: Tensor,
    target: Tensor,
    num_negatives: int,
    generator: torch.Generator | None = None,
    replacement: bool = False,
) -> Tensor:
    """Draw negatives from `softmax(logits)` over the catalog with the positive left out.

    Args:
        logits: `[B, N]` unnormalised log-weights of every catalog item; all zeros is the
            uniform sampler, `scores / temperature` the policy sampler.
        target: `[B]` catalog index of each context's positive, never drawn.
        num_negatives: m, negatives per context.
        generator: torch random generator for reproducible draws; None uses the global one.
        replacement: draw i.i.d. (duplicates possible, as GRPO's own samples are) instead of
            m distinct items. Without replacement the draw is successive sampling
            (Plackett-Luce), done with the Gumbel-top-k trick: exact, and unlike
            `torch.multinomial` it cannot fail when many weights underflow to zero.

    Returns:
        `[B, m]` catalog indices of the negatives.
    """
    batch, num_items = logits.shape
    if target.shape != (batch,):
        raise ValueError(
            f"sample_negatives: target must be [B] = [{batch}], got {tuple(target.shape)}"
        )
    available = num_items - 1
    if num_negatives < 1 or (not replacement and num_negatives > available):
        raise ValueError(
            f"sample_negatives: num_negatives must be in [1, {available}] (catalog of "
            f"{num_items} items less the positive) without replacement, got {num_negatives}"
        )
    device = _draw_device(generator, logits.device)
    rows = torch.arange(batch, device=device)
    masked = logits.detach().float().to(device).clone()
    masked[rows, target.to(device)] = -torch.inf
    if replacement:
        probabilities = torch.softmax(masked, dim=-1)
        drawn = torch.multinomial(
            probabilities, num_negatives, replacement=True, generator=generator
        )
    else:
        uniform = torch.rand(masked.shape, generator=generator, device=device)
        gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(uniform.dtype).tiny)))
        drawn = (masked + gumbel).topk(num_negatives, dim=-1).indices
    return drawn.to(logits.device)


def tail_negatives(
    window_and_above: Tensor,
    target: Tensor,
    num_items: int,
    count: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, float]:
    """Draw negatives uniformly from below the window, to stand for the whole tail.

    The tail is every negative outside `window_and_above` (the negatives of negative-rank
    below the window's end `hi`): the M = N - 1 - hi negatives of negative-rank >= hi. A
    uniform draw of `count` of them without replacement includes each with probability
    `count / M`, so giving each drawn one the weight `M / count` makes the expected push on
    EVERY tail negative that of one window negative (docs/design.md section 11).

    Args:
        window_and_above: `[B, hi]` the negatives of negative-rank < hi, never drawn.
        target: `[B]` the positive, never drawn.
        num_items: N, the catalog size.
        count: negatives to draw per context (1 <= count <= M).
        generator: random generator of the draw.

    Returns:
        `(items [B, count], weight)` with `weight = M / count`.
    """
    tail_size = num_items - 1 - window_and_above.shape[-1]
    if not 1 <= count <= tail_size:
        raise ValueError(
            f"tail_negatives: count must be in [1, {tail_size}] (negatives below the "
            f"window), got {count}"
        )
    weight = tail_size / count
    if count == tail_size:  # the whole tail, in catalog order: exact, and no draw to pay for
        in_tail = torch.ones(target.shape[0], num_items, dtype=torch.bool, device=target.device)
        in_tail.scatter_(-1, window_and_above, False)
        in_tail.scatter_(-1, target.unsqueeze(-1), False)
        return in_tail.nonzero()[:, 1].view(target.shape[0], count), weight
    device = _draw_device(generator, target.device)
    # The `count` smallest of i.i.d. uniform keys are a uniform subset; excluded items get
    # keys above every draw in [0, 1).
    keys = torch.rand(target.shape[0], num_items, generator=generator, device=device)
    keys.scatter_(-1, window_and_above.to(device), 2.0)
    keys.scatter_(-1, target.to(device).unsqueeze(-1), 2.0)
    drawn = keys.topk(count, dim=-1, largest=False).indices
    return drawn.to(target.device), weight


def beam_negatives(
    beam_items: Tensor, beam_scores: Tensor, target: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Drop the positive from each beam list; the negatives below it move up one rank.

    Args:
        beam_items: `[B, W]` catalog indices sorted by score, best first.
        beam_scores: `[B, W]` their scores.
        target: `[B]` the positive of each context.

    Returns:
        `(negative_items [B, W-1], negative_scores [B, W-1], positive_position [B])`. Column
        r holds the negative of 0-based negative-rank r (the threshold adjustment). When
        the positive is absent the W-th negative is cut so every row has W - 1 negatives.
        `positive_position` is the positive's beam position, i.e. the number of negatives
        ranked above it, or W when it is not in the beam (its rank is then >= W).
    """
    width = beam_items.shape[-1]
    is_positive = beam_items == target.unsqueeze(-1)
    if (is_positive.sum(-1) > 1).any():
        raise ValueError("beam_negatives: a beam list holds the positive more than once")
    # Stable sort on the 0/1 flag keeps the negatives in beam order, the positive last.
    order = torch.sort(is_positive.to(torch.uint8), dim=-1, stable=True).indices[:, : width - 1]
    positive_position = positive_beam_position(beam_items, target)
    return beam_items.gather(-1, order), beam_scores.gather(-1, order), positive_position


def positive_beam_position(beam_items: Tensor, target: Tensor) -> Tensor:
    """`[B]` beam position of each context's positive in `beam_items` `[B, W]` (best first),
    i.e. the number of beam items ranked above it, or W when it is not in the beam."""
    width = beam_items.shape[-1]
    positions = torch.arange(width, device=beam_items.device)
    return torch.where(beam_items == target.unsqueeze(-1), positions, width).amin(-1)
