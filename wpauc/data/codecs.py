"""Item codecs: the token sequence ("code") the policy generates for each catalog item.

Every codec returns, for a catalog and a tokenizer, one list of token ids per item, and
guarantees the codes are *prefix-free*: no item's code equals or is a prefix of another
item's code, so a generated code identifies exactly one item and a trie over the codes
has every item at a leaf.

`SIDCodec` (MiniOneRec style): an item's code is its semantic-ID tokens, e.g.
`<a_60><b_159><c_203>`, one added tokenizer token each.

    SID collisions. Real SID tables give several items the same SID (Office_Products:
    3459 items, 3444 distinct SIDs). Items are never merged: `resolve_sid_collisions`
    appends one disambiguation token `<d_0>`, `<d_1>`, ... to EVERY member of a colliding
    group, in increasing item-id order, e.g. items 7 and 12 sharing `<a_1><b_2><c_3>` get
    `<a_1><b_2><c_3><d_0>` and `<a_1><b_2><c_3><d_1>`. Items whose SID is unique keep it
    unchanged. Because all members of a group get the extra token, no code is a prefix of
    another; a raw SID that is a proper prefix of another item's SID cannot be repaired
    this way and is an error. Readers apply this when they build the `Catalog`, so
    `Catalog.sids` is already collision-free.

`TitleCodec` (D3 / BIGRec / ReRe style): an item's code is its tokenised title followed
by the tokenizer's eos token, which ends every code and so keeps titles that are
prefixes of other titles apart. Title codes are variable length (so token-mean losses
weight items differently, unlike fixed-length SIDs). Items whose titles tokenise to the
same ids (duplicate titles: 32 items in Office_Products) get the same disambiguation
tokens before the eos, in item-id order: `title ids + <d_k> + eos`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import pre_tokenizers
from transformers import PreTrainedTokenizerBase

from wpauc.data.catalog import Catalog, find_prefix_conflict
from wpauc.data.files import DataFileError, read_json_by_item_id

_TOKEN_PATTERN = re.compile(r"<([A-Za-z]+)_(\d+)>")
_JOINED_TOKENS = re.compile(r"(?:<[^<>]+>){2,}")
"""Several `<...>` code tokens written as one string, e.g. `<a_60><b_159><c_203>`."""
_WORD_SPLITTER = pre_tokenizers.Whitespace()


def disambiguation_token(position: int) -> str:
    """The token appended to the `position`-th member (item-id order) of a colliding group."""
    return f"<d_{position}>"


def split_words(text: str) -> list[str]:
    """Words of `text` as the from-scratch word-level tokenizer splits them."""
    return [word for word, _ in _WORD_SPLITTER.pre_tokenize_str(text)]


def _token_sort_key(token: str) -> tuple[int, str, int, str]:
    """Order `<a_2>` before `<a_10>` and all `<a_*>` before `<b_*>`; other tokens last."""
    match = _TOKEN_PATTERN.fullmatch(token)
    if match:
        return (0, match.group(1), int(match.group(2)), "")
    return (1, "", 0, token)


def read_sid_index(path: str | Path) -> dict[int, tuple[str, ...]]:
    """Read a MiniOneRec `index.json` (`{"0": ["<a_60>", "<b_159>", "<c_203>"], ...}`).

    Returns item id -> SID tokens. Raises DataFileError (a ValueError) naming the file and
    key (the item id) for anything but an object whose keys are integers and whose values
    are non-empty lists of non-empty, whitespace-free strings, one code token each (not
    `["<a_60><b_159><c_203>"]`), all lists of the same length. Equal lengths also mean no
    SID is a proper prefix of another.
    """
    sids: dict[int, tuple[str, ...]] = {}
    for item_id, tokens in read_json_by_item_id(path).items():
        if not isinstance(tokens, list) or not tokens:
            raise DataFileError(
                path, f"expected a non-empty list of SID tokens, got {tokens!r}", key=str(item_id)
            )
        for position, token in enumerate(tokens):
            if not isinstance(token, str) or not token or any(c.isspace() for c in token):
                raise DataFileError(
                    path,
                    f"SID token {token!r} is not a non-empty whitespace-free string",
                    key=str(item_id),
                )
            if _JOINED_TOKENS.fullmatch(token):
                raise DataFileError(
                    path,
                    f"SID token {position} {token!r} joins several code tokens; write each "
                    "as its own list element",
                    key=str(item_id),
                )
        sids[item_id] = tuple(tokens)
    _check_equal_lengths(path, sids)
    return sids


def _check_equal_lengths(path: str | Path, sids: dict[int, tuple[str, ...]]) -> None:
    """DataFileError naming the first item (file order) whose SID length is not the most
    common one: SIDs of one table have one length, and a shorter one could be a prefix of
    another, which the collision tokens cannot repair."""
    lengths = Counter(len(sid) for sid in sids.values())
    if len(lengths) < 2:
        return
    length, count = lengths.most_common(1)[0]
    item_id, sid = next((item_id, sid) for item_id, sid in sids.items() if len(sid) != length)
    raise DataFileError(
        path,
        f"SID {list(sid)} has {len(sid)} tokens but {count} of the {len(sids)} SIDs have "
        f"{length}; every SID must have the same number of tokens",
        key=str(item_id),
    )


def _disambiguate(codes: Sequence[Sequence[Hashable]], item_ids: Sequence[int]) -> dict[int, int]:
    """Position -> disambiguation number for every member of a group of identical codes."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for position, code in enumerate(codes):
        groups[tuple(code)].append(position)
    numbers: dict[int, int] = {}
    for members in groups.values():
        if len(members) > 1:
            for number, position in enumerate(sorted(members, key=lambda p: item_ids[p])):
                numbers[position] = number
    return numbers


