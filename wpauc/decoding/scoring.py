"""Exact score of every catalog item for every prompt, one forward per distinct trie prefix."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wpauc.decoding.shared_prefix import (
    EncodedPrompts,
    check_fits_model,
    check_prompts,
    edge_log_probs,
    encode_prompts,
    eval_mode,
    forward_branches,
)
from wpauc.decoding.trie import ItemTrie

_CHUNK_ELEMENTS = 2**25
"""Default memory budget of one forward chunk, in tensor elements (logits or branch cache per row)."""


def score_items(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    trie: ItemTrie,
    renormalize: bool = False,
    max_rows: int | None = None,
) -> Tensor:
    """``[B, N]`` score of every item for every prompt: the summed log-probabilities of its code.

    The trie is walked depth by depth. Every inner node of depth d >= 1 is run once per prompt as
    a single token on top of the prompt cache and its d - 1 ancestors' cached keys/values (kept
    from the earlier depths), and its logits score all its children at once. The root's children
    are scored by the prompt's last logits. So the model runs ``#inner nodes`` tokens per prompt,
    not ``N * code length``.

    Memory: the cache of every inner node for every prompt is kept until the end
    (``B * #inner nodes`` tokens' keys/values); forwards are chunked to ``max_rows`` rows.

    Args:
        model: a Hugging Face causal LM whose vocabulary holds the code tokens.
        input_ids: ``[B, T]`` left-padded prompts.
        attention_mask: ``[B, T]`` 1 for prompt tokens, 0 for left padding.
        trie: the catalog's codes.
        renormalize: normalise each step over the allowed continuations instead of the vocabulary.
        max_rows: (prompt, node) rows per forward; default: as many as fit a budget of about
            2**25 elements of logits or cache per chunk.

    Returns:
        ``[B, N]`` float32 scores, column i for catalog item i.
    """
    lengths = check_prompts(input_ids, attention_mask)
    check_fits_model(model, lengths, trie.max_code_length, trie.max_token_id)
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows={max_rows} must be positive")
    trie = trie.to(input_ids.device)
    batch_size, device = input_ids.shape[0], input_ids.device
    with torch.no_grad(), eval_mode(model):
        prompts = encode_prompts(model, input_ids, attention_mask)
        rows = max_rows or _default_rows(prompts, trie.max_code_length)
        node_scores = torch.zeros(batch_size, trie.num_nodes, device=device)
        all_prompts = torch.arange(batch_size, device=device)
        _score_children(trie, node_scores, all_prompts, torch.zeros_like(all_prompts), prompts.last_logits, renormalize)

        inner = ~trie.is_leaf(torch.arange(trie.num_nodes, device=device))
        inner[0] = False  # the root's "cache" is the prompt itself
        inner_index = inner.long().cumsum(0) - 1  # row of each inner node in the node cache
        num_inner = int(inner.sum())
        node_keys = [keys.new_empty(batch_size, num_inner, keys.shape[1], keys.shape[3]) for keys in prompts.keys]
        node_values = [values.new_empty(batch_size, num_inner, values.shape[1], values.shape[3]) for values in prompts.values]

        for depth in range(1, trie.max_code_length):
            level = torch.arange(int(trie.level_offsets[depth]), int(trie.level_offsets[depth + 1]), device=device)
            level = level[inner[level]]
            ancestors = _ancestors(trie, level, depth - 1)  # [nodes, depth - 1], shallowest first
            num_pairs = batch_size * level.numel()
            for start in range(0, num_pairs, rows):
                pair = torch.arange(start, min(start + rows, num_pairs), device=device)
                prompt, local = pair // level.numel(), pair % level.numel()
                nodes = level[local]
                ancestor_rows = inner_index[ancestors[local]]
                cached = None
                if depth > 1:
                    cached = (
                        [keys[prompt[:, None], ancestor_rows].transpose(1, 2) for keys in node_keys],
                        [values[prompt[:, None], ancestor_rows].transpose(1, 2) for values in node_values],
                    )
                logits, (new_keys, new_values) = forward_branches(
                    model, prompts, prompt, cached, trie.node_token[nodes, None]
                )
                for store, new in zip(node_keys + node_values, new_keys + new_values):
                    store[prompt, inner_index[nodes]] = new[:, :, 0]
                _score_children(trie, node_scores, prompt, nodes, logits[:, 0], renormalize)
    return node_scores[:, trie.item_leaf]


def _score_children(
    trie: ItemTrie, node_scores: Tensor, prompt: Tensor, parents: Tensor, logits: Tensor, renormalize: bool
) -> None:
    """Sets ``node_scores[prompt, child] = node_scores[prompt, parent] + log p(child | parent)``
    for every child of every ``(prompt[r], parents[r])`` pair, ``logits`` ``[R, V]`` being the
    model's output after the parent's prefix."""
    row, child = trie.children(parents)
    log_probs = edge_log_probs(logits, row, trie.node_token[child], renormalize)
    node_scores[prompt[row], child] = node_scores[prompt[row], parents[row]] + log_probs


def _ancestors(trie: ItemTrie, nodes: Tensor, count: int) -> Tensor:
    """``[K, count]`` the ``count`` nearest proper ancestors of each node, shallowest first."""
    chain = [nodes]
    for _ in range(count):
        chain.append(trie.node_parent[chain[-1]])
    return torch.stack(chain[:0:-1], dim=1) if count else nodes.new_empty(nodes.numel(), 0)


def _default_rows(prompts: EncodedPrompts, max_code_length: int) -> int:
    """Rows per chunk so that neither its logits nor its branch cache exceed the element budget."""
    vocab_size = prompts.last_logits.shape[1]
    keys = prompts.keys[0]
    cache_per_row = 2 * len(prompts.keys) * keys.shape[1] * (keys.shape[2] + max_code_length) * keys.shape[3]
    return max(1, _CHUNK_ELEMENTS // max(vocab_size, cache_per_row))
