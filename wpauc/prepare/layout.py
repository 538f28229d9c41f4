"""Writing prepared data in the MiniOneRec layout.

``{train,valid,test}/<Category>_<k>_<start>-<end>.csv`` (columns :data:`CSV_COLUMNS`, list
columns written as Python's ``str`` of the list, as MiniOneRec does),
``index/<Category>.item.json`` (item id -> title, description, brand, categories) and
``index/<Category>.index.json`` (item id -> SID tokens).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from wpauc.data.catalog import SPLITS
from wpauc.data.codecs import read_sid_index
from wpauc.data.files import minionerec_index_path
from wpauc.prepare.amazon import ItemMeta, PreparedData
from wpauc.prepare.samples import TimedSample

#: Column order of MiniOneRec's CSV files.
CSV_COLUMNS = (
    "user_id",
    "history_item_title",
    "item_title",
    "history_item_id",
    "item_id",
    "history_item_sid",
    "item_sid",
)


def split_file_stem(category: str, k_core: int, start: str, end: str) -> str:
    """MiniOneRec's CSV name without extension, e.g. ``Office_Products_5_2016-10-2018-11``.

    Args:
        category: category name.
        k_core: the k of the k-core filter.
        start: first month of the time window, ``YYYY-MM``.
        end: month that ends the time window, ``YYYY-MM``.
    """
    return f"{category}_{k_core}_{start}-{end}"


def _python_list(values: Sequence) -> str:
    """A list column as MiniOneRec writes it: Python's ``str`` of the list.

    Args:
        values: the column's values for one row.
    """
    return str(list(values))


def write_split_csv(
    path: Path,
    samples: Sequence[TimedSample],
    titles: Sequence[str],
    sids: Sequence[str],
) -> None:
    """One MiniOneRec CSV (columns :data:`CSV_COLUMNS`, minimal quoting, ``\\n`` line ends).

    Args:
        path: file to write.
        samples: rows to write.
        titles: item title per item id.
        sids: concatenated SID tokens per item id (e.g. ``<a_1><b_2><c_3>``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for sample in samples:
            writer.writerow(
                (
                    f"A{sample.user}",
                    _python_list(titles[item] for item in sample.history),
                    titles[sample.target],
                    _python_list(sample.history),
                    sample.target,
                    _python_list(sids[item] for item in sample.history),
                    sids[sample.target],
                )
            )


def write_item_json(path: Path, items: Sequence[ItemMeta]) -> None:
    """``index/<Category>.item.json``: item id -> {title, description, brand, categories}.

    Args:
        path: file to write.
        items: item table in id order.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        json.dump(
            {str(index): item.to_dict() for index, item in enumerate(items)}, handle, indent=2
        )


def write_sid_index(path: Path, tokens: Sequence[Sequence[str]]) -> None:
    """``index/<Category>.index.json``: item id -> list of SID tokens.

    Args:
        path: file to write.
        tokens: SID tokens per item id.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        json.dump({str(index): list(row) for index, row in enumerate(tokens)}, handle)


def load_sid_tokens(path: Path, num_items: int) -> list[list[str]]:
    """SID tokens per item id 0..num_items-1 from an ``index.json`` (read and validated by
    :func:`wpauc.data.codecs.read_sid_index`).

    Args:
        path: the ``index.json`` file.
        num_items: number of items in the item table it must match.

    Raises:
        ValueError: the file's ids are not exactly ``0..num_items-1``.
    """
    index = read_sid_index(path)
    if set(index) != set(range(num_items)):
        stray = sorted(set(index) ^ set(range(num_items)))[:5]
        raise ValueError(
            f"{path}: SID index must cover item ids 0..{num_items - 1} exactly "
            f"(has {len(index)} ids; mismatched ids include {stray}); rebuild it for this item "
            "table (wpauc prepare-amazon --items_only, then wpauc build-sids)"
        )
    return [list(index[item]) for item in range(num_items)]


def write_minionerec_layout(
    output_dir: Path,
    category: str,
    data: PreparedData,
    sid_tokens: Sequence[Sequence[str]] | None,
    file_stem: str,
) -> dict[str, Path]:
    """Write ``index/<Category>.item.json`` and, given SID tokens, ``index.json`` and the
    three CSVs ``{train,valid,test}/<file_stem>.csv``. Returns the written paths by role.

    Args:
        output_dir: folder that receives the layout.
        category: category name used in the index file names.
        data: what :func:`wpauc.prepare.amazon.prepare_amazon` produced.
        sid_tokens: SID tokens per item id, or ``None`` to write the item table only.
        file_stem: CSV name without extension (:func:`split_file_stem`).
    """
    output_dir = Path(output_dir)
    written = {"item_json": minionerec_index_path(output_dir, category, "item")}
    write_item_json(written["item_json"], data.items)
    if sid_tokens is None:
        return written
    if len(sid_tokens) != len(data.items):
        raise ValueError(
            f"got SIDs for {len(sid_tokens)} items but the item table has {len(data.items)}"
        )
    written["index_json"] = minionerec_index_path(output_dir, category, "index")
    write_sid_index(written["index_json"], sid_tokens)
    titles = [item.title for item in data.items]
    sids = ["".join(row) for row in sid_tokens]
    for name in SPLITS:
        written[name] = output_dir / name / f"{file_stem}.csv"
        write_split_csv(written[name], data.splits[name], titles, sids)
    return written
