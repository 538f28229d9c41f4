"""The catalog's item codes as a prefix tree stored in tensors.

Nodes are numbered breadth first, and inside one depth in the lexicographic order of their
prefixes, so that

- the nodes of one depth form a contiguous range (``level_offsets``);
- the children of a node form a contiguous range (``child_offsets``, CSR style), sorted by
  token;
- ``node_parent[1:]`` is non-decreasing, which makes ``parent * (max_token_id + 1) + token``
  a sorted key for every edge and lets :meth:`ItemTrie.step` find a child by binary search.

Nothing is ever a dense ``[nodes, vocab]`` table, so a 150k-token vocabulary costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class ItemTrie:
    """Prefix tree of N prefix-free item codes. Build it with :meth:`from_codes`.

    Node 0 is the root (the empty prefix); every other node is a non-empty prefix of some code,
    and the leaves are exactly the full codes.
    """

    node_parent: Tensor
    """``[num_nodes]`` parent node of each node (-1 for the root)."""
    node_token: Tensor
    """``[num_nodes]`` token on the edge into each node (-1 for the root)."""
    node_depth: Tensor
    """``[num_nodes]`` prefix length of each node (0 for the root)."""
    node_item: Tensor
    """``[num_nodes]`` catalog index of the item whose code ends at the node, -1 for inner nodes."""
    child_offsets: Tensor
    """``[num_nodes + 1]`` children of node n: nodes ``child_offsets[n]:child_offsets[n+1]``."""
    level_offsets: Tensor
    """``[max_code_length + 2]`` nodes of depth d are ``level_offsets[d]:level_offsets[d+1]``."""
    item_leaf: Tensor
    """``[N]`` leaf node of each item."""
    item_codes: Tensor
    """``[N, max_code_length]`` each item's code, right-padded with 0 (mask with the lengths)."""
    item_code_lengths: Tensor
    """``[N]`` code length of each item."""
    edge_keys: Tensor
    """``[num_nodes - 1]`` sorted ``parent * (max_token_id + 1) + token`` of nodes 1.. (step)."""

    @classmethod
    def from_codes(cls, codes: Sequence[Sequence[int]]) -> ItemTrie:
        """Builds the trie of ``codes[i]`` = token ids of item i.

        Raises:
            ValueError: no codes, an empty code, a negative token id, two items with the same
                code, or a code that is a proper prefix of another (the item indices are named).
        """
        if len(codes) == 0:
            raise ValueError(
                "ItemTrie.from_codes: `codes` is empty; the catalog needs at least one item"
            )
        lengths = torch.tensor([len(code) for code in codes], dtype=torch.long)
        empty = (lengths == 0).nonzero().flatten()
        if empty.numel():
            raise ValueError(
                f"ItemTrie.from_codes: item(s) {empty[:10].tolist()} have an empty code"
            )
        num_items, max_length = len(codes), int(lengths.max())
        padded = torch.full((num_items, max_length), -1, dtype=torch.long)
        for item, code in enumerate(codes):
            padded[item, : len(code)] = torch.as_tensor(list(code), dtype=torch.long)
        inside_code = torch.arange(max_length) < lengths[:, None]
        negative = ((padded < 0) & inside_code).any(dim=1)
        if negative.any():
            item = int(negative.nonzero()[0])
            raise ValueError(
                f"ItemTrie.from_codes: item {item} has a negative token id in code "
                f"{list(codes[item])}"
            )

        parents, tokens, depths = [torch.tensor([-1])], [torch.tensor([-1])], [torch.tensor([0])]
        item_node = torch.zeros(
            num_items, dtype=torch.long
        )  # node of each item's prefix at the current depth
        item_leaf = torch.full((num_items,), -1, dtype=torch.long)
        level_offsets = [0, 1]
        for depth in range(1, max_length + 1):
            active = (lengths >= depth).nonzero().flatten()
            # torch.unique sorts rows lexicographically: parents stay in order and tokens ascend
            prefixes, inverse = torch.unique(padded[active, :depth], dim=0, return_inverse=True)
            level_start = level_offsets[-1]
            level_parent = torch.empty(len(prefixes), dtype=torch.long)
            level_parent[inverse] = item_node[active]
            parents.append(level_parent)
            tokens.append(prefixes[:, -1])
            depths.append(torch.full((len(prefixes),), depth))
            item_node[active] = level_start + inverse
            _check_code_ends_at_leaf(codes, active, inverse, lengths[active] == depth)
            ending = active[lengths[active] == depth]
            item_leaf[ending] = item_node[ending]
            level_offsets.append(level_start + len(prefixes))

        node_parent, node_token = torch.cat(parents), torch.cat(tokens)
        num_nodes = len(node_parent)
        node_item = torch.full((num_nodes,), -1, dtype=torch.long)
        node_item[item_leaf] = torch.arange(num_items)
        child_counts = torch.bincount(node_parent[1:], minlength=num_nodes)
        child_offsets = torch.cat([torch.zeros(1, dtype=torch.long), child_counts.cumsum(0)]) + 1
        max_token = int(node_token.max())
        return cls(
            node_parent=node_parent,
            node_token=node_token,
            node_depth=torch.cat(depths),
            node_item=node_item,
            child_offsets=child_offsets,
            level_offsets=torch.tensor(level_offsets),
            item_leaf=item_leaf,
            item_codes=padded.clamp(min=0),
            item_code_lengths=lengths,
            edge_keys=node_parent[1:] * (max_token + 1) + node_token[1:],
        )

    @property
    def num_items(self) -> int:
        """Number of items N."""
        return self.item_leaf.numel()

    @property
    def num_nodes(self) -> int:
        """Number of nodes, root included."""
        return self.node_parent.numel()

    @property
    def max_code_length(self) -> int:
        """Length of the longest code (the trie's depth)."""
        return self.item_codes.shape[1]

    @property
    def max_token_id(self) -> int:
        """Largest token id used by any code."""
        return int(self.node_token.max())

    @property
    def device(self) -> torch.device:
        """Device of the trie's tensors."""
        return self.node_parent.device

    def to(self, device: torch.device | str) -> ItemTrie:
        """The same trie with its tensors on ``device`` (``self`` when already there)."""
        if torch.device(device) == self.device:
            return self
        return ItemTrie(
            **{field.name: getattr(self, field.name).to(device) for field in fields(self)}
        )

    def is_leaf(self, nodes: Tensor) -> Tensor:
        """``[K] -> [K]`` bool: whether each node is a full code."""
        return self.node_item[nodes] >= 0

    def children(self, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """All children of ``nodes`` ``[K]`` as a flat list of edges.

        Returns:
            ``(rows, child_nodes)``, both ``[E]``: edge e leads from ``nodes[rows[e]]`` to
            ``child_nodes[e]``; edges are grouped by row in order and sorted by token inside a row.
        """
        return concat_ranges(self.child_offsets[nodes], self.child_offsets[nodes + 1])

    def level(self, depth: int) -> slice:
        """The ids of the nodes of ``depth`` (prefixes of that length)."""
        return slice(int(self.level_offsets[depth]), int(self.level_offsets[depth + 1]))

    def ancestors(self, nodes: Tensor, count: int) -> Tensor:
        """``[K, count]`` the ``count`` nearest proper ancestors of ``nodes`` ``[K]``,
        shallowest first."""
        chain = [nodes]
        for _ in range(count):
            chain.append(self.node_parent[chain[-1]])
        return torch.stack(chain[:0:-1], dim=1) if count else nodes.new_empty(nodes.numel(), 0)

    def step(self, nodes: Tensor, tokens: Tensor) -> Tensor:
        """The child reached from each node by each token, ``-1`` where the code does not go on."""
        max_token = self.max_token_id
        keys = nodes * (max_token + 1) + tokens
        position = torch.searchsorted(self.edge_keys, keys).clamp(max=self.edge_keys.numel() - 1)
        found = (
            (nodes >= 0)
            & (tokens >= 0)
            & (tokens <= max_token)
            & (self.edge_keys[position] == keys)
        )
        return torch.where(found, position + 1, -1)

    def prefix_allowed_tokens_fn(self, prompt_length: int) -> Callable[[int, Tensor], list[int]]:
        """The trie as Hugging Face ``generate``'s ``prefix_allowed_tokens_fn`` (for parity runs).

        It answers for strict prefixes of codes (the empty list elsewhere, which ``generate``
        rejects), so use it with ``max_new_tokens = min_new_tokens =`` the (fixed) code length.

        Args:
            prompt_length: length of the (padded) prompt; tokens after it are the generated code.
        """
        allowed: dict[tuple[int, ...], list[int]] = {}
        for code, length in zip(
            self.item_codes.tolist(), self.item_code_lengths.tolist(), strict=True
        ):
            for depth in range(length):
                tokens = allowed.setdefault(tuple(code[:depth]), [])
                if code[depth] not in tokens:
                    tokens.append(code[depth])

        def allowed_tokens(batch_id: int, sequence: Tensor) -> list[int]:
            return allowed.get(tuple(sequence[prompt_length:].tolist()), [])

        return allowed_tokens


def concat_ranges(starts: Tensor, ends: Tensor) -> tuple[Tensor, Tensor]:
    """Concatenation of ``arange(starts[k], ends[k])`` over k, with the k of every element."""
    counts = ends - starts
    rows = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    first_of_row = (counts.cumsum(0) - counts)[rows]
    values = starts[rows] + torch.arange(rows.numel(), device=counts.device) - first_of_row
    return rows, values


def _check_code_ends_at_leaf(
    codes: Sequence[Sequence[int]], items: Tensor, prefix_ids: Tensor, ends_here: Tensor
) -> None:
    """Raises when an item whose code ends at this depth shares its node with another item."""
    shared = torch.bincount(prefix_ids)[prefix_ids] > 1
    clash = (ends_here & shared).nonzero().flatten()
    if clash.numel() == 0:
        return
    first = int(clash[0])
    other = int(
        ((prefix_ids == prefix_ids[first]) & (torch.arange(len(items)) != first)).nonzero()[0]
    )
    item, other_item = int(items[first]), int(items[other])
    if bool(ends_here[other]):
        raise ValueError(
            f"ItemTrie.from_codes: items {item} and {other_item} have the same code "
            f"{list(codes[item])}"
        )
    raise ValueError(
        f"ItemTrie.from_codes: the code of item {item} {list(codes[item])} is a prefix of the "
        f"code of item {other_item} {list(codes[other_item])}; codes must be prefix-free (end "
        "titles with an end token)"
    )
