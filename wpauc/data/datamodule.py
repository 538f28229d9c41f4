"""The LightningDataModule: any source + codec + prompt template -> padded prompt batches.

A batch (from every dataloader, `collate` and `RecDataModule.batch_for`) is a dict:

    input_ids         [B, T] long   prompt token ids, LEFT-padded with the pad id
    attention_mask    [B, T] long   1 on prompt tokens, 0 on padding
    target            [B]    long   catalog index of the next item
    target_code       [B, L] long   the target's code token ids, RIGHT-padded with the pad id
    target_code_mask  [B, L] bool   True on code tokens
    sample_index      [B]    long   index of the sample in its full split (so it lines up
                                    with e.g. `RecData.true_next_item_probs`); for training
                                    batches, in `fit_samples(data, refit_on_valid)`
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

from wpauc.data.catalog import SPLITS, Catalog, RecData, Sample, check_split, fit_samples
from wpauc.data.codecs import ItemCodec, SIDCodec
from wpauc.data.context import CatalogContext
from wpauc.data.loaders import EvalShardSampler, GlobalBatchSampler, ResumableDataLoader
from wpauc.data.readers import RecSource
from wpauc.data.templates import CodeOnlyTemplate, PromptEncoder, PromptTemplate
from wpauc.data.tokenizer import build_tokenizer


class PromptExample(NamedTuple):
    """One encoded sample."""

    input_ids: list[int]
    """Prompt token ids (unpadded)."""
    target: int
    """Catalog index of the next item."""
    sample_index: int
    """Index of the sample in its full split."""


class PromptDataset(Dataset):
    """Pre-tokenised examples of one split."""

    def __init__(self, examples: list[PromptExample]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> PromptExample:
        return self.examples[index]


def pad_prompts(
    prompts: Sequence[Sequence[int]], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(input_ids, attention_mask)` `[B, T]` of prompts LEFT-padded with `pad_token_id`."""
    prompt_length = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), prompt_length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), prompt_length), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        start = prompt_length - len(prompt)
        input_ids[row, start:] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, start:] = 1
    return input_ids, attention_mask


