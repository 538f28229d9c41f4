"""Raw Amazon Reviews 2018 files -> MiniOneRec-layout samples.

Input: a category's review file (JSON lines with ``reviewerID``, ``asin``,
``unixReviewTime``, ...; e.g. ``Office_Products_5.json.gz``) and metadata file (JSON lines
with ``asin``, ``title``, ``description``, ``brand``, ``category``/``categories``, ...;
e.g. ``meta_Office_Products.json.gz``), plain or gzipped. Lines that are not JSON are tried
as Python literals (``ast.literal_eval``, never ``eval``), as in some older dumps.

The processing follows MiniOneRec's public ``data/amazon18_data_process.py`` (read from its
source; facts only):

1. Time window: keep reviews with ``start <= unixReviewTime <= end`` where ``start`` and
   ``end`` are the first second of the start and end months (so ``2016-10`` .. ``2018-11``
   ends at 2018-11-01 00:00:00, inclusive). MiniOneRec converts the months with the
   machine's local time zone; here they are UTC, so the window edges may differ by the
   machine's UTC offset.
2. Usable titles: an item is kept only if its metadata title does not contain
   ``<span id``, and after replacing ``&quot;``/``&amp;`` and stripping spaces and double
   quotes it has more than 1 character and at most 20 space-separated words.
3. Iterative k-core (k = 5): drop users and items with fewer than k reviews, repeat until
   nothing changes. Repeated (user, item) reviews are kept and counted, as MiniOneRec does.
4. Ids: users are numbered by first appearance in the filtered review file; items by first
   appearance when walking the users in that order, each user's reviews sorted by time
   (stable, so ties keep file order). CSV user ids are ``A<number>``.
5. Samples: for each user and each position ``i >= 1`` of the time-sorted sequence, the
   sample (previous ``<= 10`` items, item ``i``). All samples are sorted by the target's
   time (stable) and cut globally: the first ``int(0.8 n)`` are train, up to
   ``int(0.9 n)`` valid, the rest test.
6. ``item.json`` fields: title as in 2.; description = the raw value (a list is written as
   Python's ``str`` of the list, as MiniOneRec does) with HTML tags removed, entities
   unescaped and whitespace collapsed; brand with ``"by\\n"`` removed, stripped;
   categories flattened, entries containing ``</span>`` dropped, joined with ``,``.

Known differences from MiniOneRec: UTC month boundaries (1.); categories are read from the
2018 key ``category`` when ``categories`` is absent (MiniOneRec reads only ``categories``,
so its 2018 ``item.json`` has empty categories); MiniOneRec widens the start year when
fewer than 3000 items survive, which is not done here (choose ``start`` yourself).

Bad input (unparsable lines, missing or ill-typed fields, reviewed items without metadata)
is counted in a :class:`~wpauc.prepare.records.BadRecordLog` with file and line numbers;
with ``strict=True`` the first one raises ``ValueError`` instead. Steps 3-5 live in
:mod:`wpauc.prepare.samples`, writing in :mod:`wpauc.prepare.layout`.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from wpauc.prepare.records import BadRecordLog, iter_records
from wpauc.prepare.samples import (
    Review,
    TimedSample,
    build_samples,
    chronological_split,
    k_core_filter,
)

#: Review fields the pipeline needs.
REVIEW_FIELDS = ("reviewerID", "asin", "unixReviewTime")

_YEAR_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_HTML_TAG = re.compile(r"<[^>]+>")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class ItemMeta:
    """The metadata fields written to ``item.json``."""

    title: str
    """Cleaned title (the usable-title rule holds)."""
    description: str
    """Cleaned description text."""
    brand: str
    """Brand, stripped."""
    categories: str
    """Categories joined with ``,``."""

    def to_dict(self) -> dict[str, str]:
        """The ``item.json`` record."""
        return {
            "title": self.title,
            "description": self.description,
            "brand": self.brand,
            "categories": self.categories,
        }


@dataclass
class PreparedData:
    """What the pipeline produced, before writing.

    Attributes:
        items: item table in id order (item id = position).
        asins: Amazon ids of the items, in id order.
        users: reviewer ids in user-number order.
        splits: samples per split name, each sorted by target time.
        stats: counts of what each step kept and removed, for the report.
    """

    items: list[ItemMeta]
    asins: list[str]
    users: list[str]
    splits: dict[str, list[TimedSample]]
    stats: dict = field(default_factory=dict)


def month_start(year_month: str, arg_name: str = "year_month") -> int:
    """Unix time (UTC) of the first second of ``YYYY-MM``.

    Args:
        year_month: the month, ``YYYY-MM``.
        arg_name: the option it came from, named in the error.
    """
    match = _YEAR_MONTH.match(year_month)
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"{arg_name} must look like YYYY-MM (e.g. 2016-10), got {year_month!r}")
    return int(
        datetime(int(match.group(1)), int(match.group(2)), 1, tzinfo=timezone.utc).timestamp()
    )


def _as_timestamp(value: object) -> int | None:
    """An integer Unix time from an int or a string of digits; ``None`` otherwise.

    Args:
        value: the record's ``unixReviewTime``.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def read_reviews(path: Path, log: BadRecordLog) -> list[Review]:
    """Reviews in file order. Records missing ``reviewerID``/``asin``/``unixReviewTime``
    (``review_missing_field``) or with an empty id or non-integer time
    (``review_bad_field``) are logged and skipped.

    Args:
        path: the review JSON-lines file.
        log: where bad records go.
    """
    reviews = []
    for line, record in iter_records(path, log):
        missing = [name for name in REVIEW_FIELDS if record.get(name) is None]
        if missing:
            log.add("review_missing_field", path, line, f"missing field(s) {', '.join(missing)}")
            continue
        user, asin, time = (
            record["reviewerID"],
            record["asin"],
            _as_timestamp(record["unixReviewTime"]),
        )
        if not isinstance(user, str) or not user or not isinstance(asin, str) or not asin:
            log.add("review_bad_field", path, line, "reviewerID and asin must be non-empty strings")
            continue
        if time is None:
            log.add(
                "review_bad_field",
                path,
                line,
                f"unixReviewTime must be an integer, got {record['unixReviewTime']!r}",
            )
            continue
        reviews.append(Review(user, asin, time, line))
    return reviews


