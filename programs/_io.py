"""What every task loader shares: finding data files, the per-language limit, bad rows, unique ids."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fusion_dspy.data import BadRows
from fusion_dspy.errors import ConfigurationError, DataError

logger = logging.getLogger(__name__)


def data_files(path: str | os.PathLike[str], suffixes: Iterable[str], *, prefer_names: Iterable[str] = ()) -> list[Path]:
    """The files to read: ``path`` itself, or the matching files under a folder (recursive, sorted).

    Args:
        suffixes: accepted file endings (``.tsv``, ``.jsonl``).
        prefer_names: if some files under the folder have one of these names (``question.jsonl``),
            only those are read, so answer files stored beside questions are not taken for data.
    """
    p = Path(path)
    if not p.exists():
        raise DataError("file or folder does not exist", path=str(p))
    if p.is_file():
        return [p]
    suffixes = tuple(suffixes)
    found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(suffixes))
    preferred = [f for f in found if f.name in set(prefer_names)]
    if preferred:
        found = preferred
    if not found:
        raise DataError(f"no {' or '.join(suffixes)} files in this folder", path=str(p))
    return found


class Collector:
    """Gathers examples: at most ``limit`` per language, unique ids, bad rows raised or counted."""

    def __init__(self, *, limit: int | None, skip_bad_rows: bool, bad_rows: BadRows | None):
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ConfigurationError(f"limit must be a positive integer or None, got {limit!r}")
        self.limit = limit
        self.skip_bad_rows = skip_bad_rows
        self.bad_rows = bad_rows if bad_rows is not None else BadRows()
        self.examples: list[Any] = []
        self._per_language: Counter[str] = Counter()
        self._ids: set[str] = set()

    def full(self, language: str) -> bool:
        """Whether ``language`` already has ``limit`` examples."""
        return self.limit is not None and self._per_language[language] >= self.limit

    def bad(self, error: DataError) -> None:
        """Raise ``error``, or count it when bad rows are skipped."""
        if not self.skip_bad_rows:
            raise error
        self.bad_rows.add(error)

    def add(self, example: Any, *, path: Path, line: int) -> None:
        if example.id in self._ids:
            self.bad(DataError(f"duplicate id {example.id!r}", path=str(path), line=line))
            return
        self._ids.add(example.id)
        self._per_language[example.language] += 1
        self.examples.append(example)

    def finish(self, files: list[Path], skipped: str = "") -> list[Any]:
        """The examples; a load that yields none (and skipped no bad row on purpose) is an error."""
        if not self.examples and not (self.skip_bad_rows and self.bad_rows.count):
            where = str(files[0]) if len(files) == 1 else f"{len(files)} files"
            raise DataError(f"no usable examples{skipped}", path=where)
        logger.info("loaded %d examples (%s)", len(self.examples), dict(self._per_language))
        return self.examples
