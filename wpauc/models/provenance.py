"""Which catalog a policy was trained on: a record kept in checkpoints and exports, the
check that refuses to use a policy with another catalog, and the weights-only loading of a
checkpoint's policy that applies it, also from a 4/8-bit (bitsandbytes) run.

A policy's code-token rows only mean something for the item codes they were trained with:
the same weights with another catalog (other items, other codes, or a tokenizer that gives
the code tokens other ids) recommend nonsense without any error. The record's fingerprint
is a SHA-256 over every item's data-set id, code tokens and code token ids, in catalog order.

A checkpoint of a 4/8-bit LoRA run holds its frozen base weights quantised, with
bitsandbytes' quantisation state beside them (4-bit: ``<layer>.weight.absmax``,
``.quant_map``, ``.nested_absmax``, ``.nested_quant_map``,
``.quant_state.bitsandbytes__nf4``; 8-bit: ``<layer>.SCB``, ``<layer>.weight_format``).
Those weights are never trained (bitsandbytes cannot train them): they are the base model
of ``model.policy.init_args.path``, which the policy being loaded was built from, so every
load (:func:`load_policy_weights` for ``init_from`` and ``wpauc export``; the hook of
:func:`accept_quantized_checkpoints` for Lightning's own loading: resume, ``validate``,
``test`` and ``predict --ckpt_path``, ``fit``'s test of the best checkpoint) keeps the
policy's own base weights there (:func:`frozen_base_from_policy`) and loads everything
else (adapter, code-token rows, norms, embeddings) strictly. So a 4-bit checkpoint loads
into a 4-bit policy, and also into a bf16/fp32 one (``wpauc export`` merges the adapter into
the full-precision base model of ``path``). Where both are quantised the two copies are
compared: a checkpoint whose frozen weights differ was trained from another base model and
is refused.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

#: The checkpoint entry that holds the record.
CATALOG_KEY = "wpauc_catalog"

#: What bitsandbytes' ``Linear4bit`` saves beside its 4-bit weight ``<layer>.weight``: the
#: entries of its ``QuantState.as_dict(packed=True)``, as ``<layer>.weight.<entry>`` (the last
#: one packs the non-tensor settings, among them the weight's shape, as JSON bytes).
FOUR_BIT_STATE = (
    "absmax",
    "quant_map",
    "nested_absmax",
    "nested_quant_map",
    "quant_state.bitsandbytes__nf4",
    "quant_state.bitsandbytes__fp4",
)
#: What ``Linear8bitLt`` saves beside its int8 weight ``<layer>.weight``: ``<layer>.<entry>``.
EIGHT_BIT_STATE = ("SCB", "weight_format")
#: The share of a quantised base's elements that may differ between a checkpoint and the
#: policy (both quantised from ``path``) before the checkpoint counts as another base
#: model's: 0 would refuse the few rounding ties another bitsandbytes build may break the
#: other way; another base model differs almost everywhere.
BASE_MISMATCH_TOLERANCE = 1e-3


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


def quantized_weights(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, str], set[str]]:
    """The bitsandbytes-quantised weights of a state dict and their quantisation state.

    A weight ``<layer>.weight`` is 4-bit when ``<layer>.weight.<entry>`` is in `state` for an
    entry of `FOUR_BIT_STATE` (no module can save such a name: ``weight`` cannot be both a
    tensor and a module), 8-bit when it is an int8 tensor with ``<layer>.<entry>`` beside it
    for an entry of `EIGHT_BIT_STATE`.

    Returns:
        ``({weight name: "4-bit" or "8-bit"}, {names of the quantisation-state entries})``.
    """
    weights: dict[str, str] = {}
    entries: set[str] = set()
    for name in state:
        for entry in FOUR_BIT_STATE:
            owner = name.removesuffix(f".{entry}")
            if owner != name and owner.rpartition(".")[2] == "weight" and owner in state:
                weights[owner] = "4-bit"
                entries.add(name)
        layer, _, entry = name.rpartition(".")
        owner = f"{layer}.weight" if layer else "weight"
        if entry in EIGHT_BIT_STATE and owner in state and state[owner].dtype == torch.int8:
            weights[owner] = "8-bit"
            entries.add(name)
    return weights, entries


def _layer_shape(state: Mapping[str, torch.Tensor], name: str, kind: str | None):
    """The shape of the layer weight `name` before quantisation, or None when the 4-bit
    settings that record it cannot be read."""
    if kind != "4-bit":
        return tuple(state[name].shape)
    for entry in FOUR_BIT_STATE:
        if entry.startswith("quant_state.") and f"{name}.{entry}" in state:
            packed = state[f"{name}.{entry}"]
            try:
                return tuple(json.loads(bytes(packed.cpu().tolist()).decode())["shape"])
            except (ValueError, KeyError, TypeError):
                return None
    return None


def _shape_of(state: Mapping[str, torch.Tensor], name: str, kinds: dict[str, str]) -> str:
    """The shape of `name` in an error message; a quantised weight's layer shape and kind."""
    kind = kinds.get(name)
    if kind is None:
        return str(tuple(state[name].shape))
    return f"{_layer_shape(state, name, kind) or tuple(state[name].shape)} {kind}"


