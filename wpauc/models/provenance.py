"""Which catalog a policy was trained on: a record kept in checkpoints and exports, the
check that refuses to use a policy with another catalog, and the weights-only loading of a
checkpoint's policy that applies it.

A policy's code-token rows only mean something for the item codes they were trained with:
the same weights with another catalog (other items, other codes, or a tokenizer that gives
the code tokens other ids) recommend nonsense without any error. The record's fingerprint
is a SHA-256 over every item's data-set id, code tokens and code token ids, in catalog order.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
from collections.abc import Sequence
from typing import Any

import torch
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


def load_policy_weights(
    policy: torch.nn.Module, path: str, catalog: dict[str, Any] | None, key: str
) -> None:
    """Load the policy weights (`policy.*`) of the wpauc checkpoint at `path` into `policy`.

    Refused with a ValueError naming `key`: a checkpoint with pickled objects (only tensors
    are loaded, so a checkpoint cannot run code), one that records another catalog than
    `catalog`, and one whose policy has another architecture (the first differing tensors
    and their shapes).

    Args:
        policy: the built policy.
        path: a wpauc (Lightning) checkpoint.
        catalog: this run's `catalog_record`.
        key: the setting that named `path`, for error messages.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{key}: no checkpoint at {path}") from error
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{key}: {path} holds pickled objects besides tensors; wpauc loads "
            "checkpoints with weights only, so that a checkpoint cannot run code"
        ) from error
    prefix = "policy."
    state = {
        name[len(prefix) :]: value
        for name, value in checkpoint["state_dict"].items()
        if name.startswith(prefix)
    }
    if not state:
        raise ValueError(f"{key}: {path} holds no policy weights (no 'policy.*' keys)")
    # first: another catalog usually means another vocabulary, hence other shapes too
    check_catalog(checkpoint.get(CATALOG_KEY), catalog, f"{key}: {path}")
    expected = policy.state_dict()
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    reshaped = [
        f"{name} {tuple(state[name].shape)} in the checkpoint, {tuple(value.shape)} here"
        for name, value in expected.items()
        if name in state and state[name].shape != value.shape
    ]
    if missing or unexpected or reshaped:
        raise ValueError(
            f"{key}: {path} does not match the configured policy (model.policy: give it the"
            f" settings of the run that saved it): missing {missing[:5]}, unexpected"
            f" {unexpected[:5]}, other shapes {reshaped[:3]}"
        )
    policy.load_state_dict(state)
