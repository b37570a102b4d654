"""Where fused text comes from, character by character: the paper's attribution (appendix F).

Match the fused text against each source with
``SequenceMatcher(None, fused, source, autojunk=False).get_matching_blocks()``; every character of
the fused text goes to the source whose covering block is longest; equal longest blocks from
different sources make it ``"multiple"``; a character no block covers is ``"unmatched"``.

Matching uses ``cydifflib`` when it is installed (the same algorithm compiled, difflib-identical
blocks, an order of magnitude faster) and the standard library's ``difflib`` otherwise.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from itertools import pairwise

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