def clean_title(raw: object, max_words: int) -> str | None:
    """MiniOneRec's title rule: the cleaned title, or ``None`` when unusable (not a
    string, contains ``<span id``, 1 character or less, or more than ``max_words`` words).

    Args:
        raw: the metadata record's ``title``.
        max_words: longest usable title, in space-separated words.
    """
    if not isinstance(raw, str) or "<span id" in raw:
        return None
    title = raw.replace("&quot;", '"').replace("&amp;", "&").strip(" ").strip('"')
    if len(title) > 1 and len(title.split(" ")) <= max_words:
        return title
    return None


def clean_text(raw: object) -> str:
    """HTML tags removed, entities unescaped, whitespace collapsed; a list is cleaned as
    its Python ``str`` (MiniOneRec's behaviour for the 2018 list-valued descriptions).

    Args:
        raw: a metadata field such as ``description``.
    """
    if not raw:
        return ""
    text = _HTML_TAG.sub("", str(raw))
    text = html.unescape(text)
    return _WHITESPACE.sub(" ", text).strip()


def _clean_categories(raw: object) -> str | None:
    """Flattened, ``</span>``-free categories joined with ``,``; ``None`` if ill-typed.

    Args:
        raw: the record's ``categories`` (or ``category``): a list, possibly of lists.
    """
    if not raw:
        return ""
    if not isinstance(raw, list):
        return None
    flat = []
    for entry in raw:
        flat.extend(entry if isinstance(entry, list) else [entry])
    return ",".join(str(entry).strip() for entry in flat if "</span>" not in str(entry)).strip()


def read_metadata(
    path: Path, wanted: set[str], log: BadRecordLog, max_title_words: int = 20
) -> tuple[dict[str, ItemMeta], set[str], int]:
    """Metadata of the ``wanted`` asins.

    Args:
        path: the metadata JSON-lines file.
        wanted: asins whose metadata is needed (records of other asins are skipped).
        log: where bad records go.
        max_title_words: longest usable title, in space-separated words.

    Returns:
        ``(usable, unusable, duplicates)``: ``usable`` maps asin -> :class:`ItemMeta` for
        items with a usable title (a later duplicate record with a usable title replaces an
        earlier one, as in MiniOneRec); ``unusable`` holds the wanted items whose records all
        lack a usable title; ``duplicates`` counts records of wanted asins
        seen before. Records without an ``asin`` are logged as ``meta_missing_field``;
        ill-typed brand/categories as ``meta_bad_field`` (the item is kept with that field
        empty).
    """
    usable: dict[str, ItemMeta] = {}
    unusable: set[str] = set()
    duplicates = 0
    for line, record in iter_records(path, log):
        asin = record.get("asin")
        if not isinstance(asin, str) or not asin:
            log.add("meta_missing_field", path, line, "missing or empty field asin")
            continue
        if asin not in wanted:
            continue
        duplicates += asin in usable or asin in unusable
        title = clean_title(record.get("title"), max_title_words)
        if title is None:
            if asin not in usable:
                unusable.add(asin)
            continue
        unusable.discard(asin)
        brand = record.get("brand", "")
        if not isinstance(brand, str):
            log.add("meta_bad_field", path, line, f"brand of {asin} is not a string: {brand!r}")
            brand = ""
        raw_categories = record.get("categories", record.get("category"))
        categories = _clean_categories(raw_categories)
        if categories is None:
            log.add(
                "meta_bad_field",
                path,
                line,
                f"categories of {asin} are not a list: {raw_categories!r}",
            )
            categories = ""
        usable[asin] = ItemMeta(
            title=title,
            description=clean_text(record.get("description", "")),
            brand=brand.replace("by\n", "").strip(),
            categories=categories,
        )
    return usable, unusable, duplicates


