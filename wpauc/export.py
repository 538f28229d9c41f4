"""Export a trained recommender as a plain Hugging Face directory, and load it back.

``wpauc export --config <run config> [overrides] --ckpt_path <checkpoint> --output_dir <dir>``
takes the same config (and overrides) as ``wpauc test`` on that checkpoint and writes:

- ``config.json``, ``model.safetensors``, ``generation_config.json``: the policy as a plain
  causal LM, a LoRA adapter merged into its base weights (a 4/8-bit policy's adapter is
  merged into the full-precision base model of ``model.policy.init_args.path``, as QLoRA
  adapters usually are, so its outputs differ from the quantized model's by the
  quantization error; the policy is then built in full precision, without bitsandbytes or
  a GPU, and the checkpoint's quantized copy of the frozen base is not read: see
  :mod:`wpauc.models.provenance`);
- the tokenizer files, with the code tokens;
- ``wpauc_recommender.json``: every item's data-set id, title, SID and code (tokens and token
  ids, in catalog order: the item trie is ``ItemTrie.from_codes`` of the token ids), the
  prompt template and codec, the prompt limits, ``renormalize`` and the catalog record.

``AutoModelForCausalLM.from_pretrained(dir)`` and ``AutoTokenizer.from_pretrained(dir)`` load
it without wpauc; :func:`load_recommender` loads it with wpauc and recommends::

    recommender = load_recommender("exports/office_tawin")
    recommender.recommend([1204, 77, 3051], k=10)   # ten item ids, best first

The checkpoint must record the catalog of the config's data (see
:mod:`wpauc.models.provenance`); the loader checks that the tokenizer still gives the
exported codes.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from torch import nn
from transformers import AutoModelForCausalLM

from wpauc.data import (
    Catalog,
    CatalogContext,
    ItemCodec,
    PromptEncoder,
    PromptTemplate,
    RecDataModule,
    build_tokenizer,
    pad_prompts,
)
from wpauc.decoding import ItemTrie
from wpauc.evaluation import EvaluationProtocol, Exact
from wpauc.models.provenance import catalog_record, check_catalog, frozen_base_from_policy

#: The file of an export that wpauc reads besides the Hugging Face files.
RECOMMENDER_FILE = "wpauc_recommender.json"
#: The layout version of `RECOMMENDER_FILE`.
FORMAT_VERSION = 1


def _class_spec(instance: object, setting: str) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of a dataclass instance.

    Args:
        instance: the data module's codec or prompt template.
        setting: its config key, for the error when it is not a dataclass.
    """
    if not dataclasses.is_dataclass(instance):
        raise ValueError(
            f"{setting}: {type(instance).__name__} is not a dataclass, so export cannot record "
            "its settings; use one of wpauc's classes or make it a dataclass"
        )
    cls = type(instance)
    return {
        "class_path": f"{cls.__module__}.{cls.__qualname__}",
        "init_args": {
            field.name: getattr(instance, field.name)
            for field in dataclasses.fields(instance)
            if field.init
        },
    }


def _instantiate(spec: dict[str, Any], base: type, where: str) -> Any:
    """The instance described by :func:`_class_spec`; only subclasses of ``base`` are built,
    so an export file cannot make the loader call anything else.

    Args:
        spec: ``{"class_path", "init_args"}`` from the export file.
        base: the class it must be a subclass of (``ItemCodec`` or ``PromptTemplate``).
        where: the file and entry, for the error.
    """
    module_name, _, class_name = spec["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{where}: {spec['class_path']!r} is not a {base.__name__}")
    return cls(**spec["init_args"])


def _full_precision(builder):
    """`builder` without its 4/8-bit quantization: the export merges into the full-precision
    base model of the same ``path``."""
    if getattr(builder, "quantization", None) is None:
        return builder
    return dataclasses.replace(builder, quantization=None)


def _plain_model(module, context: CatalogContext) -> nn.Module:
    """The module's policy as a plain Hugging Face causal LM, any LoRA adapter merged (into
    the full-precision base model when the base weights are 4/8-bit).

    Args:
        module: the built `RecommenderModule` holding the checkpoint's weights.
        context: its catalog context (tokenizer and item codes, to rebuild a policy that was
            built quantized in full precision).
    """
    policy = module.policy
    if not isinstance(policy, PeftModel):
        return policy
    builder = _full_precision(module.policy_builder)
    if builder is not module.policy_builder:  # built quantized before export_recommender
        full_precision = builder.build(context.tokenizer, context.item_codes)
        target = full_precision.state_dict()
        full_precision.load_state_dict(
            frozen_base_from_policy(policy.state_dict(), target, "the quantized policy")
        )
        policy = full_precision
    return policy.merge_and_unload()


