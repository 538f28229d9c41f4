"""Exact score of every catalog item for every prompt, one forward per distinct trie prefix."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from wpauc.decoding.shared_prefix import (
    LOGIT_ELEMENTS,
    EncodedPrompts,
    cache_from,
    check_fits_model,
    check_prompts,
    edge_log_probs,
    encode_prompts,
    eval_mode,
    prompt_visibility,
    tree_forward,
)
from wpauc.decoding.trie import ItemTrie

_MAX_CHUNK_NODES = 128
"""Default cap on the nodes per forward: each node attends over the whole chunk (tree
attention), so bigger chunks cost attention while smaller ones cost per-call overhead."""


def score_items(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    trie: ItemTrie,
    renormalize: bool = False,
    chunk_nodes: int | None = None,
) -> Tensor:
    """``[B, N]`` score of every item for every prompt: the summed log-probabilities of its code.

    The trie is walked depth by depth. Every inner node of depth d >= 1 runs once per prompt as a
    single token on the prompt cache, attending to the prompt, to its d - 1 ancestors (whose
    keys/values were kept from the earlier depths) and to itself; its logits score all its
    children at once. The root's children are scored by the prompt's last logits. So the model
    runs ``#inner nodes`` tokens per prompt instead of ``N * code length``, and never recomputes
    the prompt. A chunk of nodes of one depth is one forward of ``B`` rows (tree attention).

    Memory: the keys/values of every inner node for every prompt are kept until the end
    (``B * #inner nodes`` tokens of cache).

    Args:
        model: a Hugging Face causal LM whose vocabulary holds the code tokens.
        input_ids: ``[B, T]`` left-padded prompts.
        attention_mask: ``[B, T]`` 1 for prompt tokens, 0 for left padding.
        trie: the catalog's codes.
        renormalize: normalise each step over the allowed continuations instead of the vocabulary.
        chunk_nodes: trie nodes per forward; default: 128, fewer where ``B * nodes * V`` logits
            would exceed 2**26 elements.

    Returns:
        ``[B, N]`` float32 scores, column i for catalog item i.
    """
    lengths = check_prompts(input_ids, attention_mask)
    check_fits_model(model, lengths, trie.max_code_length, trie.max_token_id)
    if chunk_nodes is not None and chunk_nodes < 1:
        raise ValueError(f"chunk_nodes={chunk_nodes} must be positive")
    trie = trie.to(input_ids.device)
    batch_size, device = input_ids.shape[0], input_ids.device
    with torch.no_grad(), eval_mode(model):
        prompts = encode_prompts(model, input_ids, attention_mask)
        chunk_nodes = chunk_nodes or _default_chunk_nodes(prompts)
        node_scores = torch.zeros(batch_size, trie.num_nodes, device=device)
        all_prompts = torch.arange(batch_size, device=device)
        _score_children(
            trie,
            node_scores,
            all_prompts,
            torch.zeros_like(all_prompts),
            prompts.last_logits,
            renormalize,
        )

        inner = ~trie.is_leaf(torch.arange(trie.num_nodes, device=device))
        inner[0] = False  # the root's cache is the prompt itself
        inner_nodes = inner.nonzero().flatten()
        inner_index = inner.long().cumsum(0) - 1  # column of each inner node in the node cache
        # [B, kv_heads, #inner, head_dim] per layer: the keys/values of every inner node
        node_keys = [
            keys.new_empty(*keys.shape[:2], len(inner_nodes), keys.shape[3])
            for keys in prompts.keys
        ]
        node_values = [
            values.new_empty(*values.shape[:2], len(inner_nodes), values.shape[3])
            for values in prompts.values
        ]

        for depth in range(1, trie.max_code_length):
            level = inner_nodes[trie.node_depth[inner_nodes] == depth]
            for start in range(0, len(level), chunk_nodes):
                nodes = level[start : start + chunk_nodes]
                cache, visible = _chunk_cache(
                    model, prompts, trie, nodes, depth, inner_index, node_keys, node_values
                )
                tokens = trie.node_token[nodes].expand(batch_size, -1)
                positions = (prompts.lengths[:, None] + depth - 1).expand(batch_size, len(nodes))
                logits = tree_forward(model, cache, tokens, positions, visible)
                columns = slice(int(inner_index[nodes[0]]), int(inner_index[nodes[-1]]) + 1)
                for store, layer in zip(node_keys, cache.layers, strict=True):
                    store[:, :, columns] = layer.keys[:, :, -len(nodes) :]
                for store, layer in zip(node_values, cache.layers, strict=True):
                    store[:, :, columns] = layer.values[:, :, -len(nodes) :]
                prompt = all_prompts.repeat_interleave(len(nodes))
                _score_children(
                    trie,
                    node_scores,
                    prompt,
                    nodes.repeat(batch_size),
                    logits.flatten(0, 1),
                    renormalize,
                )
    return node_scores[:, trie.item_leaf]


def _chunk_cache(
    model: nn.Module,
    prompts: EncodedPrompts,
    trie: ItemTrie,
    nodes: Tensor,
    depth: int,
    inner_index: Tensor,
    node_keys: list[Tensor],
    node_values: list[Tensor],
) -> tuple[DynamicCache, Tensor]:
    """The cache a chunk of same-depth ``nodes`` runs on, and who sees what.

    The cache is the prompt followed, for each depth above, by the contiguous block of inner
    nodes that spans the chunk's ancestors there (consecutive nodes of one depth have their
    ancestors in consecutive blocks). Returns ``(cache, visible [B, K, P + K])``.
    """
    ancestors = inner_index[trie.ancestors(nodes, depth - 1)]  # [K, depth - 1] node-cache columns
    low, high = ancestors.min(dim=0).values, ancestors.max(dim=0).values
    sizes = high - low + 1
    blocks = [
        slice(first, last + 1) for first, last in zip(low.tolist(), high.tolist(), strict=True)
    ]
    keys = [
        torch.cat([prompt_keys] + [store[:, :, block] for block in blocks], dim=2)
        for prompt_keys, store in zip(prompts.keys, node_keys, strict=True)
    ]
    values = [
        torch.cat([prompt_values] + [store[:, :, block] for block in blocks], dim=2)
        for prompt_values, store in zip(prompts.values, node_values, strict=True)
    ]
    # after the prompt: each node sees its ancestors in their blocks, then itself
    num_nodes, num_cached = len(nodes), int(sizes.sum())
    tree = torch.zeros(num_nodes, num_cached + num_nodes, dtype=torch.bool, device=nodes.device)
    tree.scatter_(1, (sizes.cumsum(0) - sizes) + ancestors - low, True)
    tree[:, num_cached:] = torch.eye(num_nodes, dtype=torch.bool, device=nodes.device)
    batch_size = prompts.attention_mask.shape[0]
    visible = torch.cat(
        [prompt_visibility(prompts, num_nodes), tree.expand(batch_size, -1, -1)], dim=2
    )
    return cache_from(model, keys, values), visible


def _score_children(
    trie: ItemTrie,
    node_scores: Tensor,
    prompt: Tensor,
    parents: Tensor,
    logits: Tensor,
    renormalize: bool,
) -> None:
    """Sets ``node_scores[prompt, child] = node_scores[prompt, parent] + log p(child | parent)``
    for every child of every ``(prompt[r], parents[r])`` pair, ``logits`` ``[R, V]`` being the
    model's output after the parent's prefix."""
    row, child = trie.children(parents)
    log_probs = edge_log_probs(logits, row, trie.node_token[child], renormalize)
    node_scores[prompt[row], child] = node_scores[prompt[row], parents[row]] + log_probs


def _default_chunk_nodes(prompts: EncodedPrompts) -> int:
    """Nodes per forward: at most 128, and at most 2**26 elements of logits."""
    batch_size, vocab_size = prompts.last_logits.shape
    return max(1, min(_MAX_CHUNK_NODES, LOGIT_ELEMENTS // (batch_size * vocab_size)))
