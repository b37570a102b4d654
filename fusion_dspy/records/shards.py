"""Shards: the record files an engine running in other processes writes beside a run's records.

The Ray engine (:mod:`fusion_dspy.records.ray_runner`) writes finished examples from a worker, not
from the process that holds the records file. Each writer appends to its own shard,
``OUT/shards/<stem>-<time>-<uuid>.jsonl`` (``stem``: ``synth`` or ``records``), in the record
format: one fsync-ed JSON line per example, ids unique over the shards and the records file. The
run's driver merges the shards into the records file (``OUT/synth.jsonl``, ``OUT/records.jsonl``)
when it ends and, under the folder's lock, when the next run of either engine starts (a run whose
driver was killed leaves its shards; nothing in them is lost). Merging skips ids the file already
holds, so a shard written twice (a retried write) still gives one record per id. Tools that read
the records file (summaries, ``analyze``, ``datasets``) see what an in-process run writes.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from fusion_dspy.records.store import RecordStore, iter_records

logger = logging.getLogger(__name__)

SHARDS = "shards"


def shard_folder(store_path: str | os.PathLike[str]) -> Path:
    """Where the shards of the records file ``store_path`` are written."""
    return Path(store_path).parent / SHARDS


def shard_paths(store_path: str | os.PathLike[str]) -> list[Path]:
    """The shards of ``store_path`` (oldest first), failure logs excluded."""
    stem = Path(store_path).stem
    folder = shard_folder(store_path)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"{stem}-*.jsonl") if not p.name.endswith(".failed.jsonl"))


def shard_ids(store_path: str | os.PathLike[str]) -> set[str]:
    """The ids held by the shards of ``store_path`` (a half-written last line is not counted)."""
    ids: set[str] = set()
    for path in shard_paths(store_path):
        ids.update(rec["id"] for rec in iter_records(path))
    return ids


class ShardWriter:
    """One new shard of ``store_path``; skips ids already in the records file or any shard.

    A writer restarted after its process died (Ray restarts the actor and retries its batch) reads
    the shards written so far, so the batch it is given again adds no second copy of a record.
    """

    def __init__(self, store_path: str | os.PathLike[str]):
        self.store_path = Path(store_path)
        folder = shard_folder(store_path)
        folder.mkdir(parents=True, exist_ok=True)
        self._known = shard_ids(store_path) | {rec["id"] for rec in iter_records(store_path)}
        name = f"{self.store_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.jsonl"
        self.store = RecordStore(folder / name)

    @property
    def path(self) -> Path:
        return self.store.path

    def write(self, record: dict[str, Any]) -> bool:
        """Append ``record`` durably; False (nothing written) if its id is already stored somewhere."""
        if record["id"] in self._known:
            return False
        self.store.append(record)
        self._known.add(record["id"])
        return True

    def stored(self, rid: str) -> dict[str, Any] | None:
        """The record of ``rid`` a shard already holds (a killed writer's, before its batch was retried), else None."""
        for path in shard_paths(self.store_path):
            for rec in iter_records(path):
                if rec["id"] == rid:
                    return rec
        return None


def merge_shards(store_path: str | os.PathLike[str]) -> int:
    """Move the records of every shard of ``store_path`` into it (skipping ids it has); returns how many were added.

    Call it only while holding the folder's lock (:func:`~fusion_dspy.records.lock.lock_folder`)
    with no writer running. A shard is deleted once its records are in the file and on disk.
    """
    paths = shard_paths(store_path)
    if not paths:
        return 0
    store = RecordStore(store_path, fsync=False)
    added = 0
    for path in paths:
        RecordStore(path, fsync=False)  # cuts a half-written last line of a killed writer
        for rec in iter_records(path):
            added += store.append(rec)
    _fsync(store.path)
    for path in paths:
        path.unlink()
    logger.info("merged %d records from %d shard(s) into %s", added, len(paths), store.path)
    return added


def _fsync(path: Path) -> None:
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
