"""Catalog, SID collision handling, codecs (prefix-freeness) and tokenizers."""

import itertools
import json
import random

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from wpauc.data import (
    Catalog,
    DataFileError,
    SIDCodec,
    TitleCodec,
    build_tokenizer,
    read_sid_index,
    resolve_sid_collisions,
)
from wpauc.data.catalog import find_prefix_conflict
from wpauc.data.tokenizer import SPECIAL_TOKENS


def brute_force_prefix_free(codes) -> bool:
    """No code equals or starts another (all ordered pairs)."""
    for a, b in itertools.permutations(range(len(codes)), 2):
        if list(codes[b][: len(codes[a])]) == list(codes[a]):
            return False
    return True


def test_find_prefix_conflict_matches_brute_force():
    rng = random.Random(0)
    for _ in range(300):
        codes = [
            [rng.randrange(3) for _ in range(rng.randint(1, 3))] for _ in range(rng.randint(1, 8))
        ]
        conflict = find_prefix_conflict(codes)
        assert (conflict is None) == brute_force_prefix_free(codes)
        if conflict is not None:
            first, second = conflict
            assert codes[second][: len(codes[first])] == codes[first]


def test_catalog_index_of_and_validation():
    catalog = Catalog(item_ids=(10, 3, 7), titles=("x", "y", "z"))
    assert len(catalog) == 3
    assert [catalog.index_of(i) for i in (10, 3, 7)] == [0, 1, 2]
    with pytest.raises(ValueError, match="item id 99 is not in the catalog"):
        catalog.index_of(99)
    with pytest.raises(ValueError, match="item id 3 appears twice"):
        Catalog(item_ids=(3, 3), titles=("a", "b"))
    with pytest.raises(ValueError, match="2 item_ids but 1 titles"):
        Catalog(item_ids=(1, 2), titles=("a",))
    with pytest.raises(ValueError, match="resolve collisions"):
        Catalog(item_ids=(1, 2), titles=("a", "b"), sids=(("<a_1>",), ("<a_1>",)))


def test_resolve_sid_collisions_tags_every_member_in_item_id_order():
    item_ids = [5, 1, 9, 3, 4]
    sids = [
        ("<a_1>", "<b_1>"),
        ("<a_1>", "<b_1>"),
        ("<a_2>", "<b_0>"),
        ("<a_1>", "<b_1>"),
        ("<a_2>", "<b_1>"),
    ]
    resolved = resolve_sid_collisions(item_ids, sids)
    # colliding group {5, 1, 3} in item-id order 1, 3, 5 -> d_0, d_1, d_2
    assert resolved == (
        ("<a_1>", "<b_1>", "<d_2>"),
        ("<a_1>", "<b_1>", "<d_0>"),
        ("<a_2>", "<b_0>"),
        ("<a_1>", "<b_1>", "<d_1>"),
        ("<a_2>", "<b_1>"),
    )
    assert brute_force_prefix_free(resolved)
    with pytest.raises(ValueError, match="proper prefix"):
        resolve_sid_collisions([0, 1], [("<a_1>",), ("<a_1>", "<b_2>")])


@pytest.mark.parametrize(
    "content, key, problem",
    [
        ({"0": "<a_1><b_2>"}, "0", "non-empty list"),
        ({"0": ["<a_1>"], "1": []}, "1", "non-empty list"),
        ({"0": ["<a_1>", 3]}, "0", "whitespace-free string"),
        ({"0": ["<a 1>"]}, "0", "whitespace-free string"),
        ({"x": ["<a_1>"]}, "x", "not an integer"),
        ({"0": ["<a_1><b_2><c_3>"]}, "0", r"SID token 0 '<a_1><b_2><c_3>' joins several"),
        ({"0": ["<a_1>", "<b_2><c_3>"]}, "0", r"SID token 1 '<b_2><c_3>' joins several"),
        (
            {"0": ["<a_1>", "<b_2>"], "1": ["<a_1>"], "2": ["<a_3>", "<b_4>"]},
            "1",
            r"SID \['<a_1>'\] has 1 tokens but 2 of the 3 SIDs have 2",
        ),
        (
            {"0": ["<a_1>"], "1": ["<a_1>", "<b_2>", "<c_3>"], "2": ["<a_3>"]},
            "1",
            "has 3 tokens but 2 of the 3 SIDs have 1",
        ),
    ],
)
def test_read_sid_index_errors_name_file_and_key(tmp_path, content, key, problem):
    path = tmp_path / "Cat.index.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataFileError, match=problem) as error:
        read_sid_index(path)
    assert str(path) in str(error.value) and f"key {key!r}" in str(error.value)


def test_read_sid_index_rejects_non_object_and_bad_json(tmp_path):
    path = tmp_path / "a.index.json"
    path.write_text("[1, 2]")
    with pytest.raises(DataFileError, match="JSON object"):
        read_sid_index(path)
    path.write_text('{"0": [}')
    with pytest.raises(DataFileError, match="line 1.*not valid JSON"):
        read_sid_index(path)


