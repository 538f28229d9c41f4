"""Negative samplers and beam-list helpers, as pure torch functions over catalog indices."""

from __future__ import annotations

import torch
from torch import Tensor


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