def collate(
    examples: Sequence[PromptExample], item_codes: Sequence[Sequence[int]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Pad examples into a batch dict (see the module docstring for the keys)."""
    if not examples:
        raise ValueError("collate: no examples")
    batch_size = len(examples)
    input_ids, attention_mask = pad_prompts(
        [example.input_ids for example in examples], pad_token_id
    )
    codes = [item_codes[example.target] for example in examples]
    code_length = max(len(code) for code in codes)
    target_code = torch.full((batch_size, code_length), pad_token_id, dtype=torch.long)
    target_code_mask = torch.zeros((batch_size, code_length), dtype=torch.bool)
    for row, code in enumerate(codes):
        target_code[row, : len(code)] = torch.tensor(code, dtype=torch.long)
        target_code_mask[row, : len(code)] = True
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "target": torch.tensor([example.target for example in examples], dtype=torch.long),
        "target_code": target_code,
        "target_code_mask": target_code_mask,
        "sample_index": torch.tensor(
            [example.sample_index for example in examples], dtype=torch.long
        ),
    }


@dataclass(frozen=True)
class PromptCollator:
    """`collate` bound to item codes and a pad id (picklable, for DataLoader workers)."""

    item_codes: list[list[int]]
    """Code token ids of every catalog item."""
    pad_token_id: int
    """Id used for padding."""

    def __call__(self, examples: Sequence[PromptExample]) -> dict[str, torch.Tensor]:
        return collate(examples, self.item_codes, self.pad_token_id)


def evaluation_subset(num_samples: int, max_samples: int | None, seed: int) -> list[int]:
    """Sorted indices of a seeded random subset of at most `max_samples` of a split."""
    if max_samples is None or max_samples >= num_samples:
        return list(range(num_samples))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(num_samples, generator=generator)[:max_samples].tolist())


@dataclass
class _Prepared:
    """Everything `setup()` builds."""

    data: RecData
    context: CatalogContext
    datasets: dict[str, PromptDataset]


class RecDataModule(LightningDataModule):
    """Pre-tokenised prompt batches over any `RecSource`.

    Args:
        source: where samples come from, e.g. `SyntheticSource()` or `MiniOneRecSource(...)`.
        codec: how items become token codes: `SIDCodec()` (default) or `TitleCodec()`.
        template: how a history becomes a prompt: `CodeOnlyTemplate()` (default, tiny model)
            or `NaturalLanguageTemplate(...)` (pretrained LLM).
        tokenizer_path: local Hugging Face tokenizer directory; None builds the offline
            word-level tokenizer (see `build_tokenizer`).
        batch_size: training batch size.
        eval_batch_size: batch size of validation, test and predict.
        max_history: most recent history items put in a prompt (older ones are dropped).
        max_prompt_tokens: longest prompt; longer prompts lose their oldest history items
            until they fit, and a sample whose last history item alone does not fit raises
            a ValueError naming it.
        max_eval_samples: evaluate on a seeded random subset of at most this many valid /
            test samples (kept in split order); None uses them all.
        num_workers: DataLoader worker processes.
        refit_on_valid: also train on the validation samples (appended to the training
            ones). Validation still runs on them, so model selection on valid is then
            optimistic (biased); hence off by default (see docs/design.md §8).
        seed: seeds the training shuffle and the evaluation subset. Under DDP the same
            seeded permutation is shared out across processes (`GlobalBatchSampler`, which
            Lightning keeps because it is a DistributedSampler).
    """

    def __init__(
        self,
        source: RecSource,
        codec: ItemCodec = SIDCodec(),  # noqa: B008 - stateless settings objects, never mutated
        template: PromptTemplate = CodeOnlyTemplate(),  # noqa: B008
        tokenizer_path: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 128,
        max_history: int = 10,
        max_prompt_tokens: int = 512,
        max_eval_samples: int | None = None,
        num_workers: int = 0,
        refit_on_valid: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
            ("max_history", max_history),
            ("max_prompt_tokens", max_prompt_tokens),
        ):
            if value < 1:
                raise ValueError(f"RecDataModule: {name} must be >= 1, got {value}")
        if max_eval_samples is not None and max_eval_samples < 1:
            raise ValueError(
                f"RecDataModule: max_eval_samples must be >= 1 or None, got {max_eval_samples}"
            )
        if num_workers < 0:
            raise ValueError(f"RecDataModule: num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters(ignore=["source", "codec", "template"])
        self.source = source
        self.codec = codec
        self.template = template
        self.tokenizer_path = tokenizer_path
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.max_history = max_history
        self.max_prompt_tokens = max_prompt_tokens
        self.max_eval_samples = max_eval_samples
        self.num_workers = num_workers
        self.refit_on_valid = refit_on_valid
        self.seed = seed
        self._prepared: _Prepared | None = None

    def setup(self, stage: str | None = None) -> None:
        """Load the data, build the tokenizer and codes, pre-tokenise every split (once)."""
        if self._prepared is not None:
            return
        data = self.source.load()
        tokenizer = build_tokenizer(data.catalog, self.codec, self.tokenizer_path)
        item_codes = self.codec.encode(data.catalog, tokenizer)
        context = CatalogContext(
            data.catalog,
            item_codes,
            tokenizer,
            description=f"{self.source!r} with {type(self.codec).__name__}",
            valid_next_item_probs=(data.true_next_item_probs or {}).get("valid"),
        )
        self._prepared = _Prepared(data, context, datasets={})
        prompts = self.prompt_encoder()
        for split in SPLITS:
            if split == "train":
                samples = fit_samples(data, self.refit_on_valid)
                indices = range(len(samples))
            else:
                samples = data.split(split)
                indices = evaluation_subset(len(samples), self.max_eval_samples, self.seed)
            examples = [self._example(prompts, samples[index], index, split) for index in indices]
            self._prepared.datasets[split] = PromptDataset(examples)

    @property
    def _state(self) -> _Prepared:
        if self._prepared is None:
            raise RuntimeError("RecDataModule: call setup() first")
        return self._prepared

    @property
    def data(self) -> RecData:
        """The loaded catalog and samples."""
        return self._state.data

    @property
    def catalog(self) -> Catalog:
        """The items (catalog index = position)."""
        return self._state.data.catalog

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer holding every code token (left padding)."""
        return self._state.context.tokenizer

    @property
    def item_codes(self) -> list[list[int]]:
        """Code token ids of every catalog item (prefix-free)."""
        return self._state.context.item_codes

    def catalog_context(self) -> CatalogContext:
        """What the model is built from (sets the data up first when needed)."""
        self.setup()
        return self._state.context

    def prompt_encoder(self) -> PromptEncoder:
        """The template bound to the catalog's codes and to this module's prompt limits."""
        context = self._state.context
        return PromptEncoder(
            self.template,
            context.catalog,
            context.item_codes,
            context.tokenizer,
            self.max_history,
            self.max_prompt_tokens,
        )

    def dataset(self, split: str) -> PromptDataset:
        """The pre-tokenised examples of a split (train: the fitting samples, with valid when
        `refit_on_valid`; valid / test limited by max_eval_samples)."""
        check_split(split)
        return self._state.datasets[split]

    def prompt_ids(self, sample: Sample, name: str = "sample") -> list[int]:
        """Prompt token ids of a sample after `max_history` and `max_prompt_tokens`."""
        return self.prompt_encoder().encode(sample.history, f"{name} (user {sample.user!r})")

    @staticmethod
    def _example(prompts: PromptEncoder, sample: Sample, index: int, split: str) -> PromptExample:
        name = f"{split} sample {index} (user {sample.user!r})"
        return PromptExample(prompts.encode(sample.history, name), sample.target, index)

    def batch_for(
        self, samples: Sequence[Sample], sample_indices: Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """The batch dict of any samples (e.g. hand-made in a notebook).

        `sample_indices` fills the `sample_index` entry (default 0..len(samples)-1).
        """
        if sample_indices is None:
            sample_indices = range(len(samples))
        if len(sample_indices) != len(samples):
            raise ValueError(f"{len(samples)} samples but {len(sample_indices)} sample_indices")
        prompts = self.prompt_encoder()
        examples = [
            self._example(prompts, sample, index, "given")
            for sample, index in zip(samples, sample_indices, strict=True)
        ]
        return self._collator()(examples)

    def _collator(self) -> PromptCollator:
        return PromptCollator(self.item_codes, self.tokenizer.pad_token_id)

    def _loader(self, split: str, batch_size: int, sampler, loader_class=DataLoader) -> DataLoader:
        return loader_class(
            self.dataset(split),
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=self._collator(),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _training_progress(self) -> tuple[int, int]:
        """(epoch, batches finished in it) from the trainer, for mid-epoch resume."""
        if self.trainer is None:
            return 0, 0
        fit_loop = self.trainer.fit_loop
        return (
            fit_loop.epoch_progress.current.completed,
            fit_loop.epoch_loop.batch_progress.current.processed,
        )

    def train_dataloader(self) -> DataLoader:
        """Seeded shuffled global batches, identical under DDP and resumable mid-epoch."""
        sampler = GlobalBatchSampler(len(self.dataset("train")), self.batch_size, seed=self.seed)
        loader = self._loader("train", self.batch_size, sampler, ResumableDataLoader)
        loader.progress = self._training_progress
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        # Unpadded shards: every evaluation sample is counted exactly once under DDP.
        sampler = EvalShardSampler(len(self.dataset(split)))
        return self._loader(split, self.eval_batch_size, sampler)
