"""Where fused text comes from: character attribution to sources, position bias, Best-of-N shares.

The procedure is the paper's (appendix F): match the fused text against each source with
``SequenceMatcher(None, fused, source, autojunk=False).get_matching_blocks()``; every character of
the fused text goes to the source whose covering block is longest; equal longest blocks from
different sources make it ``"multiple"``; a character no block covers is ``"unmatched"``.

Matching uses ``cydifflib`` when it is installed (the same algorithm compiled, difflib-identical
blocks, an order of magnitude faster) and the standard library's ``difflib`` otherwise.

Records of ``eval`` and ``synth`` share one format (``docs/records.md``); each is read one line at a
time and brought to the current format version (:func:`fusion_dspy.records.upgrade`), so
:func:`analyze_records` keeps memory flat however many records a file holds.
"""

from __future__ import annotations

import difflib
import html
import json
import logging
import os
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

from fusion_dspy.aggregate.registry import BON, FUSION
from fusion_dspy.errors import DataError
from fusion_dspy.records.schema import method_result, upgrade

logger = logging.getLogger(__name__)

MULTIPLE = "multiple"
UNMATCHED = "unmatched"
RESERVED_LABELS = (MULTIPLE, UNMATCHED)

#: ``(fused, source) -> [(i, j, size), ...]`` as ``SequenceMatcher.get_matching_blocks`` returns it.
BlockFinder = Callable[[str, str], Iterable[tuple[int, int, int]]]

try:  # pragma: no branch - which one depends on the environment
    import cydifflib as _fast_difflib

    _MATCHER = _fast_difflib.SequenceMatcher
    MATCHER_BACKEND = "cydifflib"
except ImportError:  # pragma: no cover - cydifflib is a declared dependency
    _MATCHER = difflib.SequenceMatcher
    MATCHER_BACKEND = "difflib"


def matching_blocks(fused: str, source: str) -> list[tuple[int, int, int]]:
    """Matching blocks of ``fused`` against ``source`` (cydifflib when available, else difflib)."""
    return _MATCHER(None, fused, source, autojunk=False).get_matching_blocks()


def stdlib_matching_blocks(fused: str, source: str) -> list[tuple[int, int, int]]:
    """The same blocks from the standard library's difflib (the reference; slower)."""
    return difflib.SequenceMatcher(None, fused, source, autojunk=False).get_matching_blocks()


def _check_inputs(fused: str, sources: Mapping[str, str]) -> None:
    if not isinstance(fused, str):
        raise TypeError(f"fused must be a str, not {type(fused).__name__}")
    if not fused:
        raise ValueError("the fused text is empty: there is nothing to attribute")
    for name, text in sources.items():
        if not isinstance(name, str):
            raise TypeError(f"source names must be str, not {type(name).__name__} ({name!r})")
        if name in RESERVED_LABELS:
            raise ValueError(f"a source may not be called {name!r}: that name is reserved for the result's labels")
        if not isinstance(text, str):
            raise TypeError(f"source {name!r} must be a str, not {type(text).__name__}")