def resolve_sid_collisions(
    item_ids: Sequence[int], sids: Sequence[Sequence[str]]
) -> tuple[tuple[str, ...], ...]:
    """Make SIDs distinct and prefix-free by appending `<d_k>` to colliding groups.

    Args:
        item_ids: data-set item id of each item (orders each colliding group).
        sids: raw SID tokens of each item, aligned with `item_ids`.

    Returns:
        The SIDs with `disambiguation_token(k)` appended to the k-th member (item-id order)
        of every group of items sharing a SID; unique SIDs unchanged.
    """
    if len(item_ids) != len(sids):
        raise ValueError(f"{len(item_ids)} item ids but {len(sids)} SIDs")
    numbers = _disambiguate(sids, item_ids)
    resolved = tuple(
        tuple(sid) + ((disambiguation_token(numbers[position]),) if position in numbers else ())
        for position, sid in enumerate(sids)
    )
    conflict = find_prefix_conflict(resolved)
    if conflict is not None:
        first, second = conflict
        raise ValueError(
            f"SID {list(sids[first])} of item id {item_ids[first]} is a proper prefix of SID "
            f"{list(sids[second])} of item id {item_ids[second]}; codes would be ambiguous"
        )
    return resolved


def _token_ids(tokenizer: PreTrainedTokenizerBase, tokens: Sequence[str]) -> list[int]:
    """Ids of tokens that must already be in the tokenizer; ValueError naming a missing one."""
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    for token, token_id in zip(tokens, ids, strict=True):
        if token_id is None or (
            token_id == tokenizer.unk_token_id and token != tokenizer.unk_token
        ):
            raise ValueError(
                f"token {token!r} is not in the tokenizer; build it with "
                "wpauc.data.build_tokenizer(catalog, codec) so the codec's new tokens are added"
            )
    return ids


def _check_prefix_free(catalog: Catalog, codes: list[list[int]], codec_name: str) -> None:
    conflict = find_prefix_conflict(codes)
    if conflict is not None:
        first, second = conflict
        raise ValueError(
            f"{codec_name}: code {codes[first]} of item id {catalog.item_ids[first]} equals or "
            f"is a prefix of code {codes[second]} of item id {catalog.item_ids[second]}"
        )


class ItemCodec(ABC):
    """Turns every catalog item into a prefix-free list of token ids."""

    @abstractmethod
    def new_tokens(self, catalog: Catalog) -> list[str]:
        """Tokens that must be added to a tokenizer before `encode` (sorted, no repeats)."""

    def word_vocabulary(self, catalog: Catalog) -> list[str]:
        """Plain words a from-scratch word-level tokenizer needs besides `new_tokens`."""
        return []

    @abstractmethod
    def encode(self, catalog: Catalog, tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
        """Token ids of every item's code, in catalog order; distinct and prefix-free."""


@dataclass(frozen=True)
class SIDCodec(ItemCodec):
    """Items as their (collision-free) semantic-ID tokens, MiniOneRec style."""

    def _sids(self, catalog: Catalog) -> tuple[tuple[str, ...], ...]:
        if catalog.sids is None:
            raise ValueError(
                "SIDCodec: the catalog has no SIDs (e.g. the D3/BIGRec layout); use TitleCodec"
            )
        return catalog.sids

    def new_tokens(self, catalog: Catalog) -> list[str]:
        return sorted({token for sid in self._sids(catalog) for token in sid}, key=_token_sort_key)

    def encode(self, catalog: Catalog, tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
        codes = [_token_ids(tokenizer, sid) for sid in self._sids(catalog)]
        _check_prefix_free(catalog, codes, "SIDCodec")
        return codes


@dataclass(frozen=True)
class TitleCodec(ItemCodec):
    """Items as their tokenised titles plus eos (variable length), D3 / BIGRec / ReRe style."""

    def new_tokens(self, catalog: Catalog) -> list[str]:
        # Group by whitespace-normalised title: an upper bound on the groups of identical
        # token ids for whitespace-splitting tokenizers; encode() checks the real groups.
        normalised_titles = [" ".join(title.split()) for title in catalog.titles]
        numbers = _disambiguate(normalised_titles, catalog.item_ids)
        return [disambiguation_token(n) for n in range(max(numbers.values(), default=-1) + 1)]

    def word_vocabulary(self, catalog: Catalog) -> list[str]:
        return sorted({word for title in catalog.titles for word in split_words(title)})

    def encode(self, catalog: Catalog, tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
        if tokenizer.eos_token_id is None:
            raise ValueError("TitleCodec: the tokenizer has no eos token to end title codes")
        title_ids = tokenizer(list(catalog.titles), add_special_tokens=False)["input_ids"]
        numbers = _disambiguate(title_ids, catalog.item_ids)
        if numbers:
            vocabulary = tokenizer.get_vocab()
            for position, number in numbers.items():
                if disambiguation_token(number) not in vocabulary:
                    raise ValueError(
                        f"TitleCodec: title {catalog.titles[position]!r} of item id "
                        f"{catalog.item_ids[position]} tokenises like other titles and needs "
                        f"{disambiguation_token(number)!r}, which the tokenizer lacks"
                    )
        codes = []
        for position, ids in enumerate(title_ids):
            suffix = [disambiguation_token(numbers[position])] if position in numbers else []
            codes.append(list(ids) + _token_ids(tokenizer, suffix) + [tokenizer.eos_token_id])
        _check_prefix_free(catalog, codes, "TitleCodec")
        return codes
