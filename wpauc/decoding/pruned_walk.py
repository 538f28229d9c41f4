"""Steps 2 and 3 of the pruned ranking (:func:`wpauc.decoding.exact_positive_ranks`): walk the
trie depth by depth from given thresholds, run only the prefixes that reach their context's
threshold (and the positive's own), and count the finished items against the positive."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wpauc.decoding.prefix_rows import PrefixCache, RowLayout, forward_prefixes
from wpauc.decoding.shared_prefix import EncodedPrompts, edge_log_probs
from wpauc.decoding.trie import ItemTrie

_LOGIT_ELEMENTS = 2**24
"""Memory budget of one forward's logits, in elements (``prefixes * V``)."""
_CACHE_ELEMENTS = 2**27
"""Memory budget of one forward's gathered keys and values, in elements."""
_MAX_CHUNK_PREFIXES = 8192
"""Default cap on the prefixes per forward."""
_MAX_ROW_QUERIES = 128
"""Cap on the prefixes of one context that share a row (and its prompt) in a forward."""


@dataclass(frozen=True)
class WalkCounts:
    """What one walk found for each context (all ``[B]``)."""

    gt: Tensor
    """long: kept items (positive excluded) scored strictly above the positive."""
    ge: Tensor
    """long: kept items (positive excluded) scored at or above the positive."""
    at_threshold: Tensor
    """long: kept items (positive excluded) scored at or above the context's threshold: every
    item that does is kept, so this is their exact number (unless censored)."""
    unresolved: Tensor
    """long: items under prefixes left unexpanded because of ``max_expansions``."""
    expansions: Tensor
    """long: prefixes run through the model."""
    positive_scores: Tensor
    """float32: the positive's score, accumulated exactly as every counted item's score."""