def label_runs(
    fused: str, sources: Mapping[str, str], *, blocks: BlockFinder | None = None
) -> list[tuple[int, int, str]]:
    """Label every character of ``fused``, as maximal runs ``(start, end, label)`` covering it.

    The one implementation behind :func:`contributions` and :func:`attribute`. Instead of a
    per-character loop it sweeps over block boundaries: between two consecutive boundaries the set of
    covering blocks (at most one per source, since one source's blocks never overlap in ``fused``) is
    constant, so each stretch is labelled once.

    Args:
        fused: the fused text (non-empty).
        sources: source name -> source text. Names may not be ``"multiple"`` or ``"unmatched"``.
        blocks: how to find matching blocks; default :func:`matching_blocks`.

    Raises:
        ValueError: ``fused`` is empty, or a source is named like a reserved label.
    """
    _check_inputs(fused, sources)
    find = blocks or matching_blocks
    n = len(fused)
    starts: dict[int, list[tuple[str, int]]] = defaultdict(list)
    ends: dict[int, list[str]] = defaultdict(list)
    bounds = {0, n}
    for name, text in sources.items():
        for i, _j, size in find(fused, text):
            if size <= 0:  # the (len(a), len(b), 0) sentinel
                continue
            starts[i].append((name, size))
            ends[i + size].append(name)
            bounds.add(i)
            bounds.add(i + size)

    runs: list[tuple[int, int, str]] = []
    active: dict[str, int] = {}  # source -> size of its block covering the current stretch
    prev: str | None = None
    for lo, hi in pairwise(sorted(bounds)):
        for name in ends.get(lo, ()):
            del active[name]
        for name, size in starts.get(lo, ()):
            active[name] = size
        if not active:
            label = UNMATCHED
        elif len(active) == 1:
            label = next(iter(active))
        else:
            best = max(active.values())
            tied = [name for name, size in active.items() if size == best]
            label = tied[0] if len(tied) == 1 else MULTIPLE
        if label == prev:
            runs[-1] = (runs[-1][0], hi, label)
        else:
            runs.append((lo, hi, label))
            prev = label
    return runs


def char_counts(fused: str, sources: Mapping[str, str], *, blocks: BlockFinder | None = None) -> dict[str, int]:
    """Characters of ``fused`` per label: every source name plus ``"multiple"`` and ``"unmatched"``."""
    counts = dict.fromkeys([*sources, MULTIPLE, UNMATCHED], 0)
    for lo, hi, label in label_runs(fused, sources, blocks=blocks):
        counts[label] += hi - lo
    return counts


def contributions(fused: str, sources: Mapping[str, str]) -> dict[str, float]:
    """Share of the fused text's characters drawn from each source (appendix F of the paper).

    Returns:
        ``{source name: share, ..., "multiple": share, "unmatched": share}``; every key is present and
        the shares sum to 1.

    Raises:
        ValueError: ``fused`` is empty, or a source is named ``"multiple"`` or ``"unmatched"``.

    Example:
        >>> contributions("abcxyz", {"a": "abc", "b": "xyz"})
        {'a': 0.5, 'b': 0.5, 'multiple': 0.0, 'unmatched': 0.0}
    """
    counts = char_counts(fused, sources)
    n = len(fused)
    return {label: count / n for label, count in counts.items()}


def attribute(fused: str, sources: Mapping[str, str]) -> list[str]:
    """The label of every character of ``fused`` (for colouring it), by the same rule as :func:`contributions`."""
    labels: list[str] = []
    for lo, hi, label in label_runs(fused, sources):
        labels.extend([label] * (hi - lo))
    return labels


# --------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class RecordView:
    """What the analysis needs from one record.

    Attributes:
        id: the record's id.
        field: the output field analysed.
        fused: the fused text, or None when the record has no usable fusion.
        sources: source name -> text of every candidate the fusor was shown (that has the field).
        positions: source name -> 1-based position in which the fusor was shown it (when known).
        selected: source name of the Best-of-N pick, or None.
        selected_position: shown position of the Best-of-N pick, or None.
        skip: why the fusion is not analysed ("no fusion", "fallback", "empty", "no sources"), or None.
    """

    id: str
    field: str
    fused: str | None
    sources: dict[str, str]
    positions: dict[str, int]
    selected: str | None = None
    selected_position: int | None = None
    skip: str | None = None