def export_recommender(
    module, datamodule: RecDataModule, ckpt_path: str | Path, output_dir: str | Path
) -> Path:
    """Write the export of the checkpoint `ckpt_path` to `output_dir` (see the module
    docstring); returns the directory.

    Args:
        module: a `RecommenderModule` configured like the run that saved the checkpoint (not
            built yet, or built without weights that matter: the checkpoint's are loaded).
        datamodule: the run's data module (its catalog must be the checkpoint's).
        ckpt_path: the checkpoint to export (e.g. ``<run>/checkpoints/best.ckpt``).
        output_dir: where to write; must not exist or be empty.
    """
    output = Path(output_dir)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"output_dir: {output} exists and is not an empty folder")
    # a 4/8-bit run's trained weights (adapter, code-token rows) are full precision: build
    # the full-precision base of its path (no bitsandbytes, no GPU) to merge them into
    if module.policy is None:
        module.policy_builder = _full_precision(module.policy_builder)
    context = datamodule.catalog_context()
    module.build(context)
    module.load_policy_weights(str(ckpt_path), key="ckpt_path")
    model = _plain_model(module, context)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    catalog, tokenizer = context.catalog, context.tokenizer
    tokenizer.save_pretrained(output)
    items = [
        {
            "item_id": item_id,
            "title": catalog.titles[index],
            "sid": None if catalog.sids is None else list(catalog.sids[index]),
            "code_tokens": tokenizer.convert_ids_to_tokens(code),
            "code_ids": list(code),
        }
        for index, (item_id, code) in enumerate(
            zip(catalog.item_ids, context.item_codes, strict=True)
        )
    ]
    description = {
        "format_version": FORMAT_VERSION,
        "checkpoint": str(ckpt_path),
        "catalog": module.catalog_record,
        "codec": _class_spec(datamodule.codec, "data.codec"),
        "template": _class_spec(datamodule.template, "data.template"),
        "max_history": datamodule.max_history,
        "max_prompt_tokens": datamodule.max_prompt_tokens,
        "renormalize": module.hparams.renormalize,
        "items": items,
    }
    (output / RECOMMENDER_FILE).write_text(json.dumps(description, indent=1))
    return output


@dataclass
class Recommender:
    """An exported recommender: the causal LM, its prompts and the item trie.

    Use :func:`load_recommender` to make one.
    """

    model: nn.Module
    """The Hugging Face causal LM (eval mode)."""
    prompts: PromptEncoder
    """Builds prompts as in training (template, catalog, codes, tokenizer, ``max_history``,
    prompt limit)."""
    trie: ItemTrie
    """The catalog's codes, on the model's device."""
    renormalize: bool
    """Score by log-probs renormalised over the allowed continuations, as in training."""
    evaluation: EvaluationProtocol = Exact()
    """The protocol whose recommendations `recommend` gives (as ``model.evaluation`` of
    ``wpauc predict``); `Exact`: a constrained beam search of width k."""

    @property
    def item_ids(self) -> tuple[int, ...]:
        """The data-set item ids, in catalog order."""
        return self.prompts.catalog.item_ids

    def recommend(self, history_item_ids: Sequence[int], k: int = 10) -> list[int]:
        """The top `k` item ids for a user, best first: the recommendations of
        ``evaluation`` (by default a trie-constrained beam search of width `k`, as ``wpauc
        predict`` with ``model.evaluation.num_beams: k``).

        Args:
            history_item_ids: the data-set ids of the user's items, oldest first (the last
                ``max_history`` are used).
            k: how many items; between 1 and the number of items.
        """
        prompts = self.prompts
        catalog = prompts.catalog
        history = tuple(catalog.index_of(item_id) for item_id in history_item_ids)
        input_ids, attention_mask = pad_prompts(
            [prompts.encode(history, "the history")], prompts.tokenizer.pad_token_id
        )
        device = self.trie.node_token.device
        items, _ = self.evaluation.recommend(
            self.model,
            input_ids.to(device),
            attention_mask.to(device),
            self.trie,
            self.renormalize,
            k,
        )
        return [catalog.item_ids[item] for item in items[0].tolist() if item >= 0]


def load_recommender(
    directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Recommender:
    """Load an export written by ``wpauc export``.

    Args:
        directory: the export folder.
        device: where the model runs.
        dtype: the model's dtype; None keeps the exported one.
    """
    directory = Path(directory)
    path = directory / RECOMMENDER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a wpauc export (no {RECOMMENDER_FILE})")
    description = json.loads(path.read_text())
    if description.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {description.get('format_version')!r}, this wpauc reads "
            f"{FORMAT_VERSION}"
        )
    items = description["items"]
    sids = [item["sid"] for item in items]
    catalog = Catalog(
        item_ids=tuple(item["item_id"] for item in items),
        titles=tuple(item["title"] for item in items),
        sids=None if sids[0] is None else tuple(tuple(sid) for sid in sids),
    )
    codec = _instantiate(description["codec"], ItemCodec, f"{path}: codec")
    template = _instantiate(description["template"], PromptTemplate, f"{path}: template")
    # the codes as training gave them: the codec's tokens added to the exported tokenizer
    tokenizer = build_tokenizer(catalog, codec, str(directory))
    item_codes = codec.encode(catalog, tokenizer)
    exported_codes = [item["code_ids"] for item in items]
    if item_codes != exported_codes:
        raise ValueError(f"{directory}: its tokenizer does not give the exported item codes")
    check_catalog(
        description["catalog"],
        catalog_record(catalog.item_ids, exported_codes, tokenizer, "this export"),
        f"{path}",
    )
    prompts = PromptEncoder(
        template,
        catalog,
        item_codes,
        tokenizer,
        description["max_history"],
        description["max_prompt_tokens"],
    )
    model = AutoModelForCausalLM.from_pretrained(
        directory, local_files_only=True, **({} if dtype is None else {"dtype": dtype})
    )
    return Recommender(
        model=model.to(device).eval(),
        prompts=prompts,
        trie=ItemTrie.from_codes(exported_codes).to(device),
        renormalize=description["renormalize"],
    )
