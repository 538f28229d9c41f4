"""Prompt templates: a sample's history -> prompt token ids, chosen by `class_path` in YAML.

The policy generates an item's code right after the prompt, so a prompt never ends with
padding or a trailing space. Item codes are inserted as the exact token ids the policy
generates (no text round trip), so the history and the answer share one vocabulary.
`PromptEncoder` binds a template to a catalog's codes and the prompt limits: the prompts of
training (`RecDataModule`) and of an export (`wpauc.export.Recommender`) alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from wpauc.data.catalog import Catalog


class PromptTemplate(ABC):
    """Turns a history (catalog indices, oldest first) into prompt token ids."""

    @abstractmethod
    def encode(
        self,
        history: Sequence[int],
        catalog: Catalog,
        item_codes: list[list[int]],
        tokenizer: PreTrainedTokenizerBase,
    ) -> list[int]:
        """Prompt token ids for `history` (codes from `item_codes`, by catalog index)."""


def _bos(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    return [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]


@dataclass(frozen=True)
class CodeOnlyTemplate(PromptTemplate):
    """`bos` + the history items' codes concatenated + `sep` (for the tiny model).

    Codes are prefix-free, so their concatenation is unambiguous without separators. The
    bos token is left out when the tokenizer has none; the sep token is required.
    """

    def encode(
        self,
        history: Sequence[int],
        catalog: Catalog,
        item_codes: list[list[int]],
        tokenizer: PreTrainedTokenizerBase,
    ) -> list[int]:
        if tokenizer.sep_token_id is None:
            raise ValueError(
                "CodeOnlyTemplate needs a tokenizer with a sep token (the from-scratch "
                "tokenizer has <sep>); use NaturalLanguageTemplate with a pretrained tokenizer"
            )
        prompt = _bos(tokenizer)
        for item in history:
            prompt.extend(item_codes[item])
        prompt.append(tokenizer.sep_token_id)
        return prompt


DEFAULT_INSTRUCTION = (
    "A user bought the following items, oldest first. Recommend the item they will buy next."
)


@dataclass(eq=False)
class NaturalLanguageTemplate(PromptTemplate):
    """A plain-text prompt for a pretrained LLM (no chat template)::

        {bos}{instruction}
        History:
        {code of item 1} "{title of item 1}"
        ...
        Next item:

    followed directly by the generated code. Code token ids are inserted as they are; the
    text parts are tokenised without special tokens (with the from-scratch word-level
    tokenizer most instruction words become <unk>: this template is meant for pretrained
    tokenizers). With `TitleCodec`, whose codes end with eos, set `include_codes=False` and
    keep `include_titles=True` to list the history as quoted titles (D3 style).
    """

    instruction: str = DEFAULT_INSTRUCTION
    """Task description placed first in the prompt."""
    include_titles: bool = True
    """Show each history item's title, in double quotes."""
    include_codes: bool = True
    """Show each history item's code tokens."""
    _cache: tuple | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.include_titles or self.include_codes):
            raise ValueError(
                "NaturalLanguageTemplate: include_titles or include_codes must be True"
            )

    def _pieces(
        self, catalog: Catalog, item_codes: list[list[int]], tokenizer: PreTrainedTokenizerBase
    ) -> tuple[list[int], list[list[int]], list[int]]:
        """Token ids of the head, of every item's line and of the tail, computed once per
        (catalog, item_codes, tokenizer)."""
        if self._cache is not None and all(
            cached is current
            for cached, current in zip(
                self._cache[0], (catalog, item_codes, tokenizer), strict=True
            )
        ):
            return self._cache[1]

        def tokenize(texts: list[str]) -> list[list[int]]:
            return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

        head, newline, tail = tokenize([f"{self.instruction}\nHistory:", "\n", "\nNext item:"])
        titles = tokenize(
            [f'{" " if self.include_codes else ""}"{title}"' for title in catalog.titles]
            if self.include_titles
            else []
        )
        lines = [
            newline
            + (item_codes[item] if self.include_codes else [])
            + (titles[item] if self.include_titles else [])
            for item in range(len(catalog))
        ]
        pieces = (_bos(tokenizer) + head, lines, tail)
        self._cache = ((catalog, item_codes, tokenizer), pieces)
        return pieces

    def encode(
        self,
        history: Sequence[int],
        catalog: Catalog,
        item_codes: list[list[int]],
        tokenizer: PreTrainedTokenizerBase,
    ) -> list[int]:
        head, lines, tail = self._pieces(catalog, item_codes, tokenizer)
        prompt = list(head)
        for item in history:
            prompt.extend(lines[item])
        prompt.extend(tail)
        return prompt


@dataclass(frozen=True, eq=False)
class PromptEncoder:
    """A template bound to a catalog, its item codes, the tokenizer and the prompt limits."""

    template: PromptTemplate
    """How a history becomes a prompt."""
    catalog: Catalog
    """The items the history indexes."""
    item_codes: list[list[int]]
    """Code token ids of every item, by catalog index."""
    tokenizer: PreTrainedTokenizerBase
    """The tokenizer holding every code token."""
    max_history: int
    """Most recent history items put in a prompt (older ones are dropped)."""
    max_prompt_tokens: int
    """Longest prompt; longer prompts lose their oldest history items until they fit."""

    def encode(self, history: Sequence[int], name: str = "history") -> list[int]:
        """Prompt token ids of `history` (catalog indices, oldest first) after `max_history`
        and `max_prompt_tokens`; a history whose last item alone does not fit raises a
        ValueError starting with `name`."""
        history = history[-self.max_history :]
        while True:
            prompt = self.template.encode(history, self.catalog, self.item_codes, self.tokenizer)
            if len(prompt) <= self.max_prompt_tokens:
                return prompt
            if len(history) <= 1:
                raise ValueError(
                    f"{name}: the prompt has {len(prompt)} tokens with {len(history)} history"
                    f" item(s), more than max_prompt_tokens={self.max_prompt_tokens}"
                )
            history = history[1:]
