"""Checks that a policy and its tokenizer can represent every item code, and the special
token ids a built model takes from its tokenizer."""

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

# One definition for the decoding checks and the model builders (decoding stays free of
# the models package, whose imports pull in the data layer and Lightning).
from wpauc.decoding.shared_prefix import embedding_rows


def check_vocabulary(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    item_codes: Sequence[Sequence[int]],
) -> None:
    """Raise a ValueError unless every token id of every item code is a real token of the
    tokenizer (not its unknown token) and has an embedding row and an output row in the model.

    Args:
        model: the policy (a Hugging Face causal LM, possibly wrapped by peft).
        tokenizer: the tokenizer that produced the item codes.
        item_codes: the catalog's codes, one list of token ids per item (index = item index).
    """
    lengths = [len(code) for code in item_codes]
    if not lengths:
        raise ValueError("item_codes is empty: the catalog has no items to check")
    flat_ids = torch.tensor([token for code in item_codes for token in code], dtype=torch.long)
    item_of_token = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))

    def first_offender(bad: torch.Tensor) -> str:
        position = int(bad.nonzero()[0])
        item = int(item_of_token[position])
        return f"item_codes[{item}] = {list(item_codes[item])} (token id {int(flat_ids[position])})"

    tokenizer_size = len(tokenizer)
    outside_tokenizer = (flat_ids < 0) | (flat_ids >= tokenizer_size)
    if outside_tokenizer.any():
        raise ValueError(
            f"the tokenizer lacks the code tokens: {first_offender(outside_tokenizer)} is not "
            f"in its {tokenizer_size} ids; build the tokenizer from this catalog"
        )
    if tokenizer.unk_token_id is not None:
        unknown = flat_ids == tokenizer.unk_token_id
        if unknown.any():
            raise ValueError(
                f"the tokenizer lacks the code tokens: {first_offender(unknown)} is its unknown "
                f"token {tokenizer.unk_token!r}; build the tokenizer from this catalog"
            )
    model_rows = embedding_rows(model)
    outside_model = flat_ids >= model_rows
    if outside_model.any():
        raise ValueError(
            f"the model's vocabulary lacks the code tokens: {first_offender(outside_model)} has "
            f"no row among its {model_rows} embedding rows; build or resize the model with this "
            f"tokenizer ({tokenizer_size} tokens)"
        )


def set_special_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Copy the tokenizer's pad/bos/eos ids (those it defines) into the model's config and
    generation config, so that generation and padding agree with the tokenizer."""
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        token_id = getattr(tokenizer, name)
        if token_id is None:
            continue
        setattr(model.config, name, token_id)
        if model.generation_config is not None:
            setattr(model.generation_config, name, token_id)
