"""Records: the versioned format of ``eval`` and ``synth`` records, the append-only store, the resumable loop.

- :mod:`~fusion_dspy.records.schema`: the format (version, kinds, upgrade of older records),
  documented in ``docs/records.md``.
- :mod:`~fusion_dspy.records.store`: :class:`RecordStore`, one fsync-ed JSON line per record, ids
  from content hashes (:func:`record_id`).
- :mod:`~fusion_dspy.records.runner`: :func:`run_items`, bounded concurrency, failures retried on
  the next run.
- :mod:`~fusion_dspy.records.lock`: :func:`lock_folder`, one run per output folder.
"""

from fusion_dspy.records.lock import lock_folder
from fusion_dspy.records.runner import RunStats, failures_path, run_items
from fusion_dspy.records.schema import (
    EVAL,
    FORMAT_VERSION,
    KINDS,
    SYNTH,
    candidate_list,
    method_result,
    read_records,
    stamp,
    upgrade,
)
from fusion_dspy.records.store import RecordStore, iter_records, record_id

__all__ = [
    "EVAL",
    "FORMAT_VERSION",
    "KINDS",
    "SYNTH",
    "RecordStore",
    "RunStats",
    "candidate_list",
    "failures_path",
    "iter_records",
    "lock_folder",
    "method_result",
    "read_records",
    "record_id",
    "run_items",
    "stamp",
    "upgrade",
]
