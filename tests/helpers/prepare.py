"""Small generated raw Amazon 2018 files with deliberate bad records and the truth behind
them, and readers of the prepared output."""

from __future__ import annotations

import ast
import csv
import json
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

CATEGORY = "Toy_Products"
STEM = f"{CATEGORY}_5_2016-10-2018-11"
WINDOW_START = int(datetime(2016, 10, 1, tzinfo=timezone.utc).timestamp())
WINDOW_END = int(datetime(2018, 11, 1, tzinfo=timezone.utc).timestamp())
NO_META_ASIN = "BNOMETA"


@dataclass
class RawFiles:
    """Generated raw files and the truth behind them."""

    reviews: Path
    meta: Path
    clean_reviews: list[tuple[str, str, int]]  # (user, asin, time), the parsable ones
    titles: dict[str, str]  # asin -> usable title
    bad_review_lines: list[int]  # 1-based line numbers of planted bad review records


def _asin(index: int) -> str:
    return f"B{index:09d}"


def write_raw_files(directory: Path, seed: int = 0) -> RawFiles:
    """A small category: 60 users, 30 items (3 with unusable titles) plus one item without
    metadata, unique review times spread around the window, planted bad lines."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    titles = {_asin(i): f'Item {i} pen, "blue" {i}\'s pack' for i in range(27)}
    asins = [_asin(i) for i in range(30)] + [NO_META_ASIN]
    weights = [1.0 / (1 + i % 10) for i in range(30)] + [0.4]
    margin = 60 * 86400
    times = rng.sample(range(WINDOW_START - margin, WINDOW_END + margin), 700)
    times[:3] = [WINDOW_START, WINDOW_END, WINDOW_END + 1]  # both edges are inside, one past is not
    clean = []
    for user in range(60):
        for _ in range(rng.randint(3, 14)):
            clean.append((f"U{user:03d}", rng.choices(asins, weights)[0], times[len(clean)]))
    rng.shuffle(clean)
    lines = []
    for index, (user, asin, time) in enumerate(clean):
        record = {
            "overall": 5.0,
            "verified": True,
            "reviewerID": user,
            "asin": asin,
            "unixReviewTime": time,
        }
        lines.append(repr(record) if index == 7 else json.dumps(record))  # one Python-literal line
    bad = [
        "{not json",
        "garbage line",
        "[1, 2]",
        json.dumps({"reviewerID": "U900", "asin": _asin(0)}),
        json.dumps({"reviewerID": "U900", "unixReviewTime": WINDOW_START + 5}),
        json.dumps({"reviewerID": "U900", "asin": _asin(0), "unixReviewTime": "yesterday"}),
    ]
    positions = sorted(rng.sample(range(len(lines)), len(bad)))
    for offset, (position, line) in enumerate(zip(positions, bad, strict=True)):
        lines.insert(position + offset, line)
    lines.insert(10, "")  # blank lines are skipped, not counted
    bad_lines = [index + 1 for index, line in enumerate(lines) if line in bad]
    reviews = directory / "reviews.json"
    reviews.write_text("\n".join(lines) + "\n", encoding="utf-8")

    meta_lines = []
    for i in range(30):
        record = {
            "asin": _asin(i),
            "title": titles.get(_asin(i)),
            "description": [f"<b>Great</b> pen &amp; paper {i}", "second  line"],
            "brand": "by\nAcme " if i == 0 else f"Brand{i}",
            "category": ["Toy Products", f"Pens {i % 3}"],
        }
        if i == 27:
            record["title"] = " ".join(["word"] * 25)
        if i == 28:
            record["title"] = '<span id="x">Bad</span>'
        if i == 29:
            del record["title"]
        meta_lines.append(repr(record) if i == 3 else json.dumps(record))
    meta_lines.insert(
        6, json.dumps({"asin": _asin(5), "title": titles[_asin(5)]})
    )  # duplicate record
    meta_lines += [
        json.dumps({"asin": "BUNUSED", "title": "Never reviewed"}),
        "{broken",
        json.dumps({"title": "no asin here"}),
    ]
    meta = directory / "meta.json"
    meta.write_text("\n".join(meta_lines) + "\n", encoding="utf-8")
    return RawFiles(reviews, meta, [(u, a, t) for u, a, t in clean], titles, bad_lines)


def read_split(path: Path) -> list[dict]:
    """CSV rows with list columns parsed back from their Python literals."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for column in ("history_item_title", "history_item_id", "history_item_sid"):
            row[column] = ast.literal_eval(row[column])
        row["item_id"] = int(row["item_id"])
    return rows


def raw_file_options(raw: RawFiles) -> list[str]:
    """The options of ``wpauc prepare-amazon`` that name the raw files and the category."""
    return ["--reviews", str(raw.reviews), "--meta", str(raw.meta), "--category", CATEGORY]
