"""Exact rank of each context's positive in the whole catalog, at the cost of the prefixes that
score at least as high as the positive.

Every ranking metric wpauc reports is a function of two counts per context,
``gt = #{items j != positive: s_j > s+}`` and ``ge = #{j != positive: s_j >= s+}``. An item's
score is the sum of its code's log-probabilities, each <= 0 (also when renormalised over the
allowed continuations), so the partial score of a prefix bounds the score of every item under
it. :func:`exact_positive_ranks` therefore scores the positive first (teacher forcing), then
walks the trie depth by depth and runs the model only on the prefixes whose partial score is
still at least the positive's; every other subtree lies strictly below the positive and is
never looked at. Cost: one model token per prefix that out-scores the positive (few for a
good model), never more than :func:`~wpauc.decoding.score_items`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wpauc.decoding.shared_prefix import (
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

_LOGIT_ELEMENTS = 2**24
"""Memory budget of one forward's logits, in elements (``prefixes * V``)."""
_CACHE_ELEMENTS = 2**27
"""Memory budget of one forward's gathered keys and values, in elements."""
_MAX_CHUNK_PREFIXES = 8192
"""Default cap on the prefixes per forward."""
_MAX_ROW_QUERIES = 128
"""Cap on the prefixes of one context that share a row (and its prompt) in a forward."""
_MARGIN_EPSILONS = 8
"""The pruning threshold sits ``8 * eps * (1 + |s+|)`` below the teacher-forced positive score
(``eps`` of the model's compute dtype), so that the float noise between two forwards of the
same positive cannot prune a prefix the positive ties with."""
_MAX_ATTEMPTS = 3
"""Passes over a context before giving up (a second pass is only needed when the model's
noise exceeds the margin, e.g. in low precision)."""


@dataclass(frozen=True)
class PositiveRankCounts:
    """Where each context's positive ranks in the whole catalog (all ``[B]``)."""

    gt: Tensor
    """long: items (positive excluded) scored strictly above the positive; a lower bound
    where ``censored``."""
    ge: Tensor
    """long: items (positive excluded) scored at or above the positive (``gt`` + ties); a lower
    bound where ``censored``."""
    unresolved: Tensor
    """long: items under prefixes left unexpanded because of ``max_expansions``; each of them
    may or may not out-score the positive, so the true counts lie in
    ``[gt, gt + unresolved]`` and ``[ge, ge + unresolved]``. 0 where the counts are exact."""
    expansions: Tensor
    """long: prefixes run through the model for the context (its cost), over all passes."""
    positive_scores: Tensor
    """float32: the positive's score, accumulated exactly as every counted item's score."""

    @property
    def censored(self) -> Tensor:
        """``[B]`` bool: the context hit ``max_expansions`` and its counts are bounds."""
        return self.unresolved > 0


