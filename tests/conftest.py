"""Shared test set-up: one torch thread (tests run beside each other on 2 cores), the path of
the real data set, which tests skip without and the shipped configs read (``WPAUC_DATA``),
and a random stand-in for a pretrained checkpoint, so that the pretrained-path code (loading,
resizing, LoRA) runs offline."""

import os
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from wpauc.data import Catalog, TitleCodec, build_tokenizer
from wpauc.models import TinyQwen2Policy

torch.set_num_threads(int(os.environ.get("WPAUC_TEST_THREADS", "1")))

REPO_ROOT = Path(__file__).resolve().parents[1]
# the shipped configs read their data from $WPAUC_DATA (configs/README.md); the tests look
# there too, by default in a shared/data folder beside the repository
SHARED_DATA = Path(os.environ.setdefault("WPAUC_DATA", str(REPO_ROOT.parent / "shared" / "data")))
AMAZON18_MINIONEREC = SHARED_DATA / "amazon18-minionerec"


@pytest.fixture
def amazon18_dir() -> Path:
    """The real MiniOneRec-layout Amazon 2018 data; skips the test when absent."""
    if not AMAZON18_MINIONEREC.is_dir():
        pytest.skip(f"real data not found at {AMAZON18_MINIONEREC}")
    return AMAZON18_MINIONEREC


def word_tokenizer(num_words: int) -> PreTrainedTokenizerFast:
    """The package's from-scratch tokenizer over the words w0 ... w{num_words-1}: its five
    specials (ids 0..4), then the words, and no code tokens, like a pretrained tokenizer
    before the data layer adds the codec's tokens.

    Built as the word vocabulary of a title catalog whose titles are the single words (they
    are distinct, so the title codec adds no disambiguation tokens).
    """
    words = tuple(f"w{index}" for index in range(num_words))
    catalog = Catalog(item_ids=tuple(range(num_words)), titles=words)
    return build_tokenizer(catalog, TitleCodec())


def save_random_checkpoint(directory: Path, num_words: int, architecture: TinyQwen2Policy) -> Path:
    """Write a random model of `architecture` with `word_tokenizer(num_words)` to `directory`
    (created if needed), loadable with `from_pretrained(directory)`; returns `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = word_tokenizer(num_words)
    architecture.build(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    """A random stand-in for a pretrained checkpoint (its tokenizer lacks the code tokens)."""
    architecture = TinyQwen2Policy(
        num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, intermediate_size=64, seed=0
    )
    return save_random_checkpoint(tmp_path_factory.mktemp("standin"), 12, architecture)