def _method_parts(rec: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """(candidates, fusion, Best-of-N selection) of a record in the current format (either kind)."""
    cset = rec.get("candidates")
    candidates = cset.get("candidates") if isinstance(cset, Mapping) else None
    fusion = (method_result(rec, FUSION) or {}).get(FUSION)
    bon = (method_result(rec, BON) or {}).get("selection")
    return candidates, fusion, bon


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _choose_field(outputs: Mapping[str, Any], field_name: str | None, where: str) -> str:
    if field_name is not None:
        return field_name
    if len(outputs) == 1:
        return next(iter(outputs))
    for default in ("answer", "response"):
        if default in outputs:
            return default
    raise DataError(f"{where}: cannot tell which output field to analyse among {sorted(outputs)}; pass --field NAME")


def record_view(rec: Mapping[str, Any], *, field_name: str | None = None, where: str = "record") -> RecordView | None:
    """Extract fused text, sources, shown positions and the Best-of-N pick from one record.

    Returns None for a record whose status is ``"failed"``. ``where`` names the record in errors.

    Raises:
        DataError: the record's candidates or aggregator results are not shaped as expected.
    """
    if rec.get("status") == "failed":
        return None
    rid = str(rec.get("id"))
    where = f"{where} (id {rid})"
    candidates, fusion, bon = _method_parts(upgrade(rec, where=where))
    if not isinstance(candidates, list):
        raise DataError(f"{where}: no 'candidates' list (is this a synth or eval records file?)")
    if fusion is not None and not isinstance(fusion, Mapping):
        raise DataError(f"{where}: the fusion's details must be an object, not {type(fusion).__name__}")
    if bon is not None and not isinstance(bon, Mapping):
        raise DataError(f"{where}: Best-of-N's 'selection' must be an object, not {type(bon).__name__}")

    by_model: dict[str, int] = defaultdict(int)
    for cand in candidates:
        if not isinstance(cand, Mapping) or not isinstance(cand.get("index"), int) or "model" not in cand:
            raise DataError(f"{where}: every candidate needs an integer 'index' and a 'model'")
        by_model[str(cand["model"])] += 1
    names: dict[int, str] = {}
    for cand in candidates:
        model = str(cand["model"])
        name = f"{model}#{cand.get('sample', cand['index'])}" if by_model[model] > 1 else model
        if name in RESERVED_LABELS:
            name = f"{name}#model"
        if name in names.values():
            raise DataError(f"{where}: two candidates would both be called {name!r} (same model and sample)")
        names[cand["index"]] = name

    # the field: decided on the fused outputs when there are some, else on the candidates'
    fused_outputs = fusion.get("outputs") if fusion is not None else None
    probe = fused_outputs if isinstance(fused_outputs, Mapping) and fused_outputs else None
    if probe is None:
        probe = next(
            (c.get("outputs") for c in candidates if isinstance(c.get("outputs"), Mapping) and c.get("outputs")), {}
        )
    chosen = field_name or (_choose_field(probe, None, where) if probe else "answer")

    order = fusion.get("order") if fusion is not None else None
    if order is not None and (not isinstance(order, list) or not all(isinstance(i, int) for i in order)):
        raise DataError(f"{where}: fusion 'order' must be a list of candidate indices")
    positions = {names[i]: p for p, i in enumerate(order or [], 1) if i in names}
    shown = set(order) if order else None

    sources: dict[str, str] = {}
    for cand in candidates:
        outs = cand.get("outputs")
        if cand.get("error") or not isinstance(outs, Mapping) or outs.get(chosen) is None:
            continue
        if shown is not None and cand["index"] not in shown:
            continue  # the fusor never saw it (filtered out before fusion)
        sources[names[cand["index"]]] = _text(outs[chosen])

    fused: str | None = None
    skip: str | None = None
    if fusion is None:
        skip = "no fusion"
    elif fusion.get("fallback"):
        skip = "fallback"
    elif not isinstance(fused_outputs, Mapping) or fused_outputs.get(chosen) is None:
        skip = "no fusion"
    else:
        fused = _text(fused_outputs[chosen])
        if not fused:
            skip = "empty"
        elif not sources:
            skip = "no sources"
    if skip is not None:
        fused = None

    selected = selected_position = None
    if bon is not None and not bon.get("fallback") and isinstance(bon.get("index"), int):
        selected = names.get(bon["index"])
        bon_order = bon.get("order") if isinstance(bon.get("order"), list) else order
        if bon_order and bon["index"] in bon_order:
            selected_position = bon_order.index(bon["index"]) + 1
    return RecordView(rid, chosen, fused, sources, positions, selected, selected_position, skip)


def iter_views(
    path: str | os.PathLike[str], *, field_name: str | None = None, limit: int | None = None
) -> Iterator[RecordView]:
    """Stream :class:`RecordView` objects of a records file (skipping failed records)."""
    from fusion_dspy.records import iter_records

    if not Path(path).is_file():
        raise DataError("records file not found", path=str(path))
    for n, rec in enumerate(islice(iter_records(path), limit), 1):
        view = record_view(rec, field_name=field_name, where=f"{path}: record {n}")
        if view is not None:
            yield view


# --------------------------------------------------------------------------------------------------
# Aggregation


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


# --------------------------------------------------------------------------------------------------
# Display

_PALETTE = (
    "#8dd3c7",
    "#ffffb3",
    "#bebada",
    "#fb8072",
    "#80b1d3",
    "#fdb462",
    "#b3de69",
    "#fccde5",
    "#bc80bd",
    "#ccebc5",
)
LABEL_COLOURS = {MULTIPLE: "#d9d9d9", UNMATCHED: "#ffffff"}


def colours_for(names: Iterable[str]) -> dict[str, str]:
    """A stable colour per source name (cycling a qualitative palette), plus the reserved labels."""
    out = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(names)}
    out.update(LABEL_COLOURS)
    return out


