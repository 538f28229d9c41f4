"""The state of the pruned ranking (:func:`wpauc.decoding.exact_positive_ranks`): a table of
trie-node scores per context, filled by running prefixes through the model at most once each.

Each context's table holds the score of every node whose parent has run (its partial score:
the parent's plus the edge's log-probability) and, for every node that has run, its keys and
values for its descendants. A node's children are scored by exactly one forward, so an item's
score is one number whichever search reached it (the positive's teacher forcing, the rank cap's
beam, the threshold walk): the searches compare scores of one table, need no margin for float
noise between forwards (bf16 included), and each reuses the prefixes the others ran. So a
context never runs more prefixes than the trie has inner nodes, which is what
:func:`~wpauc.decoding.score_items` runs for every context.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wpauc.decoding.prefix_rows import PrefixCache, RowLayout, forward_prefixes
from wpauc.decoding.shared_prefix import (
    LOGIT_ELEMENTS,
    EncodedPrompts,
    cache_from,
    edge_log_probs,
    prompt_visibility,
    tree_forward,
)
from wpauc.decoding.trie import ItemTrie

_CACHE_ELEMENTS = 2**27
"""Memory budget of one forward's gathered keys and values, in elements (``rows * tokens``
per row ``* layers * 2 * kv_heads * head_dim``)."""
_MAX_CHUNK_PREFIXES = 8192
"""Default cap on the prefixes per forward."""
_MAX_ROW_QUERIES = 128
"""Cap on the prefixes of one context that share a row (and one copy of its prompt's keys and
values) in a forward."""


class PrefixTable:
    """Scores and keys/values of the trie prefixes run so far, for each of ``B`` contexts.

    Args:
        model: the causal LM.
        prompts: the ``B`` encoded prompts; the root's children are scored from their last
            logits at once.
        trie: the catalog's codes (on the prompts' device).
        renormalize: normalise each step over the allowed continuations.
        chunk_size: prefixes per forward (``None``: within the logits and keys/values budgets).
    """

    def __init__(
        self,
        model: nn.Module,
        prompts: EncodedPrompts,
        trie: ItemTrie,
        renormalize: bool,
        chunk_size: int | None,
    ) -> None:
        self.model, self.prompts, self.trie = model, prompts, trie
        self.renormalize, self.chunk_size = renormalize, chunk_size
        batch_size, device = prompts.lengths.numel(), prompts.lengths.device
        self.items_below = items_below(trie)
        all_nodes = torch.arange(trie.num_nodes, device=device)
        # renormalised, a node with one item under it already has that item's score (every
        # later step has one allowed token, log-probability exactly 0): it need not run
        self.runnable = ~trie.is_leaf(all_nodes) & ~(renormalize & (self.items_below == 1))
        self.runnable[0] = False  # the root is the prompt itself
        self.item_node = _deciding_nodes(trie, self.items_below, renormalize)
        self.score = torch.full((batch_size, trie.num_nodes), -torch.inf, device=device)
        self.ran = torch.zeros(batch_size, trie.num_nodes, dtype=torch.bool, device=device)
        self.score[:, 0] = 0.0
        self.ran[:, 0] = True
        self.entry = torch.full((batch_size, trie.num_nodes), -1, dtype=torch.long, device=device)
        self.cache = PrefixCache(prompts)
        self.expansions = torch.zeros(batch_size, dtype=torch.long, device=device)
        """``[B]`` prefixes run through the model per context (the cost, in tokens)."""
        contexts = torch.arange(batch_size, device=device)
        self._score_children(contexts, torch.zeros_like(contexts), prompts.last_logits)

    def item_scores(self, items: Tensor | None = None) -> Tensor:
        """``[B, N]`` every item's score (-inf where not reached yet), or ``[B]`` that of
        ``items`` ``[B]`` (one per context)."""
        if items is None:
            return self.score[:, self.item_node]
        return self.score.gather(1, self.item_node[items][:, None])[:, 0]

    def counts(self, target: Tensor, positive: Tensor) -> tuple[Tensor, Tensor]:
        """``(gt, ge)`` ``[B]``: the items reached so far, each context's ``target`` excluded,
        that score above / at least its ``positive`` score."""
        scores = self.item_scores()
        others = torch.ones_like(scores, dtype=torch.bool)
        others[torch.arange(target.numel(), device=target.device), target] = False
        return (
            ((scores > positive[:, None]) & others).sum(dim=1),
            ((scores >= positive[:, None]) & others).sum(dim=1),
        )

    def run_code_paths(self, items: Tensor) -> None:
        """Runs the prefixes of each context's ``items`` ``[B]`` code: one forward of the code
        on the prompt cache (teacher forcing), whose tokens are those prefixes' runs."""
        trie, prompts = self.trie, self.prompts
        fed = trie.max_code_length - 1  # the last code token predicts nothing
        if fed == 0:
            return
        batch_size, device = items.numel(), items.device
        causal = torch.ones(fed, fed, dtype=torch.bool, device=device).tril()
        visible = torch.cat(
            [prompt_visibility(prompts, fed), causal.expand(batch_size, -1, -1)], dim=2
        )
        positions = prompts.lengths[:, None] + torch.arange(fed, device=device)
        run_cache = cache_from(self.model, prompts.keys, prompts.values)
        logits = tree_forward(
            self.model, run_cache, trie.item_codes[items, :fed], positions, visible
        )
        path, prompt_width = code_paths(trie, items), prompts.attention_mask.shape[1]
        for step in range(fed):
            node = path[:, step + 1]
            context = ((node >= 0) & ~trie.is_leaf(node.clamp(min=0))).nonzero().flatten()
            node = node[context]
            self._store(
                context,
                node,
                [layer.keys[context, :, prompt_width + step] for layer in run_cache.layers],
                [layer.values[context, :, prompt_width + step] for layer in run_cache.layers],
            )
            self._score_children(context, node, logits[context, step])

    def run(self, context: Tensor, node: Tensor, depth: int) -> None:
        """Runs the ``(context, node)`` pairs (grouped by context): nodes of ``depth`` that may
        run (see ``runnable``), have not run and whose parents have, in forwards of up to
        ``chunk_size`` prefixes laid out in rows that share their context's prompt."""
        if node.numel() == 0:
            return
        trie, prompts = self.trie, self.prompts
        prompt_width = prompts.attention_mask.shape[1]
        chunk = self.chunk_size or default_chunk_size(prompts)
        width = _row_width(chunk, _queries_per_row(prompt_width, depth), context)
        layout = RowLayout.of(context, width)
        per_token = sum(keys.shape[1] * keys.shape[3] for keys in prompts.keys) * 2
        row_elements = per_token * (prompt_width + depth * width)
        rows_per_forward = max(1, min(chunk // width, _CACHE_ELEMENTS // row_elements))
        ancestors = self.entry[context[:, None], trie.ancestors(node, depth - 1)]
        for first_row in range(0, layout.num_rows, rows_per_forward):
            last_row = min(first_row + rows_per_forward, layout.num_rows)
            pairs = slice(int(layout.row_start[first_row]), int(layout.row_start[last_row]))
            logits, logit_rows, keys, values = forward_prefixes(
                self.model,
                prompts,
                self.cache,
                layout.row_context[first_row:last_row],
                layout.row[pairs] - first_row,
                layout.slot[pairs],
                trie.node_token[node[pairs]],
                ancestors[pairs],
                depth,
            )
            self._store(context[pairs], node[pairs], keys, values)
            self._score_children(context[pairs], node[pairs], logits, logit_rows)

    def _store(
        self, context: Tensor, node: Tensor, keys: list[Tensor], values: list[Tensor]
    ) -> None:
        """Marks the pairs as run and keeps the keys/values of those with a child to run."""
        self.ran[context, node] = True
        self.expansions += torch.bincount(context, minlength=self.expansions.numel())
        parent, child = self.trie.children(node)
        needed = torch.zeros(node.numel(), dtype=torch.bool, device=node.device)
        needed[parent[self.runnable[child]]] = True
        self.entry[context[needed], node[needed]] = self.cache.append(
            [layer[needed] for layer in keys], [layer[needed] for layer in values]
        )

    def _score_children(
        self, context: Tensor, node: Tensor, logits: Tensor, logit_rows: Tensor | None = None
    ) -> None:
        """Scores every child of each ``(context, node)`` pair from the logits after the node's
        prefix: row ``logit_rows[p]`` of ``logits`` (default: row p)."""
        parent, child = self.trie.children(node)
        owner = context[parent]
        rows = parent if logit_rows is None else logit_rows[parent]
        self.score[owner, child] = self.score[owner, node[parent]] + edge_log_probs(
            logits, rows, self.trie.node_token[child], self.renormalize
        )


def _deciding_nodes(trie: ItemTrie, below: Tensor, renormalize: bool) -> Tensor:
    """``[N]`` the node whose score is each item's: its leaf, or renormalised the shallowest
    prefix with only that item under it."""
    if not renormalize:
        return trie.item_leaf
    path = code_paths(trie, torch.arange(trie.num_items, device=trie.device))[:, 1:]
    alone = (path >= 0) & (below[path.clamp(min=0)] == 1)
    return path.gather(1, alone.int().argmax(dim=1, keepdim=True))[:, 0]


def _row_width(chunk: int, queries_per_row: int, context: Tensor) -> int:
    """Queries per row: rows that fill a chunk evenly, no wider than needed by the context with
    the most prefixes (split evenly), so that empty slots, which run too, stay few."""
    rows_per_chunk = -(-chunk // queries_per_row)
    width = max(1, chunk // rows_per_chunk)
    most = int(torch.bincount(context).max())
    return -(-most // -(-most // width))


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
        level = trie.level(depth)
        counts.index_add_(0, trie.node_parent[level], counts[level].clone())
    return counts


def default_chunk_size(prompts: EncodedPrompts) -> int:
    """Prefixes per forward: at most 8192, and at most 2**26 elements of logits."""
    vocab_size = prompts.last_logits.shape[1]
    return max(1, min(_MAX_CHUNK_PREFIXES, LOGIT_ELEMENTS // vocab_size))