def exact_positive_ranks(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    trie: ItemTrie,
    target: Tensor,
    renormalize: bool = False,
    max_expansions: int | None = None,
    chunk_size: int | None = None,
) -> PositiveRankCounts:
    """Exact ``gt`` / ``ge`` counts of each context's positive against the whole catalog.

    The same counts as :func:`wpauc.metrics.positive_ranks` of
    :func:`~wpauc.decoding.score_items`' scores, without scoring most items:

    1. the positive's code is teacher-forced on the prompt cache (one forward), giving ``s+``
       and the threshold ``s+ - margin``;
    2. depth by depth, each kept prefix runs as one token on its prompt's cache, attending to
       the prompt, to its ancestors' keys/values (kept from earlier depths) and to itself,
       and its logits score all its children; a child is kept when its partial score is at
       least the threshold (the prefixes of the positive are always kept). The prefixes of one
       context share rows (and the prompt) of a forward, tree attention keeping them apart;
       a forward takes at most ``chunk_size`` prefixes, from any contexts, so memory stays
       bounded whatever the number of kept prefixes;
    3. the finished items that were kept are compared with the positive's score as step 2
       computed it.

    Ties are decided as ``score_items`` decides them: the positive and every counted item are
    summed in the same order (parent partial + edge log-probability, float32, depth by depth)
    from logits of the same kind of forward, and siblings share one logits row, so scores that
    are equal for ``score_items`` (equal logits, equal branching) are equal here and compare
    exactly. The margin only keeps more prefixes (never fewer). Should the positive's score
    from step 2 fall below the threshold (model noise beyond the margin), that context is
    ranked again with the threshold below it, so a pruned prefix is always strictly below the
    positive. With ``renormalize``, a prefix with a single item under it is that item's score
    (every later step has one allowed token, log-probability exactly 0) and is not expanded.

    Memory: the keys/values of every expanded prefix that has a kept non-leaf child are kept
    until the end (``B * expansions`` tokens of cache at most).

    Args:
        model: a Hugging Face causal LM whose vocabulary holds the code tokens.
        input_ids: ``[B, T]`` left-padded prompts.
        attention_mask: ``[B, T]`` 1 for prompt tokens, 0 for left padding.
        trie: the catalog's codes.
        target: ``[B]`` catalog index of each context's positive.
        renormalize: normalise each step over the allowed continuations instead of the
            vocabulary (as ``score_items(renormalize=True)``).
        max_expansions: stop expanding a context's other prefixes once it would run more than
            this many through the model; its counts are then bounds (``censored``,
            ``unresolved``). The positive's own prefixes are always expanded, so a context may
            run up to ``max_expansions`` + its code length. ``None``: no cap, always exact.
        chunk_size: prefixes per forward; default: 8192, fewer where their logits would exceed
            2**24 elements or their gathered keys/values 2**27.

    Returns:
        :class:`PositiveRankCounts`.

    Raises:
        ValueError: bad prompts, targets, caps or chunk sizes; a code the model cannot read;
            a positive whose score is not finite.
        RuntimeError: the model's noise kept the positive below its threshold three times.
    """
    lengths = check_prompts(input_ids, attention_mask)
    check_fits_model(model, lengths, trie.max_code_length, trie.max_token_id)
    _check_target(target, input_ids.shape[0], trie.num_items)
    for name, value in (("max_expansions", max_expansions), ("chunk_size", chunk_size)):
        if value is not None and value < 1:
            raise ValueError(f"{name}={value} must be positive (or None)")
    trie = trie.to(input_ids.device)
    target = target.to(input_ids.device)
    with torch.no_grad(), eval_mode(model):
        prompts = encode_prompts(model, input_ids, attention_mask)
        walk = _PrunedWalk(model, trie, renormalize, max_expansions, chunk_size)
        estimate = _teacher_forced_scores(model, prompts, trie, target, renormalize)
        threshold = estimate - _margin(model, estimate)
        counts = walk.run(prompts, target, threshold)
        for _ in range(_MAX_ATTEMPTS - 1):
            redo = (counts.positive_scores < threshold).nonzero().flatten()
            if redo.numel() == 0:
                break
            threshold[redo] = counts.positive_scores[redo] - _margin(
                model, counts.positive_scores[redo]
            )
            counts = _merge(
                counts, redo, walk.run(_subset(model, prompts, redo), target[redo], threshold[redo])
            )
    if (counts.positive_scores < threshold).any():
        raise RuntimeError(
            f"exact_positive_ranks: the positive's score moved below its threshold in "
            f"{_MAX_ATTEMPTS} passes; the model's outputs are not reproducible enough "
            "(non-deterministic kernels?) to rank exactly"
        )
    bad = (~counts.positive_scores.isfinite()).nonzero().flatten()
    if bad.numel():
        row = int(bad[0])
        raise ValueError(
            f"exact_positive_ranks: the positive of row {row} (item {int(target[row])}) has "
            f"score {float(counts.positive_scores[row])}; ranks would be meaningless"
        )
    return counts


