"""The item catalog, recommendation samples and a loaded data set.

Everything downstream (codes, tries, scores, metrics) addresses items by their *catalog
index*: the position of the item in `Catalog.item_ids`, 0..N-1. Data-set item ids only
appear in files and are mapped to catalog indices once, by the readers.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch


def find_prefix_conflict(codes: Sequence[Sequence[Hashable]]) -> tuple[int, int] | None:
    """Return positions `(i, j)` of two codes where code i equals or is a prefix of code j.

    Returns None when the codes are prefix-free (which implies all distinct). Sorting makes
    the check O(N log N): if code a is a prefix of code c, every code sorted between them
    also starts with a, so some adjacent pair in sorted order shows the conflict.
    """
    order = sorted(range(len(codes)), key=lambda position: tuple(codes[position]))
    for first, second in zip(order, order[1:], strict=False):
        shorter, longer = codes[first], codes[second]
        if len(shorter) <= len(longer) and tuple(longer[: len(shorter)]) == tuple(shorter):
            return first, second
    return None


@dataclass(frozen=True)
class Catalog:
    """The N items of a data set, in catalog-index order."""

    item_ids: tuple[int, ...]
    """Data-set item id of each item; the position is the catalog index."""
    titles: tuple[str, ...]
    """Title of each item, aligned with `item_ids`."""
    sids: tuple[tuple[str, ...], ...] | None = None
    """SID token strings of each item (already distinct and prefix-free), or None."""
    _index_by_id: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.titles) != len(self.item_ids):
            raise ValueError(
                f"Catalog: {len(self.item_ids)} item_ids but {len(self.titles)} titles"
            )
        index_by_id: dict[int, int] = {}
        for index, item_id in enumerate(self.item_ids):
            if not isinstance(item_id, int) or isinstance(item_id, bool):
                raise ValueError(f"Catalog: item id at index {index} is not an int: {item_id!r}")
            if item_id in index_by_id:
                raise ValueError(f"Catalog: item id {item_id} appears twice")
            index_by_id[item_id] = index
        for index, title in enumerate(self.titles):
            if not isinstance(title, str):
                raise ValueError(f"Catalog: title of item id {self.item_ids[index]} is not a str")
        if self.sids is not None:
            self._check_sids(self.sids)
        object.__setattr__(self, "_index_by_id", index_by_id)

    def _check_sids(self, sids: tuple[tuple[str, ...], ...]) -> None:
        if len(sids) != len(self.item_ids):
            raise ValueError(f"Catalog: {len(self.item_ids)} item_ids but {len(sids)} sids")
        for index, sid in enumerate(sids):
            if not sid or not all(isinstance(token, str) and token for token in sid):
                raise ValueError(
                    f"Catalog: SID of item id {self.item_ids[index]} must be a non-empty tuple "
                    f"of non-empty strings, got {sid!r}"
                )
        conflict = find_prefix_conflict(sids)
        if conflict is not None:
            first, second = (self.item_ids[position] for position in conflict)
            raise ValueError(
                f"Catalog: SID of item id {first} {sids[conflict[0]]} equals or is a prefix of "
                f"the SID of item id {second} {sids[conflict[1]]}; resolve collisions first "
                "(wpauc.data.codecs.resolve_sid_collisions)"
            )

    def __len__(self) -> int:
        return len(self.item_ids)

    def has_item(self, item_id: int) -> bool:
        """Whether the data-set item id is in the catalog."""
        return item_id in self._index_by_id

    def index_of(self, item_id: int) -> int:
        """Catalog index of a data-set item id; ValueError naming the id when absent."""
        try:
            return self._index_by_id[item_id]
        except KeyError:
            raise ValueError(f"item id {item_id!r} is not in the catalog") from None


@dataclass(frozen=True)
class Sample:
    """One recommendation example: the user's recent items and the item that came next."""

    user: str
    """User id as written in the data set."""
    history: tuple[int, ...]
    """Catalog indices of the previous items, oldest first."""
    target: int
    """Catalog index of the next item."""


SPLITS = ("train", "valid", "test")
"""Split names, in the order RecData stores them."""


def check_split(name: str) -> None:
    """Raise ValueError unless `name` is one of `SPLITS`."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")


@dataclass
class RecData:
    """A catalog and its train / valid / test samples."""

    catalog: Catalog
    """The items."""
    train: list[Sample]
    """Training samples."""
    valid: list[Sample]
    """Validation samples."""
    test: list[Sample]
    """Test samples."""
    true_next_item_probs: dict[str, torch.Tensor] | None = None
    """Split name -> [num_samples, N] exact next-item distribution (synthetic world only)."""

    def __post_init__(self) -> None:
        for split, probs in (self.true_next_item_probs or {}).items():
            expected = (len(self.split(split)), len(self.catalog))
            if tuple(probs.shape) != expected:
                raise ValueError(
                    f"true_next_item_probs[{split!r}] has shape {tuple(probs.shape)}, "
                    f"expected {expected}"
                )

    def split(self, name: str) -> list[Sample]:
        """The samples of split `name` (one of "train", "valid", "test")."""
        check_split(name)
        return getattr(self, name)


def fit_samples(data: RecData, refit: bool) -> list[Sample]:
    """The samples a model is fitted on: the training split, or with `refit` the training
    then the validation split ("refit on train+valid before testing").

    Off by default for every model and baseline: valid is then used for model selection
    only, never for fitting. With `refit` the validation metrics see fitted samples, so
    any selection made on them is optimistic.
    """
    return data.train + data.valid if refit else list(data.train)
