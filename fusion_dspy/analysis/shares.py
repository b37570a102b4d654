"""Contribution, position and Best-of-N shares over a records file, streamed (memory stays flat).

Matching runs in worker processes (the CPU-bound part); records are read one line at a time.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from fusion_dspy.analysis.attribution import MATCHER_BACKEND, RESERVED_LABELS, char_counts
from fusion_dspy.analysis.views import RecordView, iter_views, record_view

logger = logging.getLogger(__name__)

@dataclass
class _Tally:
    records: int = 0  # records in which this key occurred
    chars: int = 0
    share_sum: float = 0.0


@dataclass
class Aggregate:
    """Running totals over records; constant memory in the number of records.

    ``mean_share`` of a source averages its per-record share over all analysed records (0 where the
    source is absent), so the mean shares of all labels sum to 1; ``char_share`` is its characters
    over all fused characters (long answers weigh more).
    """

    records: int = 0
    analysed: int = 0
    fused_chars: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    labels: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    positioned_records: int = 0
    positioned_chars: int = 0
    positions: dict[int, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    bon_records: int = 0
    bon_sources: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bon_positioned: int = 0
    bon_positions: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, view: RecordView, counts: Mapping[str, int] | None) -> None:
        """Fold in one record: its view and (when its fusion was analysed) its character counts."""
        self.records += 1
        if view.selected is not None:
            self.bon_records += 1
            self.bon_sources[view.selected] += 1
            if view.selected_position is not None:
                self.bon_positioned += 1
                self.bon_positions[view.selected_position] += 1
        if counts is None:
            self.skipped[view.skip or "unknown"] += 1
            return
        n = sum(counts.values())
        self.analysed += 1
        self.fused_chars += n
        for label in RESERVED_LABELS:
            self.labels.setdefault(label, _Tally())  # always reported
        for label, count in counts.items():
            t = self.labels[label]
            t.records += 1 if label not in RESERVED_LABELS or count else 0
            t.chars += count
            t.share_sum += count / n
        if view.positions and all(name in view.positions for name in view.sources):
            self.positioned_records += 1
            self.positioned_chars += n
            for name, pos in view.positions.items():
                count = counts.get(name, 0)
                t = self.positions[pos]
                t.records += 1
                t.chars += count
                t.share_sum += count / n

    def source_rows(self) -> list[dict[str, Any]]:
        """Per label (sources by share, then multiple and unmatched): records, mean_share, char_share.

        ``records`` counts the records in which a source was shown (for ``multiple`` and ``unmatched``:
        the records that have any such characters).
        """

        def row(label: str, t: _Tally) -> dict[str, Any]:
            return {
                "name": label,
                "records": t.records,
                "mean_share": t.share_sum / self.analysed if self.analysed else 0.0,
                "char_share": t.chars / self.fused_chars if self.fused_chars else 0.0,
            }

        srcs = [row(k, t) for k, t in self.labels.items() if k not in RESERVED_LABELS]
        srcs.sort(key=lambda r: (-r["char_share"], r["name"]))
        return srcs + [row(k, self.labels[k]) for k in RESERVED_LABELS]

    def position_rows(self) -> list[dict[str, Any]]:
        """Per shown position (1 = shown first): mean share over records that had it, char share."""
        return [
            {
                "position": p,
                "records": t.records,
                "mean_share": t.share_sum / t.records if t.records else 0.0,
                "char_share": t.chars / self.positioned_chars if self.positioned_chars else 0.0,
            }
            for p, t in sorted(self.positions.items())
        ]

    def bon_source_rows(self) -> list[dict[str, Any]]:
        rows = [{"name": k, "selected": v, "share": v / self.bon_records} for k, v in self.bon_sources.items()]
        return sorted(rows, key=lambda r: (-r["share"], r["name"]))

    def bon_position_rows(self) -> list[dict[str, Any]]:
        return [
            {"position": p, "selected": v, "share": v / self.bon_positioned}
            for p, v in sorted(self.bon_positions.items())
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "analysed": self.analysed,
            "skipped": dict(self.skipped),
            "fused_chars": self.fused_chars,
            "sources": self.source_rows(),
            "positions": {"records": self.positioned_records, "rows": self.position_rows()},
            "best_of_n": {
                "records": self.bon_records,
                "sources": self.bon_source_rows(),
                "positions": {"records": self.bon_positioned, "rows": self.bon_position_rows()},
            },
        }


def position_shares(records: Iterable[Mapping[str, Any]], *, field_name: str | None = None) -> dict[int, float]:
    """Share of fused characters drawn from the candidate shown at position 1, 2, ... (character-weighted).

    Records without a shown order are left out. Shares of positions plus multiple and unmatched
    characters sum to 1 over those records.
    """
    agg = _aggregate_serial(records, field_name)
    return {r["position"]: r["char_share"] for r in agg.position_rows()}


def selection_shares(
    records: Iterable[Mapping[str, Any]], *, field_name: str | None = None
) -> dict[str, dict[Any, float]]:
    """Best-of-N selection shares, ``{"sources": {name: share}, "positions": {position: share}}``."""
    agg = Aggregate()
    for n, rec in enumerate(records, 1):
        view = record_view(rec, field_name=field_name, where=f"record {n}")
        if view is not None:
            agg.add(view, None)
    return {
        "sources": {r["name"]: r["share"] for r in agg.bon_source_rows()},
        "positions": {r["position"]: r["share"] for r in agg.bon_position_rows()},
    }


def aggregate_contributions(records: Iterable[Mapping[str, Any]], *, field_name: str | None = None) -> Aggregate:
    """Contributions over many records in this process (see :func:`analyze_records` for files)."""
    return _aggregate_serial(records, field_name)


def _aggregate_serial(records: Iterable[Mapping[str, Any]], field_name: str | None) -> Aggregate:
    agg = Aggregate()
    for n, rec in enumerate(records, 1):
        view = record_view(rec, field_name=field_name, where=f"record {n}")
        if view is not None:
            agg.add(view, _counts_of(view))
    return agg


def _counts_of(view: RecordView) -> dict[str, int] | None:
    if view.fused is None:
        return None
    return char_counts(view.fused, view.sources)


def _counts_chunk(pairs: list[tuple[str, dict[str, str]] | None]) -> list[dict[str, int] | None]:
    """Worker: character counts for a chunk of (fused, sources) pairs (None passes through)."""
    return [None if p is None else char_counts(p[0], p[1]) for p in pairs]


def _map_counts(
    views: Iterator[RecordView], workers: int, chunksize: int
) -> Iterator[tuple[RecordView, dict[str, int] | None]]:
    """Counts of each view, in order, on ``workers`` processes with a bounded number of chunks in flight.

    ``Pool.imap`` would read the whole input ahead of the workers (its feeder thread has no back
    pressure), so memory would grow with the file; here at most ``2 * workers`` chunks are pending.
    """
    if workers <= 1:
        for view in views:
            yield view, _counts_of(view)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")  # safe with threads (tqdm) in the parent
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        pending: deque = deque()
        while True:
            chunk = list(islice(views, chunksize))
            if chunk:
                payload = [None if v.fused is None else (v.fused, v.sources) for v in chunk]
                pending.append((chunk, pool.submit(_counts_chunk, payload)))
            if pending and (not chunk or len(pending) >= 2 * workers):
                done_views, fut = pending.popleft()
                yield from zip(done_views, fut.result(), strict=True)
            if not chunk and not pending:
                return


@dataclass
class Analysis:
    """The result of :func:`analyze_records`: aggregates plus one example record for display."""

    path: str
    field: str | None
    aggregate: Aggregate
    example: RecordView | None
    backend: str = MATCHER_BACKEND
    seconds: float = 0.0


def analyze_records(
    path: str | os.PathLike[str],
    *,
    field_name: str | None = None,
    workers: int | None = None,
    limit: int | None = None,
    chunksize: int = 8,
    example_id: str | None = None,
    progress: bool | None = None,
) -> Analysis:
    """Contributions, position shares and Best-of-N shares over a records file, streamed.

    Args:
        path: a ``.jsonl`` records file written by ``synth`` or ``eval``.
        field_name: the output field to analyse (default: the only one, else ``answer``/``response``).
        workers: processes for matching (default: the CPU count; 1 = in this process).
        limit: analyse only the first ``limit`` records.
        chunksize: records sent to a worker at once.
        example_id: the record to keep as the example (default: the first analysed one).
        progress: show a tqdm bar (None: only on a terminal).

    Raises:
        DataError: the file is missing, a line is not JSON (with file:line), or a record is malformed.
    """
    import time

    from tqdm import tqdm

    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    total = _count_lines(path)
    if limit is not None:
        total = min(total, limit) if total is not None else limit
    start = time.perf_counter()
    agg = Aggregate()
    example: RecordView | None = None
    chosen_field: str | None = None
    views = iter_views(path, field_name=field_name, limit=limit)
    bar = tqdm(total=total, unit="rec", desc="analyze", disable=None if progress is None else not progress)
    try:
        for view, counts in _map_counts(views, workers, chunksize):
            agg.add(view, counts)
            chosen_field = chosen_field or view.field
            if counts is not None and example is None and (example_id is None or view.id == example_id):
                example = view
            bar.update(1)
    finally:
        bar.close()
    if example_id is not None and example is None:
        logger.warning("%s: no analysed record has id %r; the report has no example", path, example_id)
    return Analysis(str(path), chosen_field, agg, example, seconds=time.perf_counter() - start)


def _count_lines(path: str | os.PathLike[str]) -> int | None:
    """Number of lines (for the progress bar); reads in blocks, never the whole file."""
    try:
        with open(path, "rb") as fh:
            return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
    except OSError:
        return None

