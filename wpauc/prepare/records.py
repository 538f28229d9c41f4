"""Reading raw JSON-lines dumps (plain or gzipped) and counting their bad records.

Lines that are not JSON are tried as Python literals (``ast.literal_eval``, never ``eval``),
as in some older Amazon dumps. A :class:`BadRecordLog` counts bad records by kind with file
and line numbers; with ``strict=True`` the first one raises ``ValueError`` instead.
"""

from __future__ import annotations

import ast
import gzip
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

_GZIP_MAGIC = b"\x1f\x8b"


class BadRecordLog:
    """Counts bad input records by kind and keeps the first few as ``file:line: message``.

    Args:
        strict: raise ``ValueError`` on the first bad record instead of counting it.
        max_examples: how many messages to keep per kind for the report.
    """

    def __init__(self, strict: bool = False, max_examples: int = 5) -> None:
        self.strict = strict
        self.max_examples = max_examples
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, path: Path | str, line: int, message: str) -> None:
        """Record one bad record of ``kind`` found at ``path:line``.

        Args:
            kind: what is wrong, e.g. ``malformed_line`` (the report counts per kind).
            path: file the record is in.
            line: 1-based line number of the record.
            message: what is wrong with it, for the report and the strict-mode error.
        """
        text = f"{path}:{line}: {message}"
        if self.strict:
            raise ValueError(
                f"{text} (bad record of kind {kind!r}; drop --strict to count and skip these)"
            )
        self.counts[kind] += 1
        kept = self.examples.setdefault(kind, [])
        if len(kept) < self.max_examples:
            kept.append(text)

    @property
    def total(self) -> int:
        """Number of bad records seen."""
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        """JSON-ready summary: total, counts per kind and example messages."""
        return {
            "total": self.total,
            "counts": dict(sorted(self.counts.items())),
            "examples": self.examples,
        }


def iter_records(path: Path, log: BadRecordLog) -> Iterator[tuple[int, dict]]:
    """``(line number, record)`` for every parsable dict line of a JSON-lines file, plain
    or gzipped (detected from the content, not the name). Blank lines are skipped;
    undecodable or unparsable lines and non-dict values are logged as ``malformed_line``.

    Args:
        path: the JSON-lines file.
        log: where malformed lines go.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    with path.open("rb") as probe:
        is_gzip = probe.read(2) == _GZIP_MAGIC
    line_number = 0
    try:
        with gzip.open(path, "rb") if is_gzip else path.open("rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                record = _decode_line(raw, path, line_number, log)
                if record is not None:
                    yield line_number, record
    except (OSError, EOFError) as err:  # truncated or corrupt gzip stream
        raise ValueError(f"{path}: unreadable after line {line_number}: {err}") from err


def _decode_line(raw: bytes, path: Path, line_number: int, log: BadRecordLog) -> dict | None:
    """The record on one raw line; ``None`` for a blank line or a logged malformed one.

    Args:
        raw: the line's bytes.
        path: file the line is in (for the log).
        line_number: 1-based number of the line (for the log).
        log: where a malformed line goes.
    """
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        log.add("malformed_line", path, line_number, f"not UTF-8 ({err.reason})")
        return None
    record = _parse_line(text)
    if not isinstance(record, dict):
        log.add(
            "malformed_line",
            path,
            line_number,
            f"not a JSON object or Python dict: {text[:80].strip()!r}",
        )
        return None
    return record


def _parse_line(text: str) -> object:
    """A line as JSON, else as a Python literal; ``None`` when it is neither.

    Args:
        text: the decoded line.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
