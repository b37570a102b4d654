"""The records store shared by ``eval`` and ``synth``: append-only JSON lines keyed by content hash.

Each finished example is one line, written with a single ``write`` and ``fsync``-ed before the
example counts as done. A rerun reads the ids already present and skips them, so a run killed at any
moment (even SIGKILL) and started again finishes the rest without losing or duplicating a row. A
half-written last line (the process died inside ``write``) is cut off when the store is opened.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fusion_dspy.errors import DataError
from fusion_dspy.types import json_text

logger = logging.getLogger(__name__)


def record_id(*parts: Any) -> str:
    """A deterministic id from any JSON-serialisable parts (prompt, configuration, ...)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    # "surrogatepass": text that is not valid Unicode (a lone surrogate) still gets an id; valid text is unchanged
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:24]


class RecordStore:
    """Append-only JSONL file of records, each a mapping with a unique ``"id"``.

    Args:
        path: the ``.jsonl`` file; created (with its folder) when missing.
        fsync: flush every record to disk before :meth:`append` returns (crash safety).
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._ids: set[str] = {rec["id"] for rec in self}

    def _repair_tail(self) -> None:
        """Drop a partial last line left by a process killed while writing."""
        if not self.path.exists():
            return
        size = self.path.stat().st_size
        if size == 0:
            return
        with self.path.open("rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return
            # find the last newline; keep everything up to it
            pos = size - 1
            chunk = 65536
            keep = 0
            while pos > 0:
                start = max(0, pos - chunk)
                fh.seek(start)
                data = fh.read(pos - start)
                idx = data.rfind(b"\n")
                if idx >= 0:
                    keep = start + idx + 1
                    break
                pos = start
            logger.warning("%s: dropping a half-written last line (%d bytes)", self.path, size - keep)
            fh.truncate(keep)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Stream the records (one line at a time, never the whole file in memory)."""
        yield from iter_records(self.path)

    def __contains__(self, rid: str) -> bool:
        return rid in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self._ids)

    def append(self, record: Mapping[str, Any]) -> bool:
        """Write one record durably. Returns False (and writes nothing) if its id is already stored."""
        rid = record.get("id")
        if not isinstance(rid, str) or not rid:
            raise ValueError("a record needs a non-empty string 'id'")
        if rid in self._ids:
            return False
        try:
            line = (json_text(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")  # NaN/Infinity -> null, listed
        except UnicodeEncodeError as exc:  # a lone surrogate (from data or a model): no valid UTF-8 line can hold it
            raise DataError(f"record {rid} holds text that is not valid Unicode (a lone surrogate at character {exc.start} "
                            "of the record); it is not written") from None
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        self._ids.add(rid)
        return True


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Stream records from a JSONL file written by :class:`RecordStore` (missing file: nothing)."""
    p = Path(path)
    if not p.exists():
        return
    with p.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if not line.endswith("\n"):
                return  # a half-written tail; RecordStore cuts it off on open
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"not a JSON record ({exc.msg})", path=str(p), line=lineno) from None
            if not isinstance(rec, dict) or "id" not in rec:
                raise DataError("a record must be a JSON object with an 'id'", path=str(p), line=lineno)
            yield rec
