"""The interface every policy builder offers, for type hints (e.g. a LightningModule's
`policy: PolicyBuilder` argument, filled by `class_path` in YAML)."""

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from torch import nn
from transformers import PreTrainedTokenizerBase


@runtime_checkable
class PolicyBuilder(Protocol):
    """Builds the policy model for a tokenizer that already holds the code tokens."""

    def build(
        self,
        tokenizer: PreTrainedTokenizerBase,
        item_codes: Sequence[Sequence[int]] | None = None,
    ) -> nn.Module:
        """The policy model; with `item_codes` (token ids per item), checked to cover them."""
        ...
