"""Reading data files with errors that name the file and the line, field or key; where the
MiniOneRec layout keeps its index tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal


class DataFileError(ValueError):
    """Bad content in a data file; the message names the file and the line, field or key."""

    def __init__(
        self,
        path: str | Path,
        problem: str,
        *,
        line: int | None = None,
        field: str | None = None,
        key: str | None = None,
    ) -> None:
        self.path, self.line, self.field, self.key = Path(path), line, field, key
        where = [str(path)]
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        if key is not None:
            where.append(f"key {key!r}")
        super().__init__(f"{', '.join(where)}: {problem}")


def read_text(path: str | Path) -> str:
    """The whole of a UTF-8 text file, without the byte-order mark some editors put first.

    Raises DataFileError naming the file and line of the first byte that is not UTF-8 (the
    bare UnicodeDecodeError would name neither).
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        # Decoded as plain UTF-8 so that the error's offset counts from the file's first byte.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataFileError(
            path,
            f"byte 0x{raw[error.start]:02x} is not UTF-8; save the file as UTF-8",
            line=raw.count(b"\n", 0, error.start) + 1,
        ) from None
    return text.removeprefix("\ufeff")


def read_json_by_item_id(path: str | Path) -> dict[int, Any]:
    """A JSON object keyed by integer item ids (MiniOneRec's index/*.json files)."""
    path = Path(path)
    try:
        raw = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise DataFileError(path, f"not valid JSON: {error.msg}", line=error.lineno) from None
    if not isinstance(raw, dict):
        raise DataFileError(path, "expected a JSON object keyed by item id")
    by_item_id = {}
    for key, value in raw.items():
        try:
            by_item_id[int(key)] = value
        except ValueError:
            raise DataFileError(path, "item id is not an integer", key=key) from None
    return by_item_id


def minionerec_index_path(root: str | Path, category: str, table: Literal["index", "item"]) -> Path:
    """`<root>/index/<category>.<table>.json` of MiniOneRec's layout: `index` maps item ids
    to SID tokens, `item` to the item's title and text fields."""
    return Path(root) / "index" / f"{category}.{table}.json"