def prepare_amazon(
    reviews_path: Path,
    meta_path: Path,
    start: str = "2016-10",
    end: str = "2018-11",
    k_core: int = 5,
    max_history: int = 10,
    max_title_words: int = 20,
    split_cut_points: tuple[float, float] = (0.8, 0.9),
    log: BadRecordLog | None = None,
) -> PreparedData:
    """Run steps 1-5 of the module docstring on one category's raw files.

    Args:
        reviews_path: review JSON-lines file (``.gz`` or plain).
        meta_path: metadata JSON-lines file (``.gz`` or plain).
        start: first month kept, ``YYYY-MM``.
        end: the window ends at the first second of this month, ``YYYY-MM``.
        k_core: minimum number of reviews per user and per item.
        max_history: longest history per sample.
        max_title_words: longest usable title, in space-separated words.
        split_cut_points: cumulative fractions of the time-sorted samples where train and
            valid end.
        log: where bad records go (a fresh non-strict log if ``None``).

    Raises:
        ValueError: bad arguments, a bad record under a strict log, or nothing left.
    """
    log = log if log is not None else BadRecordLog()
    start_time, end_time = month_start(start, "start"), month_start(end, "end")
    if start_time >= end_time:
        raise ValueError(f"start ({start}) must be before end ({end})")
    if k_core < 1 or max_history < 1 or max_title_words < 1:
        raise ValueError(
            "k_core, max_history and max_title_words must be >= 1, "
            f"got {k_core}, {max_history}, {max_title_words}"
        )
    stats: dict = {}
    reviews = read_reviews(Path(reviews_path), log)
    stats["reviews_read"] = len(reviews)
    reviews = [review for review in reviews if start_time <= review.time <= end_time]
    stats["reviews_in_window"] = len(reviews)

    metadata, unusable, duplicates = read_metadata(
        Path(meta_path), {review.asin for review in reviews}, log, max_title_words
    )
    stats["duplicate_metadata_records"] = duplicates
    first_line: dict[str, int] = {}
    for review in reviews:
        first_line.setdefault(review.asin, review.line)
    without_metadata = [
        asin for asin in first_line if asin not in metadata and asin not in unusable
    ]
    for asin in without_metadata:
        log.add(
            "item_without_metadata",
            reviews_path,
            first_line[asin],
            f"item {asin} has no metadata record in {meta_path}",
        )
    stats["items_without_metadata"] = len(without_metadata)
    stats["items_unusable_title"] = len(unusable)
    reviews = [review for review in reviews if review.asin in metadata]
    stats["reviews_with_usable_item"] = len(reviews)

    stats["users_before_k_core"] = len({review.user for review in reviews})
    stats["items_before_k_core"] = len({review.asin for review in reviews})
    reviews, rounds = k_core_filter(reviews, k_core)
    stats["k_core_rounds"] = rounds
    stats["reviews_after_k_core"] = len(reviews)
    if not reviews:
        raise ValueError(
            f"no reviews left after the time window {start}..{end}, usable titles and "
            f"{k_core}-core filtering of {reviews_path} (see the counts: {stats})"
        )
    users, asins, samples = build_samples(reviews, max_history)
    splits = chronological_split(samples, split_cut_points)
    stats.update(
        users=len(users),
        items=len(asins),
        samples=len(samples),
        **{f"{name}_samples": len(rows) for name, rows in splits.items()},
    )
    return PreparedData(
        items=[metadata[asin] for asin in asins],
        asins=asins,
        users=users,
        splits=splits,
        stats=stats,
    )
