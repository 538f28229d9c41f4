"""Data sources: each turns files (or a generator) into a `RecData` via `load()`.

Sources are chosen by `class_path` in YAML, e.g.

    source:
      class_path: wpauc.data.MiniOneRecSource
      init_args: {data_dir: ../shared/data/amazon18-minionerec, category: Office_Products}

List columns are Python list literals, parsed with `ast.literal_eval` (never `eval`) and
type-checked. Every problem with a file raises `DataFileError` (a ValueError) whose
message names the file, the line (1-based, the header is line 1; a record spanning
several physical lines is named by its first) and the field.
"""

from __future__ import annotations

import ast
import csv
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wpauc.data.catalog import SPLITS, Catalog, RecData, Sample
from wpauc.data.codecs import read_sid_index, resolve_sid_collisions
from wpauc.data.files import DataFileError, minionerec_index_path, read_json_by_item_id


class RecSource(ABC):
    """Where a `RecData` comes from."""

    @abstractmethod
    def load(self) -> RecData:
        """Read (or generate) the catalog and the train / valid / test samples."""


def _find_one(directory: Path, pattern: str) -> Path:
    """The single file in `directory` matching the glob `pattern`."""
    matches = sorted(directory.glob(pattern))
    if len(matches) != 1:
        found = ", ".join(path.name for path in matches) or "none"
        raise FileNotFoundError(
            f"expected exactly one file matching {pattern!r} in {directory}, found: {found}"
        )
    return matches[0]