def _same_layer(name: str, state, kind: str | None, policy_state, policy_kind: str | None):
    """Whether `name` is a layer of the same shape (before quantisation) in both."""
    shape = _layer_shape(state, name, kind)
    policy_shape = _layer_shape(policy_state, name, policy_kind)
    if shape is not None and policy_shape is not None:
        return shape == policy_shape
    return kind == policy_kind and state[name].shape == policy_state[name].shape


def frozen_base_from_policy(
    state: Mapping[str, torch.Tensor], policy_state: Mapping[str, torch.Tensor], what: str
) -> dict[str, torch.Tensor]:
    """`state`, a checkpoint's policy weights, made ready to load into the policy whose
    ``state_dict()`` is `policy_state`: without bitsandbytes' quantisation-state entries, and
    with the policy's own tensor in place of every frozen base weight that is quantised in
    either (see the module docstring). Every other key is left as it is, for a strict load
    to name.

    Raises:
        ValueError: naming `what`, when a layer quantised in either has another shape in the
            other (another architecture), and when both hold a layer quantised the same way
            and the checkpoint's differs from the policy's (beyond `BASE_MISMATCH_TOLERANCE`):
            it was trained from another base model than the policy's ``path``.
    """
    loaded, loaded_entries = quantized_weights(state)
    own, _ = quantized_weights(policy_state)
    if not loaded and not own:
        return dict(state)
    ready = {name: value for name, value in state.items() if name not in loaded_entries}
    reshaped: list[str] = []
    compared = differing = 0
    first: str | None = None
    for name in sorted(loaded.keys() | own.keys()):
        kind, policy_kind = loaded.get(name), own.get(name)
        if name not in ready or name not in policy_state:
            continue
        if not _same_layer(name, state, kind, policy_state, policy_kind):
            reshaped.append(
                f"{name} {_shape_of(state, name, loaded)} in the checkpoint,"
                f" {_shape_of(policy_state, name, own)} here"
            )
            continue
        value, policy_value = state[name], policy_state[name]
        same_storage = (value.shape, value.dtype) == (policy_value.shape, policy_value.dtype)
        if kind == policy_kind and same_storage:
            mismatch = int((value.to(policy_value.device) != policy_value).sum())
            compared += value.numel()
            differing += mismatch
            if mismatch and first is None:
                first = name
        ready[name] = policy_value
    if reshaped:
        raise ValueError(
            f"{what} does not match the configured policy (model.policy: give it the settings"
            f" of the run that saved it): other shapes {reshaped[:3]}"
        )
    if differing > BASE_MISMATCH_TOLERANCE * compared:
        raise ValueError(
            f"{what}: its frozen {loaded[first]} base weights are not this policy's:"
            f" {differing / compared:.1%} of their elements differ (first: {first}), so it was"
            " trained from another base model. Give model.policy.init_args.path the base model"
            " of the run that saved it"
        )
    return ready


def accept_quantized_checkpoints(policy: nn.Module) -> None:
    """Make ``load_state_dict`` of `policy` (and of any module holding it, such as the
    LightningModule that Lightning restores from ``ckpt_path``) accept checkpoints of 4/8-bit
    runs, as :func:`frozen_base_from_policy` does; every other mismatch stays an error of the
    strict load."""

    def keep_frozen_base(module, state_dict, prefix, *args) -> None:
        local = {
            name[len(prefix) :]: value
            for name, value in state_dict.items()
            if name.startswith(prefix)
        }
        ready = frozen_base_from_policy(local, module.state_dict(), "ckpt_path")
        for name in local.keys() - ready.keys():
            del state_dict[prefix + name]
        for name, value in ready.items():
            state_dict[prefix + name] = value

    policy.register_load_state_dict_pre_hook(keep_frozen_base)


def load_policy_weights(
    policy: torch.nn.Module, path: str, catalog: dict[str, Any] | None, key: str
) -> None:
    """Load the policy weights (`policy.*`) of the wpauc checkpoint at `path` into `policy`;
    a 4/8-bit run's frozen base weights stay the policy's own (see the module docstring).

    Refused with a ValueError naming `key`: a checkpoint with pickled objects (only tensors
    are loaded, so a checkpoint cannot run code), one that records another catalog than
    `catalog`, one whose policy has another architecture (the first missing and unexpected
    keys, the first differing tensors and their shapes), and one whose frozen quantised base
    is not the policy's.

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
    ready = frozen_base_from_policy(state, expected, f"{key}: {path}")
    _, own_entries = quantized_weights(expected)
    missing = [name for name in expected if name not in ready and name not in own_entries]
    unexpected = [name for name in ready if name not in expected]
    reshaped = [
        f"{name} {tuple(ready[name].shape)} in the checkpoint, {tuple(value.shape)} here"
        for name, value in expected.items()
        if name in ready and ready[name].shape != value.shape
    ]
    if missing or unexpected or reshaped:
        raise ValueError(
            f"{key}: {path} does not match the configured policy (model.policy: give it the"
            f" settings of the run that saved it): missing {missing[:5]}, unexpected"
            f" {unexpected[:5]}, other shapes {reshaped[:3]}"
        )
    policy.load_state_dict(ready)
