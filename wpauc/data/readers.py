"""Data sources: each turns files (or a generator) into a `RecData` via `load()`.

Sources are chosen by `class_path` in YAML, e.g.

    source:
      class_path: wpauc.data.MiniOneRecSource
      init_args: {data_dir: data/amazon18-minionerec, category: Office_Products}

Files are read as UTF-8 (a leading byte-order mark is dropped) and blank lines are skipped.
List columns are Python list literals, parsed with `ast.literal_eval` (never `eval`) and
type-checked. Every problem with a file raises `DataFileError` (a ValueError) whose
message names the file, the line (1-based, the header is line 1; a record spanning
several physical lines is named by its first) and the field.

Repeated rows are a warning, or with the source's `strict: true` an error: a row equal to an
earlier row of its split file (same user, history and target), and a valid or test row equal
to a train row (the evaluation would score a sample the model was trained on). The warning
names each file with its count and first repeated line.
"""

from __future__ import annotations

import ast
import csv
import io
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wpauc.data.catalog import SPLITS, Catalog, RecData, Sample
from wpauc.data.codecs import read_sid_index, resolve_sid_collisions
from wpauc.data.files import (
    DataFileError,
    minionerec_index_path,
    read_json_by_item_id,
    read_text,
)


class RecSource(ABC):
    """Where a `RecData` comes from."""

    @abstractmethod
    def load(self) -> RecData:
        """Read (or generate) the catalog and the train / valid / test samples."""


