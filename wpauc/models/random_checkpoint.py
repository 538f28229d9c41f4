"""A stand-in for a pretrained checkpoint: a randomly initialised Qwen2 model and a word-level
tokenizer saved in Hugging Face layout, so that the pretrained-path code (loading,
resizing, LoRA, memory benchmarks) runs offline with no download."""

from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from wpauc.data.tokenizer import SPECIAL_TOKENS
from wpauc.models.tiny import TinyQwen2Policy


def word_level_tokenizer(num_words: int) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer: the data layer's five specials (ids 0..4), then the
    words w0 ... w{num_words-1}; code tokens are added to it as to a pretrained tokenizer."""
    vocabulary = list(SPECIAL_TOKENS.values()) + [f"w{index}" for index in range(num_words)]
    backend = Tokenizer(
        models.WordLevel(
            {token: index for index, token in enumerate(vocabulary)}, unk_token="<unk>"
        )
    )
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, padding_side="left", **SPECIAL_TOKENS)


def save_random_checkpoint(
    directory: str | Path, num_words: int, architecture: TinyQwen2Policy
) -> Path:
    """Write a random model of `architecture` with a `num_words`-word tokenizer to
    `directory` (created if needed), loadable with `from_pretrained(directory)`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = word_level_tokenizer(num_words)
    architecture.build(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