def small_catalog() -> Catalog:
    raw = [("<a_0>", "<b_1>"), ("<a_0>", "<b_1>"), ("<a_1>", "<b_10>"), ("<a_1>", "<b_2>")]
    item_ids = [4, 2, 0, 7]
    return Catalog(
        item_ids=tuple(item_ids),
        titles=("Red pen", "Blue pen, 2-pack", "Red pen", "Red pen refill"),
        sids=resolve_sid_collisions(item_ids, raw),
    )


def test_sid_codec_tokens_codes_and_round_trip():
    catalog = small_catalog()
    codec = SIDCodec()
    assert codec.new_tokens(catalog) == [
        "<a_0>",
        "<a_1>",
        "<b_1>",
        "<b_2>",
        "<b_10>",
        "<d_0>",
        "<d_1>",
    ]
    tokenizer = build_tokenizer(catalog, codec)
    assert tokenizer.padding_side == "left"
    for name, token in SPECIAL_TOKENS.items():
        assert getattr(tokenizer, name) == token
    codes = codec.encode(catalog, tokenizer)
    assert brute_force_prefix_free(codes)
    for code, sid in zip(codes, catalog.sids, strict=True):
        assert tokenizer.convert_ids_to_tokens(code) == list(sid)
        # the code text without spaces tokenises back to the same ids
        assert tokenizer("".join(sid), add_special_tokens=False)["input_ids"] == code
    assert codes[1] == tokenizer.convert_tokens_to_ids(["<a_0>", "<b_1>", "<d_0>"])  # item 2


def test_sid_codec_needs_sids_and_tokens():
    no_sids = Catalog(item_ids=(0,), titles=("a",))
    with pytest.raises(ValueError, match="no SIDs.*TitleCodec"):
        SIDCodec().new_tokens(no_sids)
    catalog = small_catalog()
    other = Catalog(item_ids=(0,), titles=("a",), sids=(("<z_9>",),))
    tokenizer = build_tokenizer(other, SIDCodec())
    with pytest.raises(ValueError, match="'<a_0>' is not in the tokenizer"):
        SIDCodec().encode(catalog, tokenizer)


def test_title_codec_word_level_distinct_prefix_free_and_round_trip():
    catalog = small_catalog()
    codec = TitleCodec()
    assert codec.new_tokens(catalog) == ["<d_0>", "<d_1>"]  # "Red pen" appears twice
    tokenizer = build_tokenizer(catalog, codec)
    codes = codec.encode(catalog, tokenizer)
    assert brute_force_prefix_free(codes)
    assert all(code[-1] == tokenizer.eos_token_id for code in codes)
    tokens = [tokenizer.convert_ids_to_tokens(code) for code in codes]
    # duplicate titles: item ids 0 and 4 share "Red pen" -> d_0 for id 0, d_1 for id 4
    assert tokens[2] == ["Red", "pen", "<d_0>", "<eos>"]
    assert tokens[0] == ["Red", "pen", "<d_1>", "<eos>"]
    # "Red pen refill" starts with "Red pen" but the eos keeps the codes prefix-free
    assert tokens[3] == ["Red", "pen", "refill", "<eos>"]
    assert tokenizer.decode(codes[1], skip_special_tokens=True) == "Blue pen, 2 - pack"
    assert tokenizer.unk_token_id not in itertools.chain.from_iterable(codes)


def test_title_codec_rejects_missing_disambiguation_token():
    unique_titles = Catalog(item_ids=(0, 1), titles=("x y", "x  y"))
    tokenizer = build_tokenizer(Catalog(item_ids=(0,), titles=("x y",)), TitleCodec())
    # "x y" and "x  y" tokenise identically, but the tokenizer was built without <d_*> tokens
    with pytest.raises(ValueError, match="tokenises like other titles"):
        TitleCodec().encode(unique_titles, tokenizer)


def save_tiny_pretrained_tokenizer(directory, with_pad: bool) -> None:
    """A stand-in for a downloaded Hugging Face tokenizer (BPE-free word level, no bos)."""
    words = ["<|endoftext|>", "<unk>", "Red", "Blue", "pen", ",", "2", "-", "pack", "refill"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    extra = {"pad_token": "<|endoftext|>"} if with_pad else {}
    PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", unk_token="<unk>", **extra
    ).save_pretrained(directory)


@pytest.mark.parametrize("codec", [SIDCodec(), TitleCodec()])
def test_pretrained_tokenizer_gets_codec_tokens_and_pad(tmp_path, codec):
    save_tiny_pretrained_tokenizer(tmp_path, with_pad=False)
    catalog = small_catalog()
    tokenizer = build_tokenizer(catalog, codec, pretrained_path=str(tmp_path))
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token == "<|endoftext|>"  # eos reused as pad
    codes = codec.encode(catalog, tokenizer)
    assert brute_force_prefix_free(codes)
    for token in codec.new_tokens(catalog):
        assert tokenizer.convert_tokens_to_ids(token) >= 10  # added after the base vocabulary


def test_pretrained_tokenizer_path_must_exist_locally(tmp_path):
    with pytest.raises(OSError):
        build_tokenizer(small_catalog(), SIDCodec(), pretrained_path=str(tmp_path / "absent"))
