"""Tree-attention forwards of many trie prefixes of one depth, from any contexts, for the
pruned ranking (:mod:`wpauc.decoding.pruned_ranking`): how the prefixes are laid out in rows
that share a prompt, the flat store of the keys/values of prefixes already run, and the
forward itself."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wpauc.decoding.shared_prefix import EncodedPrompts, cache_from, prompt_visibility, tree_forward


@dataclass(frozen=True)
class RowLayout:
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
        """Number of rows of the forward."""
        return self.row_context.numel()

    @classmethod
    def of(cls, context: Tensor, width: int) -> RowLayout:
        """The layout of pairs whose contexts are ``context`` ``[P]`` (grouped), ``width``
        queries per row at most."""
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


class PrefixCache:
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


def forward_prefixes(
    model: nn.Module,
    prompts: EncodedPrompts,
    cache: PrefixCache,
    row_context: Tensor,
    row: Tensor,
    slot: Tensor,
    tokens: Tensor,
    ancestors: Tensor,
    depth: int,
) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
    """One forward of ``P`` prefixes of one depth laid out in ``R`` rows (tree attention).

    Row r holds the prompt of ``row_context[r]``, then the union of its prefixes' ancestors
    (entries of ``cache``), then one query per prefix: pair p's last token ``tokens[p]`` at
    ``(row[p], slot[p])``, seeing the prompt, its own ``depth - 1`` ancestors (``ancestors[p]``)
    and itself, at its own position; empty slots see only themselves. Returns the logits of
    every slot ``[R * width, V]`` (not copied: at a large vocabulary a copy of the pairs' rows
    costs as much as the forward's own logits), the row of each pair in them ``[P]``, and the
    pairs' tokens' per-layer keys/values ``[P, kv_heads, head_dim]``.
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
        logits.flatten(0, 1),
        row * width + slot,
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


def _grown(store: Tensor, capacity: int) -> Tensor:
    grown = store.new_empty(capacity, *store.shape[1:])
    grown[: store.shape[0]] = store
    return grown
