"""A pretrained causal LM from a local checkpoint as the policy: embeddings resized to the
tokenizer (which carries the added code tokens), optional LoRA (peft) and 4/8-bit loading
(bitsandbytes). The policy loads checkpoints of 4/8-bit runs, also through Lightning
(`wpauc.models.provenance.accept_quantized_checkpoints`)."""

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from wpauc.models.provenance import accept_quantized_checkpoints
from wpauc.models.vocabulary import check_vocabulary, embedding_rows, set_special_token_ids

# Non-reentrant checkpointing back-propagates into LoRA weights even when the (frozen)
# embedding output does not require grad, so no enable_input_require_grads() hook is needed.
GRADIENT_CHECKPOINTING_KWARGS = {"use_reentrant": False}


@dataclass
class LoraSettings:
    """LoRA adapter settings. The base weights stay frozen; only the adapter and, with
    `train_embeddings`, the code tokens' embedding (and lm_head) rows are trained."""

    r: int = 8
    """Rank of the low-rank update."""
    alpha: int = 16
    """LoRA scaling numerator: the update is scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the adapter's input during training."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    """Names (suffixes) of the linear layers that get an adapter."""
    train_embeddings: bool = True
    """Train the embedding and lm_head rows of every token id in the item codes (needed for
    code tokens added to the tokenizer, whose rows start untrained; with title codes this
    means the title words' rows)."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora.r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("lora.target_modules is empty: name at least one layer, e.g. q_proj")

    def peft_config(self, model: PreTrainedModel, code_token_ids: Sequence[int]) -> LoraConfig:
        """The peft LoraConfig for `model`, making the rows of `code_token_ids` trainable.

        Rows are trained with peft's `trainable_token_indices` (only those rows get a
        trainable copy) rather than `modules_to_save` (a trainable copy of the whole embedding
        and lm_head matrices, hundreds of MB for a large vocabulary). With tied embeddings peft
        ties the lm_head rows to the embedding rows itself; untied ones are listed both.
        """
        trainable_token_indices: list[int] | dict[str, list[int]] | None = None
        if self.train_embeddings:
            token_ids = sorted(set(code_token_ids))
            input_embeddings = model.get_input_embeddings()
            output_embeddings = model.get_output_embeddings()
            if output_embeddings is None or output_embeddings.weight is input_embeddings.weight:
                trainable_token_indices = token_ids
            else:
                trainable_token_indices = {
                    _module_name(model, input_embeddings): token_ids,
                    _module_name(model, output_embeddings): token_ids,
                }
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            trainable_token_indices=trainable_token_indices,
            task_type="CAUSAL_LM",
        )


def _module_name(model: nn.Module, module: nn.Module) -> str:
    """The dotted name of `module` inside `model`."""
    return next(name for name, candidate in model.named_modules() if candidate is module)


@dataclass
class PretrainedPolicy:
    """Builds the policy from a local Hugging Face causal-LM checkpoint (nothing is downloaded)."""

    path: str
    """Directory of the checkpoint (config.json + weights), e.g. a local Qwen2.5 copy."""
    lora: LoraSettings | None = None
    """LoRA adapter settings; None trains all weights."""
    quantization: Literal["4bit", "8bit"] | None = None
    """Load the frozen base weights in 4-bit (NF4) or 8-bit with bitsandbytes (needs CUDA, lora)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Dtype of the loaded weights; "auto" keeps the checkpoint's."""
    attn_implementation: str | None = None
    """Hugging Face attention kernel ("sdpa", "eager", "flash_attention_2"); None: its default."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""

    def __post_init__(self) -> None:
        if self.quantization not in (None, "4bit", "8bit"):
            raise ValueError(
                f"quantization must be None, '4bit' or '8bit', got {self.quantization!r}"
            )
        if self.quantization is not None and self.lora is None:
            raise ValueError(
                f"quantization={self.quantization!r} needs lora: quantized base weights cannot be "
                "trained, so set the `lora` settings (or quantization: null)"
            )
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(
                f"dtype must be 'auto', 'float32', 'bfloat16' or 'float16', got {self.dtype!r}"
            )

    def build(
        self,
        tokenizer: PreTrainedTokenizerBase,
        item_codes: Sequence[Sequence[int]] | None = None,
    ) -> nn.Module:
        """Load the checkpoint, grow its embeddings to the tokenizer, and wrap it with LoRA when
        configured. `item_codes` (token ids per item) are checked against the vocabulary and,
        with `lora.train_embeddings`, name the embedding rows to train. The model's
        ``load_state_dict`` accepts a 4/8-bit run's checkpoint, keeping its own frozen base
        weights where the checkpoint's are quantised (`wpauc.models.provenance`)."""
        checkpoint = Path(self.path).expanduser()
        if not (checkpoint / "config.json").is_file():
            raise ValueError(
                f"path: {self.path!r} is not a Hugging Face checkpoint directory (no config.json "
                "there); give the local directory of a pretrained causal LM"
            )
        if self.lora is not None and self.lora.train_embeddings and item_codes is None:
            raise ValueError(
                "lora.train_embeddings needs the item codes to know which embedding rows to "
                "train: pass item_codes to build(), or set lora.train_embeddings: false"
            )
        load_kwargs: dict = {
            "dtype": self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
        }
        if self.attn_implementation is not None:
            load_kwargs["attn_implementation"] = self.attn_implementation
        if self.quantization is not None:
            load_kwargs["quantization_config"] = self._bitsandbytes_config()
            load_kwargs["device_map"] = {"": torch.cuda.current_device()}
        model = AutoModelForCausalLM.from_pretrained(
            checkpoint, local_files_only=True, **load_kwargs
        )

        # Only grow: checkpoints such as Qwen2's pad their matrices beyond the tokenizer, and
        # rows past len(tokenizer) are harmless. New rows are drawn around the old rows' mean
        # (transformers' mean_resizing), so new tokens start with ordinary logits.
        if len(tokenizer) > embedding_rows(model):
            model.resize_token_embeddings(len(tokenizer))
        set_special_token_ids(model, tokenizer)
        if item_codes is not None:
            check_vocabulary(model, tokenizer, item_codes)

        if self.quantization is not None:
            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=self.gradient_checkpointing,
                gradient_checkpointing_kwargs=GRADIENT_CHECKPOINTING_KWARGS,
            )
        elif self.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs=GRADIENT_CHECKPOINTING_KWARGS
            )
        if self.lora is not None:
            code_token_ids = [token for code in item_codes or () for token in code]
            model = get_peft_model(model, self.lora.peft_config(model, code_token_ids))
        accept_quantized_checkpoints(model)
        return model

    def _bitsandbytes_config(self) -> BitsAndBytesConfig:
        """The bitsandbytes loading config, or a clear error where it cannot run here."""
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ImportError(
                f"quantization={self.quantization!r} needs the bitsandbytes package: "
                "pip install 'wpauc[quant]', or set quantization: null"
            )
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"quantization={self.quantization!r} needs a CUDA GPU (bitsandbytes kernels) and "
                "none is available: set quantization: null to train on this machine"
            )
        if self.quantization == "8bit":
            return BitsAndBytesConfig(load_in_8bit=True)
        compute_dtype = torch.bfloat16 if self.dtype == "auto" else getattr(torch, self.dtype)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
