"""Differentiable per-token log-probabilities of a group of completions per prompt, with each
prompt computed once and shared by its group."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wpauc.decoding.shared_prefix import (
    check_fits_model,
    check_prompts,
    prompt_positions,
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

    Row b of one forward holds prompt b followed by the first L - 1 tokens of its G completions
    one after another; a 4-D attention mask (tree attention) lets each completion token see the
    prompt and its own completion's earlier tokens only, at the position it has in its own
    sequence. So each prompt is computed once and gradients from all G members flow back
    through it, and the result equals (values and gradients) the forward of every
    ``prompt + completion`` separately. No cache is used, so gradient checkpointing works. The
    model's train/eval mode is left as it is; call under ``torch.no_grad()`` for a reference.

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

    fed = length - 1  # the last token of a completion predicts nothing
    inputs = torch.cat([input_ids, tokens[:, :, :-1].reshape(batch_size, group_size * fed)], dim=1)
    offsets = torch.arange(fed, device=tokens.device).repeat(group_size)
    positions = torch.cat([prompt_positions(attention_mask), lengths[:, None] + offsets], dim=1)
    visible = _group_visibility(attention_mask.bool(), group_size, fed)
    # logits of the prompt's last token and of every fed completion token
    logits = tree_forward(
        model, None, inputs, positions, visible, logits_to_keep=group_size * fed + 1
    )
    first = _picked_log_probs(logits[:, 0], tokens[:, :, 0])  # [B, G]
    vocab_size = logits.shape[-1]
    following = _picked_log_probs(
        logits[:, 1:].view(batch_size, group_size, fed, vocab_size), tokens[:, :, 1:, None]
    ).squeeze(-1)
    log_probs = torch.cat([first.unsqueeze(-1), following], dim=2)
    return log_probs.masked_fill(~completion_mask, 0.0)


def _group_visibility(prompt_mask: Tensor, group_size: int, fed: int) -> Tensor:
    """``[B, T + G * fed, T + G * fed]`` bool: who attends to whom in a prompt + group row.

    Prompt tokens see the real prompt tokens up to themselves (padding sees only itself, which
    keeps its softmax finite); completion tokens see the real prompt tokens and their own
    completion's tokens up to themselves.
    """
    batch_size, prompt_width = prompt_mask.shape
    width = prompt_width + group_size * fed
    device = prompt_mask.device
    visible = torch.zeros(batch_size, width, width, dtype=torch.bool, device=device)
    causal = torch.ones(prompt_width, prompt_width, dtype=torch.bool, device=device).tril()
    itself = torch.eye(prompt_width, dtype=torch.bool, device=device)
    visible[:, :prompt_width, :prompt_width] = (causal & prompt_mask[:, None, :]) | itself
    visible[:, prompt_width:, :prompt_width] = prompt_mask[:, None, :]
    own_earlier = torch.ones(fed, fed, dtype=torch.bool, device=device).tril()
    visible[:, prompt_width:, prompt_width:] = torch.block_diag(*[own_earlier] * group_size)
    return visible


def _picked_log_probs(logits: Tensor, index: Tensor) -> Tensor:
    """``log_softmax(logits, -1).gather(-1, index)`` without materialising the whole log-softmax."""
    return logits.gather(-1, index) - torch.logsumexp(logits, dim=-1, keepdim=True)
