"""The default policy: a tiny Qwen2-architecture causal LM with random weights, built from a
config, whose vocabulary is exactly the tokenizer's (specials + the catalog's code tokens)."""

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    PreTrainedTokenizerBase,
    Qwen2Config,
)

from wpauc.models.vocabulary import check_vocabulary, set_special_token_ids


def _dropout_output(module: nn.Module, inputs: tuple, output: torch.Tensor, rate: float):
    """Forward hook: dropout on a module's output while the module trains."""
    return nn.functional.dropout(output, rate, training=module.training)


@dataclass
class TinyQwen2Policy:
    """Builds a randomly initialised Qwen2 causal LM small enough to train on a CPU."""

    num_layers: int = 2
    """Number of transformer blocks."""
    hidden_size: int = 64
    """Width of the residual stream (and of the token embeddings)."""
    num_heads: int = 4
    """Number of attention (query) heads; must divide hidden_size."""
    num_kv_heads: int = 2
    """Number of key/value heads (grouped-query attention); must divide num_heads."""
    intermediate_size: int = 256
    """Width of the MLP's hidden layer."""
    max_position_embeddings: int = 512
    """Longest sequence (prompt + code) the model is configured for."""
    attention_dropout: float = 0.0
    """Dropout on the attention probabilities while training."""
    embedding_dropout: float = 0.0
    """Dropout on the token embeddings while training (Qwen2 itself has none there)."""
    rope_theta: float = 10000.0
    """Base of the rotary position embedding frequencies."""
    tie_word_embeddings: bool = True
    """Share the input embedding matrix with the output (lm_head) matrix."""
    attn_implementation: str = "sdpa"
    """Hugging Face attention kernel: "sdpa" or "eager" ("flash_attention_2" needs a GPU)."""
    seed: int | None = None
    """Seed of the random initialisation (None: use, and advance, torch's global RNG)."""

    def __post_init__(self) -> None:
        for name in (
            "num_layers",
            "hidden_size",
            "num_heads",
            "num_kv_heads",
            "intermediate_size",
            "max_position_embeddings",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"TinyQwen2Policy.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("attention_dropout", "embedding_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(
                    f"TinyQwen2Policy.{name} must be in [0, 1), got {getattr(self, name)}"
                )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"TinyQwen2Policy.num_heads ({self.num_heads}) must divide hidden_size "
                f"({self.hidden_size})"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"TinyQwen2Policy.num_kv_heads ({self.num_kv_heads}) must divide num_heads "
                f"({self.num_heads})"
            )

    def config(self, tokenizer: PreTrainedTokenizerBase) -> Qwen2Config:
        """The Qwen2 config for this tokenizer: one embedding row per tokenizer id."""
        return Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            rope_theta=self.rope_theta,
            attention_dropout=self.attention_dropout,
            tie_word_embeddings=self.tie_word_embeddings,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )

    def build(
        self,
        tokenizer: PreTrainedTokenizerBase,
        item_codes: Sequence[Sequence[int]] | None = None,
    ) -> nn.Module:
        """A new randomly initialised float32 `Qwen2ForCausalLM` for `tokenizer`; when
        `item_codes` (token ids per item) are given, checks that the vocabulary covers them."""
        config = self.config(tokenizer)
        # fork_rng keeps a seeded build from disturbing the caller's RNG stream
        with torch.random.fork_rng(devices=[], enabled=self.seed is not None):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            model = AutoModelForCausalLM.from_config(
                config, attn_implementation=self.attn_implementation, dtype=torch.float32
            )
        if self.embedding_dropout:
            model.get_input_embeddings().register_forward_hook(
                partial(_dropout_output, rate=self.embedding_dropout)
            )
        set_special_token_ids(model, tokenizer)
        if item_codes is not None:
            check_vocabulary(model, tokenizer, item_codes)
        return model
