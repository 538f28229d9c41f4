"""Differentiable per-token log-probabilities of a group of completions per prompt, with each
prompt encoded once and shared by its group."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wpauc.decoding.shared_prefix import (
    check_fits_model,
    check_prompts,
    encode_prompts,
    prompt_visibility,
    tree_forward,
)


def completion_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completions: Tensor,
    completion_mask: Tensor,
) -> Tensor:
    """``[B, G, L]`` log-probability of each completion token given its prompt and earlier tokens.

    The prompts go through the model once; then all G completions of a prompt run as one row on
    its cache (tree attention: each token sees the prompt and its own completion's earlier
    tokens), so gradients from all G members flow back through the one prompt encoding.
    The result equals (values and gradients) the forward of every ``prompt + completion``
    separately. The model's train/eval mode is left as it is; call under ``torch.no_grad()`` for
    a reference model.

    Args:
        model: a Hugging Face causal LM (a peft-wrapped one too).
        input_ids: ``[B, T]`` left-padded prompts.
        attention_mask: ``[B, T]`` 1 for prompt tokens, 0 for left padding.
        completions: ``[B, G, L]`` token ids of G completions per prompt, right-padded.
        completion_mask: ``[B, G, L]`` bool, True on real completion tokens (a prefix of each row).

    Returns:
        ``[B, G, L]`` float32 log-probabilities, 0 where ``completion_mask`` is False.
    """
    lengths = check_prompts(input_ids, attention_mask)
    if (
        completions.ndim != 3
        or completions.shape[0] != input_ids.shape[0]
        or completions.shape[2] == 0
    ):
        raise ValueError(
            f"completions must be [B, G, L] with B = {input_ids.shape[0]} prompts and L >= 1; "
            f"got {tuple(completions.shape)}"
        )
    if completion_mask.shape != completions.shape:
        raise ValueError(
            f"completion_mask {tuple(completion_mask.shape)} must have the shape of completions "
            f"{tuple(completions.shape)}"
        )
    completion_mask = completion_mask.bool()
    if (completion_mask[..., 1:] & ~completion_mask[..., :-1]).any():
        raise ValueError(
            "completion_mask must be right-padded: True on a prefix of each completion, then False"
        )
    tokens = completions.masked_fill(~completion_mask, 0)
    batch_size, group_size, length = tokens.shape
    check_fits_model(model, lengths, length, int(tokens.max()))

    prompts = encode_prompts(model, input_ids, attention_mask)
    log_probs = [_picked_log_probs(prompts.last_logits, tokens[:, :, 0]).unsqueeze(-1)]  # [B, G, 1]
    if length > 1:
        # row b holds the first L - 1 tokens of its G completions one after another
        fed = length - 1
        inputs = tokens[:, :, :-1].reshape(batch_size, group_size * fed)
        offsets = torch.arange(fed, device=tokens.device).repeat(group_size)
        own_earlier = torch.block_diag(
            *[torch.ones(fed, fed, dtype=torch.bool, device=tokens.device).tril()] * group_size
        )
        visible = torch.cat(
            [prompt_visibility(prompts, group_size * fed), own_earlier.expand(batch_size, -1, -1)],
            dim=2,
        )
        logits = tree_forward(
            model, prompts.cache, inputs, prompts.lengths[:, None] + offsets, visible
        )
        following = _picked_log_probs(
            logits.view(batch_size, group_size, fed, -1), tokens[:, :, 1:, None]
        )
        log_probs.append(following.squeeze(-1))
    return torch.cat(log_probs, dim=2).masked_fill(~completion_mask, 0.0)


def _picked_log_probs(logits: Tensor, index: Tensor) -> Tensor:
    """``log_softmax(logits, -1).gather(-1, index)`` without materialising the whole log-softmax."""
    return logits.gather(-1, index) - torch.logsumexp(logits, dim=-1, keepdim=True)
