"""Reading user data files with errors that name the file and line.

Every loader (task data, synth prompts) goes through :func:`read_jsonl` or :func:`read_rows`, so a
malformed row always gives the same kind of error (:class:`~fusion_dspy.errors.DataError` with path
and line), or, with ``skip_bad_rows``, is counted and skipped.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion_dspy.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class BadRows:
    """Rows skipped because they were malformed (with ``skip_bad_rows=True``)."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, error: DataError) -> None:
        self.count += 1
        if len(self.examples) < 20:
            self.examples.append(str(error))
        logger.warning("skipping bad row: %s", error)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError("file does not exist", path=str(path))
    if path.is_dir():
        raise DataError("is a folder, expected a file", path=str(path))
    if path.stat().st_size == 0:
        raise DataError("file is empty", path=str(path))


def read_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each non-blank line; non-UTF-8 bytes raise :class:`DataError`.

    Lines are split on ``\\n`` only (some data holds other Unicode line separators inside rows), and
    decoded one by one so an error names the exact line. A byte-order mark on line 1 is dropped.
    """
    p = Path(path)
    _check_file(p)
    with p.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"not valid UTF-8 ({exc.reason} at byte {exc.start} of the line)", path=str(p), line=lineno) from None
            line = line.rstrip("\r\n")
            if line.strip():
                yield lineno, line


def read_jsonl(
    path: str | os.PathLike[str],
    *,
    required: dict[str, type | tuple[type, ...]] | None = None,
    skip_bad_rows: bool = False,
    bad_rows: BadRows | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` for each JSON object in a JSONL file.

    Args:
        required: field name -> accepted type(s); a row missing a field or with the wrong type is bad.
        skip_bad_rows: count bad rows in ``bad_rows`` and go on instead of raising.
    """
    p = Path(path)
    any_row = False
    for lineno, line in read_lines(p):
        try:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"bad JSON ({exc.msg} at column {exc.colno})", path=str(p), line=lineno) from None
            if not isinstance(row, dict):
                raise DataError(f"expected a JSON object, got {type(row).__name__}", path=str(p), line=lineno)
            if _SURROGATE_ESCAPE.search(line):
                check_text(row, path=str(p), line=lineno)
            check_fields(row, required or {}, path=str(p), line=lineno)
        except DataError as err:
            if not skip_bad_rows:
                raise
            (bad_rows if bad_rows is not None else BadRows()).add(err)
            continue
        any_row = True
        yield lineno, row
    if not any_row and not skip_bad_rows:
        raise DataError("no rows", path=str(p))


# A \uD800-\uDFFF escape: JSON allows it, but alone (not in a pair) it is no character, and UTF-8 cannot encode it.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abAB]|\\u[dD][c-fC-F]")


def check_text(value: Any, *, path: str, line: int, where: str = "") -> None:
    """Raise :class:`DataError` if a string in ``value`` (keys too) is not valid Unicode (a lone surrogate)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DataError(
                f"{'field ' + repr(where) + ' ' if where else ''}holds text that is not valid Unicode "
                f"(a lone surrogate {value[exc.start]!r} at character {exc.start})",
                path=path, line=line,
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, path=path, line=line, where=where)
            check_text(item, path=path, line=line, where=f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_text(item, path=path, line=line, where=f"{where}[{i}]")


def check_fields(row: dict[str, Any], required: dict[str, type | tuple[type, ...]], *, path: str, line: int) -> None:
    """Raise :class:`DataError` if a required field is missing or has the wrong type."""
    for name, types in required.items():
        if name not in row or row[name] is None:
            raise DataError(f"missing field {name!r}", path=path, line=line)
        if not isinstance(row[name], types):
            want = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
            raise DataError(f"field {name!r} should be {want}, got {type(row[name]).__name__}", path=path, line=line)


def read_rows(
    path: str | os.PathLike[str],
    parse: Callable[[int, str], Any],
    *,
    skip_bad_rows: bool = False,
    bad_rows: BadRows | None = None,
) -> Iterator[Any]:
    """Yield ``parse(line_number, line)`` for each line of a text file (TSV and such).

    ``parse`` raises :class:`DataError` (or ValueError, turned into one) for a bad line.
    """
    p = Path(path)
    for lineno, line in read_lines(p):
        try:
            try:
                yield parse(lineno, line)
            except DataError:
                raise
            except (ValueError, IndexError, KeyError, TypeError) as exc:
                raise DataError(str(exc), path=str(p), line=lineno) from None
        except DataError as err:
            if not skip_bad_rows:
                raise
            (bad_rows if bad_rows is not None else BadRows()).add(err)
