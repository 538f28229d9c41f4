"""Which catalog a policy was trained on: a record kept in checkpoints and exports, and the
check that refuses to use a policy with another catalog.

A policy's code-token rows only mean something for the item codes they were trained with:
the same weights with another catalog (other items, other codes, or a tokenizer that gives
the code tokens other ids) recommend nonsense without any error. The record's fingerprint
is a SHA-256 over every item's data-set id, code tokens and code token ids, in catalog order.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

#: The checkpoint entry that holds the record.
CATALOG_KEY = "wpauc_catalog"


def catalog_record(
    item_ids: Sequence[int],
    item_codes: Sequence[Sequence[int]],
    tokenizer: PreTrainedTokenizerBase,
    description: str,
) -> dict[str, Any]:
    """The record of a catalog: ``{"fingerprint", "num_items", "description"}``.

    Args:
        item_ids: the data-set id of every item, in catalog order.
        item_codes: the code token ids of every item, in catalog order.
        tokenizer: the tokenizer that gave the codes (their tokens enter the fingerprint).
        description: where the catalog comes from, for error messages (e.g. the data
            source's settings and the codec); not part of the fingerprint.
    """
    tokens = [tokenizer.convert_ids_to_tokens(list(code)) for code in item_codes]
    content = json.dumps([list(item_ids), [list(code) for code in item_codes], tokens])
    return {
        "fingerprint": hashlib.sha256(content.encode()).hexdigest(),
        "num_items": len(item_ids),
        "description": description,
    }


def _describe(record: dict[str, Any]) -> str:
    """A record in one phrase: the fingerprint's start, the item count, the description."""
    return f"{record['fingerprint'][:12]} ({record['num_items']} items, {record['description']})"


def check_catalog(recorded: dict[str, Any] | None, current: dict[str, Any], what: str) -> None:
    """Raise a ValueError naming both catalogs when `recorded` (from a checkpoint or an
    export) is not `current` (this run's data); warn when there is no record to check.

    Args:
        recorded: the record saved with the weights, or None when they carry none.
        current: the record of the data the weights are about to be used with.
        what: the weights and the setting that named them, e.g.
            ``"model.init_from: runs/sft/checkpoints/best.ckpt"``.
    """
    if recorded is None:
        warnings.warn(
            f"{what} records no catalog (saved by an earlier wpauc), so it cannot be checked "
            "against this run's data",
            stacklevel=2,
        )
        return
    if recorded["fingerprint"] != current["fingerprint"]:
        raise ValueError(
            f"{what} was trained on another catalog: it records {_describe(recorded)}, but this "
            f"run's data gives {_describe(current)}. Use the data settings it was trained with "
            "(data.source, data.codec, data.tokenizer_path)"
        )