def _csv_records(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(first line number, field -> text) of every record, after checking the header."""
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None:
            raise DataFileError(path, "the file is empty (no header)", line=1)
        for field in required:
            if field not in header:
                raise DataFileError(
                    path, f"missing column; header is {header}", line=1, field=field
                )
        positions = {field: header.index(field) for field in required}
        first_line = reader.line_num + 1
        for record in reader:
            if len(record) != len(header):
                raise DataFileError(
                    path, f"{len(record)} fields, header has {len(header)}", line=first_line
                )
            yield first_line, {field: record[position] for field, position in positions.items()}
            first_line = reader.line_num + 1


def _parse_int(text: str, path: Path, line: int, field: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataFileError(path, f"not an integer: {text!r}", line=line, field=field) from None


def _parse_int_list(text: str, path: Path, line: int, field: str) -> list[int]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise DataFileError(
            path, f"not a Python list literal: {text!r}", line=line, field=field
        ) from None
    if not isinstance(value, list) or not all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    ):
        raise DataFileError(
            path, f"expected a list of integers, got {text!r}", line=line, field=field
        )
    return value


def _catalog_index(catalog: Catalog, item_id: int, path: Path, line: int, field: str) -> int:
    if not catalog.has_item(item_id):
        raise DataFileError(
            path, f"item id {item_id} is not in the catalog", line=line, field=field
        )
    return catalog.index_of(item_id)


def read_samples(
    path: Path,
    catalog: Catalog,
    user_field: str = "user_id",
    history_field: str = "history_item_id",
    target_field: str = "item_id",
) -> list[Sample]:
    """Samples of one split CSV; item ids are mapped to catalog indices.

    Raises DataFileError for a missing column, a bad id or list literal, an id absent from
    the catalog, or a file without rows.
    """
    samples = []
    for line, record in _csv_records(path, (user_field, history_field, target_field)):
        history = tuple(
            _catalog_index(catalog, item_id, path, line, history_field)
            for item_id in _parse_int_list(record[history_field], path, line, history_field)
        )
        target_id = _parse_int(record[target_field], path, line, target_field)
        target = _catalog_index(catalog, target_id, path, line, target_field)
        samples.append(Sample(user=record[user_field], history=history, target=target))
    if not samples:
        raise DataFileError(path, "the split has no rows")
    return samples


def _read_item_titles(path: Path) -> dict[int, str]:
    """MiniOneRec `item.json`: item id -> {"title": ..., ...}."""
    titles = {}
    for item_id, item in read_json_by_item_id(path).items():
        if not isinstance(item, dict) or not isinstance(item.get("title"), str):
            raise DataFileError(path, "expected an object with a string 'title'", key=str(item_id))
        titles[item_id] = item["title"]
    return titles


@dataclass
class MiniOneRecSource(RecSource):
    """MiniOneRec's public layout (SIDs and titles), e.g. ../shared/data/amazon18-minionerec.

    Expected files under `data_dir`:

        {train,valid,test}/<category>*.csv   exactly one per split
        index/<category>.index.json          item id -> SID tokens
        index/<category>.item.json           item id -> {"title": ..., ...}

    CSV columns: user_id, history_item_title, item_title, history_item_id, item_id,
    history_item_sid, item_sid. Only user_id, history_item_id and item_id are read (and
    required); titles and SIDs come from the index files, which must cover the same item
    ids. The catalog is ordered by item id and its SID collisions are resolved as described
    in `wpauc.data.codecs`.
    """

    data_dir: str
    """Directory holding train/, valid/, test/ and index/."""
    category: str
    """Category prefix of the file names, e.g. "Office_Products"."""

    def load(self) -> RecData:
        root = Path(self.data_dir)
        index_path = minionerec_index_path(root, self.category, "index")
        items_path = minionerec_index_path(root, self.category, "item")
        sids = read_sid_index(index_path)
        titles = _read_item_titles(items_path)
        for path, keys, other in ((index_path, sids, titles), (items_path, titles, sids)):
            missing = sorted(set(other) - set(keys))
            if missing:
                raise DataFileError(path, f"no entry for item id {missing[0]}", key=str(missing[0]))
        item_ids = sorted(titles)
        catalog = Catalog(
            item_ids=tuple(item_ids),
            titles=tuple(titles[item_id] for item_id in item_ids),
            sids=resolve_sid_collisions(item_ids, [sids[item_id] for item_id in item_ids]),
        )
        splits = {
            split: read_samples(_find_one(root / split, f"{self.category}*.csv"), catalog)
            for split in SPLITS
        }
        return RecData(catalog=catalog, **splits)


def _read_info_file(path: Path) -> dict[int, str]:
    """D3 info file: one `title<TAB>item_id` line per item (the title may not hold a tab)."""
    titles: dict[int, str] = {}
    with path.open(encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            title, tab, id_text = line.rpartition("\t")
            if not tab:
                raise DataFileError(path, "expected 'title<TAB>item_id'", line=line_number)
            item_id = _parse_int(id_text, path, line_number, "item_id")
            if item_id in titles:
                raise DataFileError(
                    path, f"item id {item_id} repeats", line=line_number, field="item_id"
                )
            titles[item_id] = title
    if not titles:
        raise DataFileError(path, "the info file lists no items")
    return titles


@dataclass
class D3Source(RecSource):
    """The D3 / BIGRec / ReRe layout (titles, no SIDs; use TitleCodec).

    Expected files under `data_dir` (as D3's `process.py` writes them, e.g.
    `train/Toys_and_Games_5_2014-10-2018-11.csv` and `info/Toys_and_Games_5_2014-10-2018-11.txt`):

        {train,valid,test}/<category>*.csv   exactly one per split
        info/<category>*.txt                 exactly one; lines `title<TAB>item_id`

    CSV columns: user_id, item_asins, item_asin, history_item_id, item_id,
    history_item_title, item_title, history_rating, rating, history_timestamp, timestamp
    (extra columns such as a pandas index are ignored). Only user_id, history_item_id and
    item_id are read (and required); titles come from the info file. The catalog is
    ordered by item id.
    """

    data_dir: str
    """Directory holding train/, valid/, test/ and info/."""
    category: str | None = None
    """Category prefix of the file names; None when each folder holds a single file."""

    def load(self) -> RecData:
        root = Path(self.data_dir)
        pattern = f"{self.category or ''}*"
        titles = _read_info_file(_find_one(root / "info", f"{pattern}.txt"))
        item_ids = sorted(titles)
        catalog = Catalog(
            item_ids=tuple(item_ids), titles=tuple(titles[item_id] for item_id in item_ids)
        )
        splits = {
            split: read_samples(_find_one(root / split, f"{pattern}.csv"), catalog)
            for split in SPLITS
        }
        return RecData(catalog=catalog, **splits)