def render_html(view: RecordView, *, title: str = "Where the fused answer comes from") -> str:
    """A standalone HTML page: the fused text coloured by source, a legend with shares, the sources."""
    if view.fused is None:
        raise ValueError(f"record {view.id} has no analysed fusion ({view.skip})")
    runs = label_runs(view.fused, view.sources)
    n = len(view.fused)
    counts: dict[str, int] = dict.fromkeys([*view.sources, MULTIPLE, UNMATCHED], 0)
    for lo, hi, label in runs:
        counts[label] += hi - lo
    names = sorted(view.sources, key=lambda s: (view.positions.get(s, 10**9), s))
    colours = colours_for(names)
    esc = html.escape
    spans = "".join(
        f'<span class="{_css(label)}" title="{esc(label)}">{esc(view.fused[lo:hi])}</span>' for lo, hi, label in runs
    )
    legend = "".join(
        f'<li><span class="swatch {_css(label)}"></span>{esc(label)}'
        + (f" (shown {view.positions[label]})" if label in view.positions else "")
        + f": {counts[label] / n:.1%}</li>"
        for label in [*names, MULTIPLE, UNMATCHED]
    )
    styles = "".join(f".{_css(label)}{{background:{colour}}}" for label, colour in colours.items())
    details = "".join(
        f'<details><summary><span class="swatch {_css(name)}"></span>{esc(name)}</summary>'
        f"<pre>{esc(view.sources[name])}</pre></details>"
        for name in names
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;line-height:1.5}}
.fused,pre{{white-space:pre-wrap;word-wrap:break-word;border:1px solid #ccc;padding:1rem;font-family:inherit}}
.swatch{{display:inline-block;width:1em;height:1em;border:1px solid #999;margin-right:.4em;vertical-align:middle}}
ul.legend{{list-style:none;padding:0}}
{styles}
</style></head><body>
<h1>{esc(title)}</h1>
<p>Record <code>{esc(view.id)}</code>, field <code>{esc(view.field)}</code>, {n} characters. Each character is
coloured by the source whose longest matching block (difflib) covers it; equal longest blocks from
several sources are <em>multiple</em>, characters no block covers are <em>unmatched</em>.</p>
<ul class="legend">{legend}</ul>
<div class="fused">{spans}</div>
<h2>Sources</h2>
{details}
</body></html>
"""


def _css(label: str) -> str:
    """A CSS class name for any label (names are arbitrary text)."""
    return "l" + "".join(c if c.isalnum() else f"_{ord(c):x}_" for c in label)
