"""What a model needs of the data: `CatalogContext`, from `RecDataModule.catalog_context()`."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from transformers import PreTrainedTokenizerBase

from wpauc.data.catalog import Catalog


@dataclass(frozen=True, eq=False)
class CatalogContext:
    """The catalog as a model sees it: its items, their codes and the tokenizer that gives
    them, where it comes from and, where the data knows it, the true next-item distribution
    of the validation samples. Built once when the data module is set up."""

    catalog: Catalog
    """The items (catalog index = position): data-set ids, titles, SIDs."""
    item_codes: list[list[int]]
    """Code token ids of every item, in catalog order (prefix-free: the item trie)."""
    tokenizer: PreTrainedTokenizerBase
    """The tokenizer holding every code token."""
    description: str
    """Where the catalog comes from (the source's settings and the codec), for the catalog
    record that checkpoints carry and for its errors."""
    valid_next_item_probs: Tensor | None = None
    """``[S, N]`` true next-item distribution of every validation sample where the data knows
    it (the synthetic world), else None."""