class _PrunedWalk:
    """Step 2 and 3 of :func:`exact_positive_ranks` for one set of thresholds."""

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
        self.items_below = _items_below(trie)

    def run(self, prompts: EncodedPrompts, target: Tensor, threshold: Tensor) -> PositiveRankCounts:
        trie, batch_size = self.trie, target.shape[0]
        device = target.device
        path = _code_paths(trie, target)
        cache = _PrefixCache(prompts)
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
        return PositiveRankCounts(
            gt=torch.bincount(context[others & (scores > positive)], minlength=batch_size),
            ge=torch.bincount(context[others & (scores >= positive)], minlength=batch_size),
            unresolved=unresolved,
            expansions=expansions,
            positive_scores=positive_scores,
        )

    def _expand(
        self,
        prompts: EncodedPrompts,
        cache: _PrefixCache,
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
        layout = _RowLayout.of(context, width)
        rows_per_forward = chunk // width
        kept_children = []
        for first_row in range(0, layout.num_rows, rows_per_forward):
            last_row = min(first_row + rows_per_forward, layout.num_rows)
            pairs = slice(int(layout.row_start[first_row]), int(layout.row_start[last_row]))
            logits, new_keys, new_values = _forward_prefixes(
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


@dataclass(frozen=True)
class _RowLayout:
    """Where each (context, prefix) pair runs: the prefixes of one context fill rows of
    ``width`` queries that share the context's prompt (pairs must come grouped by context)."""

    row: Tensor
    """``[P]`` row of each pair (non-decreasing)."""
    slot: Tensor
    """``[P]`` position of each pair inside its row."""
    row_context: Tensor
    """``[num_rows]`` the context of each row."""
    row_start: Tensor
    """``[num_rows + 1]`` first pair of each row (and the number of pairs at the end)."""

    @property
    def num_rows(self) -> int:
        return self.row_context.numel()

    @classmethod
    def of(cls, context: Tensor, width: int) -> _RowLayout:
        counts = torch.bincount(context)
        rank = (
            torch.arange(context.numel(), device=context.device)
            - (counts.cumsum(0) - counts)[context]
        )
        rows_of_context = (counts + width - 1) // width
        row = (rows_of_context.cumsum(0) - rows_of_context)[context] + rank // width
        num_rows = int(rows_of_context.sum())
        row_context = torch.empty(num_rows, dtype=torch.long, device=context.device)
        row_context[row] = context
        row_start = torch.searchsorted(row, torch.arange(num_rows + 1, device=context.device))
        return cls(row=row, slot=rank % width, row_context=row_context, row_start=row_start)


class _PrefixCache:
    """Keys and values of the expanded prefixes (one token each, from any context), stored
    flat per layer as ``[entries, kv_heads, head_dim]`` and grown by doubling."""

    def __init__(self, prompts: EncodedPrompts) -> None:
        self.keys = [keys.new_empty(16, keys.shape[1], keys.shape[3]) for keys in prompts.keys]
        self.values = [
            values.new_empty(16, values.shape[1], values.shape[3]) for values in prompts.values
        ]
        self.size = 0

    def append(self, keys: list[Tensor], values: list[Tensor]) -> Tensor:
        """Stores per-layer ``[K, kv_heads, head_dim]`` entries; returns their ``[K]`` ids."""
        count = keys[0].shape[0]
        if self.size + count > self.keys[0].shape[0]:
            capacity = max(2 * self.keys[0].shape[0], self.size + count)
            self.keys = [_grown(store, capacity) for store in self.keys]
            self.values = [_grown(store, capacity) for store in self.values]
        for store, new in zip(self.keys + self.values, keys + values, strict=True):
            store[self.size : self.size + count] = new
        ids = torch.arange(self.size, self.size + count, device=keys[0].device)
        self.size += count
        return ids

    def gather(self, entries: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Per-layer ``[R, kv_heads, A, head_dim]`` keys and values of ``entries`` ``[R, A]``."""

        def pick(store: Tensor) -> Tensor:
            return store[entries].transpose(1, 2)

        return [pick(store) for store in self.keys], [pick(store) for store in self.values]


def _forward_prefixes(
    model: nn.Module,
    prompts: EncodedPrompts,
    cache: _PrefixCache,
    row_context: Tensor,
    row: Tensor,
    slot: Tensor,
    tokens: Tensor,
    ancestors: Tensor,
    depth: int,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """One forward of ``P`` prefixes of one depth laid out in ``R`` rows (tree attention).

    Row r holds the prompt of ``row_context[r]``, then the union of its prefixes' ancestors
    (entries of ``cache``), then one query per prefix: pair p's last token ``tokens[p]`` at
    ``(row[p], slot[p])``, seeing the prompt, its own ``depth - 1`` ancestors (``ancestors[p]``)
    and itself, at its own position; empty slots see only themselves. Returns the pairs' logits
    ``[P, V]`` and their tokens' per-layer keys/values ``[P, kv_heads, head_dim]``.
    """
    num_rows, device = row_context.numel(), row_context.device
    width = int(slot.max()) + 1
    table, position = _ancestor_table(row, ancestors, num_rows, cache.size)
    ancestor_keys, ancestor_values = cache.gather(table)
    keys = [
        torch.cat([prompt_keys[row_context], extra], dim=2)
        for prompt_keys, extra in zip(prompts.keys, ancestor_keys, strict=True)
    ]
    values = [
        torch.cat([prompt_values[row_context], extra], dim=2)
        for prompt_values, extra in zip(prompts.values, ancestor_values, strict=True)
    ]
    prompt_width, cached = prompts.attention_mask.shape[1], keys[0].shape[2]
    visible = torch.zeros(num_rows, width, cached + width, dtype=torch.bool, device=device)
    visible[:, :, :prompt_width] = prompt_visibility(prompts, width)[row_context]
    visible[row[:, None], slot[:, None], prompt_width + position] = True
    visible[:, :, cached:] = torch.eye(width, dtype=torch.bool, device=device)
    grid = torch.zeros(num_rows, width, dtype=torch.long, device=device)
    grid[row, slot] = tokens
    positions = (prompts.lengths[row_context] + depth - 1)[:, None].expand(-1, width)
    run_cache = cache_from(model, keys, values)
    logits = tree_forward(model, run_cache, grid, positions, visible)
    return (
        logits[row, slot],
        [layer.keys[row, :, cached + slot] for layer in run_cache.layers],
        [layer.values[row, :, cached + slot] for layer in run_cache.layers],
    )


def _ancestor_table(
    row: Tensor, ancestors: Tensor, num_rows: int, num_entries: int
) -> tuple[Tensor, Tensor]:
    """The distinct ancestors of each row's pairs: ``table`` ``[R, A]`` (cache entries, padded
    with entry 0, never visible) and ``position`` ``[P, depth - 1]``, where each pair's
    ancestors sit in its row's table."""
    keys = row[:, None] * num_entries + ancestors
    distinct, inverse = torch.unique(keys.flatten(), return_inverse=True)
    distinct_row = distinct // num_entries
    counts = torch.bincount(distinct_row, minlength=num_rows)
    column = (
        torch.arange(distinct.numel(), device=row.device)
        - (counts.cumsum(0) - counts)[distinct_row]
    )
    table = torch.zeros(
        num_rows, int(counts.max()) if counts.numel() else 0, dtype=torch.long, device=row.device
    )
    table[distinct_row, column] = distinct % num_entries
    return table, column[inverse].view(ancestors.shape)


def _queries_per_row(prompt_width: int, depth: int) -> int:
    """Prefixes of one context per row at ``depth``: up to 128, fewer for deep prefixes, so
    that their ancestors (up to ``depth - 1`` each) add about one prompt's worth of keys."""
    return max(1, min(_MAX_ROW_QUERIES, max(prompt_width, 64) // depth))


def _teacher_forced_scores(
    model: nn.Module, prompts: EncodedPrompts, trie: ItemTrie, target: Tensor, renormalize: bool
) -> Tensor:
    """``[B]`` score of each positive from one forward of its code on the prompt cache."""
    path = _code_paths(trie, target)
    length = trie.max_code_length
    logits = prompts.last_logits[:, None]
    if length > 1:
        fed = length - 1  # the last code token predicts nothing
        causal = torch.ones(fed, fed, dtype=torch.bool, device=target.device).tril()
        visible = torch.cat(
            [prompt_visibility(prompts, fed), causal.expand(target.numel(), -1, -1)], dim=2
        )
        positions = prompts.lengths[:, None] + torch.arange(fed, device=target.device)
        code_logits = tree_forward(
            model,
            cache_from(model, prompts.keys, prompts.values),
            trie.item_codes[target, :fed],
            positions,
            visible,
        )
        logits = torch.cat([logits, code_logits], dim=1)
    steps = path[:, 1:] >= 0  # [B, length]: the code goes on after depth d
    parents = path[:, :-1][steps]
    row, child = trie.children(parents)
    log_probs = edge_log_probs(logits[steps], row, trie.node_token[child], renormalize)
    on_code = child == path[:, 1:][steps][row]
    context = steps.nonzero()[:, 0]
    return torch.zeros(target.numel(), device=target.device).index_add(
        0, context[row[on_code]], log_probs[on_code]
    )


def _code_paths(trie: ItemTrie, items: Tensor) -> Tensor:
    """``[B, max_code_length + 1]``: the node of each item's code prefix of each length (the
    root at 0, the leaf at the code's length), -1 past the leaf."""
    nodes = torch.zeros_like(items)
    path = [nodes]
    lengths = trie.item_code_lengths[items]
    for depth in range(trie.max_code_length):
        nodes = torch.where(depth < lengths, trie.step(nodes, trie.item_codes[items, depth]), -1)
        path.append(nodes)
    return torch.stack(path, dim=1)


def _items_below(trie: ItemTrie) -> Tensor:
    """``[num_nodes]`` long: number of items whose code starts with each node's prefix."""
    counts = trie.is_leaf(torch.arange(trie.num_nodes, device=trie.device)).long()
    for depth in range(trie.max_code_length, 0, -1):
        level = slice(int(trie.level_offsets[depth]), int(trie.level_offsets[depth + 1]))
        counts.index_add_(0, trie.node_parent[level], counts[level].clone())
    return counts


def _margin(model: nn.Module, scores: Tensor) -> Tensor:
    """How far below the positive's estimated score the pruning threshold sits."""
    dtype = model.get_input_embeddings().weight.dtype
    if torch.is_autocast_enabled(scores.device.type):
        dtype = torch.get_autocast_dtype(scores.device.type)
    eps = max(torch.finfo(dtype).eps, torch.finfo(torch.float32).eps)
    return _MARGIN_EPSILONS * eps * (1 + scores.abs())


def _subset(model: nn.Module, prompts: EncodedPrompts, rows: Tensor) -> EncodedPrompts:
    """The encoded prompts of ``rows`` only."""
    keys = [keys[rows] for keys in prompts.keys]
    values = [values[rows] for values in prompts.values]
    return EncodedPrompts(
        cache=cache_from(model, keys, values),
        keys=keys,
        values=values,
        attention_mask=prompts.attention_mask[rows],
        lengths=prompts.lengths[rows],
        last_logits=prompts.last_logits[rows],
    )


def _merge(
    counts: PositiveRankCounts, rows: Tensor, redone: PositiveRankCounts
) -> PositiveRankCounts:
    """``counts`` with ``rows`` replaced by a new pass's counts (its expansions added)."""

    def replaced(old: Tensor, new: Tensor) -> Tensor:
        return old.index_copy(0, rows, new)

    return PositiveRankCounts(
        gt=replaced(counts.gt, redone.gt),
        ge=replaced(counts.ge, redone.ge),
        unresolved=replaced(counts.unresolved, redone.unresolved),
        expansions=counts.expansions.index_add(0, rows, redone.expansions),
        positive_scores=replaced(counts.positive_scores, redone.positive_scores),
    )


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


def _grown(store: Tensor, capacity: int) -> Tensor:
    grown = store.new_empty(capacity, *store.shape[1:])
    grown[: store.shape[0]] = store
    return grown


def _check_target(target: Tensor, batch_size: int, num_items: int) -> None:
    if target.shape != (batch_size,) or target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(
            f"target must be an integer tensor of shape [B]=[{batch_size}], got a "
            f"{target.dtype} tensor of shape {list(target.shape)}"
        )
    outside = ((target < 0) | (target >= num_items)).nonzero().flatten()
    if outside.numel():
        row = int(outside[0])
        raise ValueError(f"target[{row}]={int(target[row])} is not a catalog index (N={num_items})")
