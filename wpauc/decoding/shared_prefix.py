"""Encode each prompt once, then run many short branches (beams, trie prefixes, group
members) on top of its key/value cache with "tree attention".

All the new tokens that continue one prompt go through the model as one row: each sees the
prompt, its own ancestors (earlier branch tokens, already in the cache) and itself, through a
4-D additive attention mask, at the position it would have in its own full sequence (explicit
``position_ids``). Cached keys already carry their rotary position, so this is exactly the
forward of every ``prompt + branch`` separately, while the prompt is computed once and never
copied per branch. Prompts are left-padded (``attention_mask`` rows ``0..0 1..1``), as Hugging
Face ``generate`` expects for decoder-only models. The model must accept 4-D float masks
(Hugging Face ``sdpa`` and ``eager`` attention do).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import DynamicCache

LOGIT_ELEMENTS = 2**26
"""Memory budget of one forward's logits, in elements (tokens * V): 441 tokens at a
151,936-token vocabulary, 256 MiB of float32. Forwards of fewer tokens leave a large model
bound by per-layer launch costs rather than by its FLOPs."""


@dataclass
class EncodedPrompts:
    """The prompts after one forward: their cache and the logits at their last token."""

    cache: DynamicCache
    """The prompts' cache; branches run with :func:`tree_forward` append to it."""
    keys: list[Tensor]
    """Per layer ``[B, kv_heads, T, head_dim]`` cached keys."""
    values: list[Tensor]
    """Per layer ``[B, kv_heads, T, head_dim]`` cached values."""
    attention_mask: Tensor
    """``[B, T]`` the prompts' (left-padded) attention mask."""
    lengths: Tensor
    """``[B]`` number of real tokens per prompt (the first branch token's position)."""
    last_logits: Tensor
    """``[B, V]`` float32 logits of the token after each prompt."""


def check_prompts(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Validates a left-padded prompt batch and returns the real length of each row.

    Raises:
        ValueError: wrong shapes, zero length, an all-padding row, or a row that is not left-padded.
    """
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(
            "input_ids must be [B, T] and attention_mask the same shape; got "
            f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
        )
    if input_ids.shape[1] == 0:
        raise ValueError("empty prompt: input_ids has zero length (T = 0)")
    mask = attention_mask.long()
    if ((mask != 0) & (mask != 1)).any():
        raise ValueError("attention_mask must hold only 0 and 1")
    lengths = mask.sum(dim=1)
    empty_rows = (lengths == 0).nonzero().flatten()
    if empty_rows.numel():
        raise ValueError(
            f"empty prompt: attention_mask rows {empty_rows[:10].tolist()} are all padding"
        )
    not_left_padded = (mask[:, 1:] < mask[:, :-1]).any(dim=1).nonzero().flatten()
    if not_left_padded.numel():
        raise ValueError(
            "prompts must be left-padded (mask 0..0 1..1); rows "
            f"{not_left_padded[:10].tolist()} are not"
        )
    return lengths


def check_fits_model(model: nn.Module, lengths: Tensor, new_tokens: int, max_token_id: int) -> None:
    """Raises ValueError when ``prompt + new_tokens`` exceeds the model's positions or a token id
    is outside its vocabulary."""
    max_positions = getattr(model.config, "max_position_embeddings", None)
    longest = int(lengths.max())
    if max_positions is not None and longest + new_tokens > max_positions:
        row = int(lengths.argmax())
        raise ValueError(
            f"prompt row {row} has {longest} tokens; with {new_tokens} code tokens it exceeds the "
            f"model's max_position_embeddings={max_positions} (prompts may hold at most "
            f"{max_positions - new_tokens})"
        )
    vocab_size = embedding_rows(model)
    if max_token_id >= vocab_size:
        raise ValueError(
            f"the codes use token id {max_token_id} but the model's vocabulary has only "
            f"{vocab_size} tokens; add the code tokens to the tokenizer and resize the model's "
            "embeddings"
        )


def embedding_rows(model: nn.Module) -> int:
    """Number of token ids the model can read and emit: the smaller of its input embedding
    rows and its output (lm_head) rows, which differ only in unusual checkpoints."""
    rows = model.get_input_embeddings().weight.shape[0]
    output_embeddings = model.get_output_embeddings()
    if output_embeddings is not None:
        rows = min(rows, output_embeddings.weight.shape[0])
    return rows


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Puts the model in eval mode (no dropout) and restores its training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def encode_prompts(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> EncodedPrompts:
    """One forward of the left-padded prompts; differentiable unless called under no_grad."""
    lengths = attention_mask.long().sum(dim=1)
    cache = DynamicCache(config=model.config)
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=prompt_positions(attention_mask),
        use_cache=True,
        logits_to_keep=1,
        **{_cache_argument(model): cache},
    )
    return EncodedPrompts(
        cache=cache,
        keys=[layer.keys for layer in cache.layers],
        values=[layer.values for layer in cache.layers],
        attention_mask=attention_mask,
        lengths=lengths,
        last_logits=output.logits[:, -1].float(),
    )


def prompt_positions(attention_mask: Tensor) -> Tensor:
    """``[B, T]`` position of each prompt token: real tokens count from 0 after the left
    padding (padding gets 0), as in the unpadded sequence."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def tree_forward(
    model: nn.Module,
    cache: DynamicCache | None,
    tokens: Tensor,
    positions: Tensor,
    visible: Tensor,
    logits_to_keep: int = 0,
) -> Tensor:
    """Runs ``tokens`` (after ``cache``), each token seeing exactly the keys ``visible`` allows.

    Args:
        model: the causal LM (that built ``cache``).
        cache: ``P`` cached tokens per row, to which the new tokens are appended; ``None`` runs
            without a cache (``P = 0``; works under gradient checkpointing).
        tokens: ``[B, Q]`` new tokens.
        positions: ``[B, Q]`` their positions in their own sequences.
        visible: ``[B, Q, P + Q]`` bool, which cached and new tokens each new token attends to
            (it must at least see itself).
        logits_to_keep: return the logits of the last ``logits_to_keep`` tokens only (0: all).

    Returns:
        ``[B, Q or logits_to_keep, V]`` float32 logits.
    """
    dtype = model.get_input_embeddings().weight.dtype
    additive_mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    additive_mask.masked_fill_(~visible, torch.finfo(dtype).min)
    cache_arguments = (
        {"use_cache": False}
        if cache is None
        else {"use_cache": True, _cache_argument(model): cache}
    )
    output = model(
        input_ids=tokens,
        attention_mask=additive_mask[:, None],
        position_ids=positions,
        logits_to_keep=logits_to_keep,
        **cache_arguments,
    )
    return output.logits.float()