class PrunedWalk:
    """Steps 2 and 3 of :func:`~wpauc.decoding.exact_positive_ranks`: one model, trie and
    set of options, run on any prompts and thresholds."""

    def __init__(
        self,
        model: nn.Module,
        trie: ItemTrie,
        renormalize: bool,
        max_expansions: int | None,
        chunk_size: int | None,
    ) -> None:
        self.model, self.trie, self.renormalize = model, trie, renormalize
        self.max_expansions, self.chunk_size = max_expansions, chunk_size
        self.items_below = items_below(trie)

    def run(self, prompts: EncodedPrompts, target: Tensor, threshold: Tensor) -> WalkCounts:
        """Walks the trie for each context, keeping the prefixes whose partial score is at
        least ``threshold`` ``[B]`` and those of the positive ``target`` ``[B]``, and counts
        the finished items."""
        trie, batch_size = self.trie, target.shape[0]
        device = target.device
        path = code_paths(trie, target)
        cache = PrefixCache(prompts)
        expansions = torch.zeros(batch_size, dtype=torch.long, device=device)
        unresolved = torch.zeros_like(expansions)
        censored = torch.zeros(batch_size, dtype=torch.bool, device=device)
        finished: list[tuple[Tensor, Tensor, Tensor]] = []  # (context, score, is positive)

        context, node = trie.children(torch.zeros(batch_size, dtype=torch.long, device=device))
        scores = edge_log_probs(
            prompts.last_logits, context, trie.node_token[node], self.renormalize
        )
        keep = (scores >= threshold[context]) | (node == path[context, 1])
        context, node, scores = context[keep], node[keep], scores[keep]
        ancestors = torch.zeros(node.numel(), 0, dtype=torch.long, device=device)
        for depth in range(1, trie.max_code_length + 1):
            on_path = node == path[context, depth]
            # a leaf, or (renormalised) a prefix with one item under it: the item's final score
            done = trie.is_leaf(node) | (self.renormalize & (self.items_below[node] == 1))
            finished.append((context[done], scores[done], on_path[done]))
            expand = ~done
            if self.max_expansions is not None:
                wanted = torch.bincount(context[expand], minlength=batch_size)
                censored |= expansions + wanted > self.max_expansions
                dropped = expand & censored[context] & ~on_path
                unresolved.index_add_(0, context[dropped], self.items_below[node[dropped]])
                expand &= ~dropped
            context, node, scores = context[expand], node[expand], scores[expand]
            ancestors = ancestors[expand]
            if node.numel() == 0:
                break
            expansions += torch.bincount(context, minlength=batch_size)
            context, node, scores, ancestors = self._expand(
                prompts, cache, path, threshold, depth, context, node, scores, ancestors
            )

        context, scores, is_positive = (torch.cat(parts) for parts in zip(*finished, strict=True))
        positive_scores = torch.full((batch_size,), torch.nan, device=device)
        positive_scores[context[is_positive]] = scores[is_positive]
        others, positive = ~is_positive, positive_scores[context]

        def count(where: Tensor) -> Tensor:
            return torch.bincount(context[others & where], minlength=batch_size)

        return WalkCounts(
            gt=count(scores > positive),
            ge=count(scores >= positive),
            at_threshold=count(scores >= threshold[context]),
            unresolved=unresolved,
            expansions=expansions,
            positive_scores=positive_scores,
        )

    def _expand(
        self,
        prompts: EncodedPrompts,
        cache: PrefixCache,
        path: Tensor,
        threshold: Tensor,
        depth: int,
        context: Tensor,
        node: Tensor,
        scores: Tensor,
        ancestors: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Runs the kept prefixes of one depth (grouped by context), a chunk of rows at a time,
        and returns their kept children ``(context, node, score, ancestors)``, grouped by
        context."""
        trie = self.trie
        chunk = self.chunk_size or _default_chunk_size(prompts, depth)
        width = min(chunk, _queries_per_row(prompts.attention_mask.shape[1], depth))
        layout = RowLayout.of(context, width)
        rows_per_forward = chunk // width
        kept_children = []
        for first_row in range(0, layout.num_rows, rows_per_forward):
            last_row = min(first_row + rows_per_forward, layout.num_rows)
            pairs = slice(int(layout.row_start[first_row]), int(layout.row_start[last_row]))
            logits, new_keys, new_values = forward_prefixes(
                self.model,
                prompts,
                cache,
                layout.row_context[first_row:last_row],
                layout.row[pairs] - first_row,
                layout.slot[pairs],
                trie.node_token[node[pairs]],
                ancestors[pairs],
                depth,
            )
            parent, child = trie.children(node[pairs])
            child_context = context[pairs][parent]
            child_scores = scores[pairs][parent] + edge_log_probs(
                logits, parent, trie.node_token[child], self.renormalize
            )
            keep = (child_scores >= threshold[child_context]) | (
                child == path[child_context, depth + 1]
            )
            parent, child, child_context, child_scores = (
                parent[keep],
                child[keep],
                child_context[keep],
                child_scores[keep],
            )
            # only prefixes with a child to expand later need their keys/values kept
            has_inner_child = torch.zeros(logits.shape[0], dtype=torch.bool, device=node.device)
            has_inner_child[parent[~trie.is_leaf(child)]] = True
            entry = torch.full_like(has_inner_child, -1, dtype=torch.long)
            entry[has_inner_child] = cache.append(
                [keys[has_inner_child] for keys in new_keys],
                [values[has_inner_child] for values in new_values],
            )
            child_ancestors = torch.cat([ancestors[pairs][parent], entry[parent, None]], dim=1)
            kept_children.append((child_context, child, child_scores, child_ancestors))
        return tuple(torch.cat(parts) for parts in zip(*kept_children, strict=True))


def _queries_per_row(prompt_width: int, depth: int) -> int:
    """Prefixes of one context per row at ``depth``: up to 128, fewer for deep prefixes, so
    that their ancestors (up to ``depth - 1`` each) add about one prompt's worth of keys."""
    return max(1, min(_MAX_ROW_QUERIES, max(prompt_width, 64) // depth))


def code_paths(trie: ItemTrie, items: Tensor) -> Tensor:
    """``[B, max_code_length + 1]``: the node of each item's code prefix of each length (the
    root at 0, the leaf at the code's length), -1 past the leaf."""
    nodes = torch.zeros_like(items)
    path = [nodes]
    lengths = trie.item_code_lengths[items]
    for depth in range(trie.max_code_length):
        nodes = torch.where(depth < lengths, trie.step(nodes, trie.item_codes[items, depth]), -1)
        path.append(nodes)
    return torch.stack(path, dim=1)


def items_below(trie: ItemTrie) -> Tensor:
    """``[num_nodes]`` long: number of items whose code starts with each node's prefix."""
    counts = trie.is_leaf(torch.arange(trie.num_nodes, device=trie.device)).long()
    for depth in range(trie.max_code_length, 0, -1):
        level = slice(int(trie.level_offsets[depth]), int(trie.level_offsets[depth + 1]))
        counts.index_add_(0, trie.node_parent[level], counts[level].clone())
    return counts


def _default_chunk_size(prompts: EncodedPrompts, depth: int) -> int:
    """Prefixes per forward: at most 8192, within the logits and keys/values budgets."""
    vocab_size = prompts.last_logits.shape[1]
    per_token = sum(keys.shape[1] * keys.shape[3] for keys in prompts.keys) * 2
    cached_tokens = prompts.attention_mask.shape[1] + depth
    return max(
        1,
        min(
            _MAX_CHUNK_PREFIXES,
            _LOGIT_ELEMENTS // vocab_size,
            _CACHE_ELEMENTS // (per_token * cached_tokens),
        ),
    )