def _data_root(source: MiniOneRecSource | D3Source) -> Path:
    """The source's `data_dir` as a path; FileNotFoundError naming the config field when it
    is not a folder (the bare error of the first file read would not say which setting)."""
    root = Path(source.data_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{type(source).__name__}: data folder {source.data_dir!r} does not exist (resolved: "
            f"{root.resolve()}); set data.source.init_args.data_dir to the folder holding "
            "train/, valid/ and test/ (a relative path starts at the working directory)"
        )
    return root


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
    """(first line number, field -> text) of every record, after checking the header; blank
    lines (e.g. an editor's trailing one) are skipped."""
    # newline="" as the csv module asks, so that newlines inside quoted fields stay intact.
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    header = next(reader, None)
    if header is None:
        raise DataFileError(path, "the file is empty (no header)", line=1)
    for field in required:
        if field not in header:
            raise DataFileError(path, f"missing column; header is {header}", line=1, field=field)
    positions = {field: header.index(field) for field in required}
    first_line = reader.line_num + 1
    for record in reader:
        if record:  # the csv module gives [] for a blank line
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


def read_split_rows(
    path: Path,
    catalog: Catalog,
    user_field: str = "user_id",
    history_field: str = "history_item_id",
    target_field: str = "item_id",
) -> list[tuple[int, Sample]]:
    """(line, sample) of every row of one split CSV; item ids are mapped to catalog indices.

    Raises DataFileError for a missing column, a bad id or list literal, an id absent from
    the catalog, or a file without rows.
    """
    rows = []
    for line, record in _csv_records(path, (user_field, history_field, target_field)):
        history = tuple(
            _catalog_index(catalog, item_id, path, line, history_field)
            for item_id in _parse_int_list(record[history_field], path, line, history_field)
        )
        target_id = _parse_int(record[target_field], path, line, target_field)
        target = _catalog_index(catalog, target_id, path, line, target_field)
        rows.append((line, Sample(user=record[user_field], history=history, target=target)))
    if not rows:
        raise DataFileError(path, "the split has no rows")
    return rows


def _repeated_rows(
    paths: dict[str, Path], rows: dict[str, list[tuple[int, Sample]]]
) -> list[DataFileError]:
    """One error per split file with rows equal to an earlier row of the file, and one per
    valid/test file with rows equal to a train row; each names the count and the first."""
    train_line_of: dict[Sample, int] = {}
    for line, sample in rows["train"]:
        train_line_of.setdefault(sample, line)
    problems = []
    for split in SPLITS:
        first_line_of: dict[Sample, int] = {}
        repeats = []
        for line, sample in rows[split]:
            if sample in first_line_of:
                repeats.append((line, first_line_of[sample]))
            else:
                first_line_of[sample] = line
        if repeats:
            line, earlier = repeats[0]
            problems.append(
                DataFileError(
                    paths[split],
                    f"{len(repeats)} row(s) repeat an earlier row of the file (the first "
                    f"repeats line {earlier})",
                    line=line,
                )
            )
        if split == "train":
            continue
        in_train = [
            (line, train_line_of[sample]) for line, sample in rows[split] if sample in train_line_of
        ]
        if in_train:
            line, train_line = in_train[0]
            problems.append(
                DataFileError(
                    paths[split],
                    f"{len(in_train)} {split} row(s) are also train rows of {paths['train']} "
                    f"(the first is its line {train_line})",
                    line=line,
                )
            )
    return problems


def _read_splits(
    root: Path, pattern: str, catalog: Catalog, strict: bool
) -> dict[str, list[Sample]]:
    """Split name -> samples of `<root>/<split>/<pattern>`, after the repeated-row check (a
    warning, or with `strict` the first problem as a DataFileError)."""
    paths = {split: _find_one(root / split, pattern) for split in SPLITS}
    rows = {split: read_split_rows(path, catalog) for split, path in paths.items()}
    problems = _repeated_rows(paths, rows)
    if problems and strict:
        raise problems[0]
    if problems:
        warnings.warn(
            "repeated rows (set data.source.init_args.strict: true to fail instead):\n"
            + "\n".join(str(problem) for problem in problems),
            stacklevel=3,
        )
    return {split: [sample for _, sample in split_rows] for split, split_rows in rows.items()}


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
    """MiniOneRec's public layout (SIDs and titles), e.g. data/amazon18-minionerec (docs/data.md).

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
    strict: bool = False
    """Fail on repeated rows instead of warning (see `wpauc.data.readers`)."""

    def load(self) -> RecData:
        root = _data_root(self)
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
        splits = _read_splits(root, f"{self.category}*.csv", catalog, self.strict)
        return RecData(catalog=catalog, **splits)


def _read_info_file(path: Path) -> dict[int, str]:
    """D3 info file: one `title<TAB>item_id` line per item; the title must not be blank or
    hold a tab (a second tab means another layout, or a title that would be misread)."""
    titles: dict[int, str] = {}
    # newline=None: universal newlines, as open() reads text, so every line ends in "\n".
    lines = io.StringIO(read_text(path), newline=None)
    for line_number, line in enumerate(lines, start=1):
        line = line.rstrip("\n")
        if not line:
            continue
        title, tab, id_text = line.rpartition("\t")
        if not tab:
            raise DataFileError(path, "expected 'title<TAB>item_id'", line=line_number)
        if "\t" in title:
            raise DataFileError(
                path,
                f"the title {title!r} holds a tab; lines must be 'title<TAB>item_id' (MiniOneRec's "
                "three-column info files are read by MiniOneRecSource from index/ instead)",
                line=line_number,
                field="title",
            )
        if not title.strip():
            raise DataFileError(path, "the title is empty", line=line_number, field="title")
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
    strict: bool = False
    """Fail on repeated rows instead of warning (see `wpauc.data.readers`)."""

    def load(self) -> RecData:
        root = _data_root(self)
        pattern = f"{self.category or ''}*"
        titles = _read_info_file(_find_one(root / "info", f"{pattern}.txt"))
        item_ids = sorted(titles)
        catalog = Catalog(
            item_ids=tuple(item_ids), titles=tuple(titles[item_id] for item_id in item_ids)
        )
        splits = _read_splits(root, f"{pattern}.csv", catalog, self.strict)
        return RecData(catalog=catalog, **splits)
