"""Tokenizers for item codes: a from-scratch word-level one (offline, for the tiny model) or
a pretrained one from a local path with the codec's tokens added."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from wpauc.data.catalog import Catalog
from wpauc.data.codecs import ItemCodec

SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "sep_token": "<sep>",
}
"""Special tokens of the from-scratch tokenizer (ids 0..4 in this order)."""


def _word_level_tokenizer(catalog: Catalog, codec: ItemCodec) -> PreTrainedTokenizerFast:
    specials = list(SPECIAL_TOKENS.values())
    code_tokens = [token for token in codec.new_tokens(catalog) if token not in specials]
    code_token_set = set(code_tokens)
    words = [word for word in codec.word_vocabulary(catalog) if word not in code_token_set]
    vocabulary = {token: index for index, token in enumerate(specials + code_tokens + words)}
    if len(vocabulary) != len(specials) + len(code_tokens) + len(words):
        raise ValueError("the codec returned repeated tokens; new_tokens must have no repeats")
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    # WordPiece decoding joins words with spaces and tidies punctuation.
    backend.decoder = decoders.WordPiece()
    backend.add_special_tokens(specials)
    # Registered as added tokens so "<a_1><b_2>" splits into codes without spaces.
    backend.add_tokens(code_tokens)
    return PreTrainedTokenizerFast(tokenizer_object=backend, padding_side="left", **SPECIAL_TOKENS)


def _pretrained_tokenizer(
    catalog: Catalog, codec: ItemCodec, pretrained_path: str
) -> PreTrainedTokenizerFast:
    tokenizer = AutoTokenizer.from_pretrained(pretrained_path, local_files_only=True)
    tokenizer.add_tokens(codec.new_tokens(catalog))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": SPECIAL_TOKENS["pad_token"]})
    tokenizer.padding_side = "left"
    return tokenizer


def build_tokenizer(
    catalog: Catalog, codec: ItemCodec, pretrained_path: str | None = None
) -> PreTrainedTokenizerFast:
    """A left-padding tokenizer that holds every token of the codec's item codes.

    Args:
        catalog: the items whose codes the tokenizer must cover.
        codec: the item codec; its `new_tokens` are added (and, without a pretrained path,
            its `word_vocabulary`, e.g. title words, forms the rest of the vocabulary).
        pretrained_path: local directory of a Hugging Face tokenizer. None builds a
            word-level tokenizer offline with specials `<pad> <unk> <bos> <eos> <sep>` (ids
            0..4). With a path, the codec's tokens are added and a pad token is ensured
            (the eos token, or a new `<pad>` when there is no eos).
    """
    if pretrained_path is None:
        return _word_level_tokenizer(catalog, codec)
    return _pretrained_tokenizer(catalog, codec, pretrained_path)