def cache_from(model: nn.Module, keys: list[Tensor], values: list[Tensor]) -> DynamicCache:
    """A cache holding the given per-layer keys and values ``[B, kv_heads, P, head_dim]``."""
    return DynamicCache(ddp_cache_data=list(zip(keys, values, strict=True)), config=model.config)


def prompt_visibility(prompts: EncodedPrompts, num_queries: int) -> Tensor:
    """``[B, num_queries, T]`` bool: every new token sees its prompt's real tokens."""
    return prompts.attention_mask.bool()[:, None, :].expand(-1, num_queries, -1)


def edge_log_probs(logits: Tensor, rows: Tensor, tokens: Tensor, renormalize: bool) -> Tensor:
    """Log-probability of token ``tokens[e]`` after row ``rows[e]`` of ``logits`` ``[R, V]``.

    Raw mode normalises over the whole vocabulary (Hugging Face beam-search scores); with
    ``renormalize`` each row is normalised over its own edges only (the allowed continuations).
    """
    picked = logits[rows, tokens]
    if renormalize:
        return picked - segment_logsumexp(picked, rows, logits.shape[0])[rows]
    return picked - torch.logsumexp(logits, dim=-1)[rows]


def segment_logsumexp(values: Tensor, segments: Tensor, num_segments: int) -> Tensor:
    """``[E] -> [num_segments]`` logsumexp of the values of each segment (-inf where empty)."""
    maxima = torch.full((num_segments,), -torch.inf, dtype=values.dtype, device=values.device)
    maxima = maxima.scatter_reduce(0, segments, values, reduce="amax")
    sums = torch.zeros_like(maxima).index_add(0, segments, (values - maxima[segments]).exp())
    return maxima + sums.log()


def _cache_argument(model: nn.Module) -> str:
    """Name of the forward argument that takes the cache (``cache`` from transformers 5)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
