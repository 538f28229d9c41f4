"""A random stand-in for a pretrained checkpoint, for bench_memory.py: the benchmark measures
loading, resizing and LoRA on a saved Hugging Face checkpoint without downloading one."""

from __future__ import annotations

from pathlib import Path

from wpauc.data import Catalog, TitleCodec, build_tokenizer
from wpauc.models import TinyQwen2Policy


def save_random_checkpoint(directory: Path, num_words: int, architecture: TinyQwen2Policy) -> Path:
    """Write a random model of `architecture` and a word-level tokenizer of `num_words` words
    (wpauc's from-scratch tokenizer, no code tokens yet) to `directory`; returns it.

    The words are the titles of a one-word-per-item catalog, so the tokenizer is the one wpauc
    builds for a title catalog: its five specials, then the words.
    """
    words = tuple(f"w{index}" for index in range(num_words))
    catalog = Catalog(item_ids=tuple(range(num_words)), titles=words)
    tokenizer = build_tokenizer(catalog, TitleCodec())
    architecture.build(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
