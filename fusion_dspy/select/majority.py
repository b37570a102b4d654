"""Majority vote on a normalised answer field, for closed-form tasks (math, short facts)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from fusion_dspy.errors import AggregationError
from fusion_dspy.types import CandidateSet, Selection


def default_normalize(value: Any) -> str | None:
    """Lower-case, strip and collapse whitespace; None for empty answers."""
    if value is None:
        return None
    text = " ".join(str(value).split()).strip().lower().rstrip(".")
    return text or None


def majority_vote(
    cset: CandidateSet,
    field: str | None = None,
    normalize: Callable[[Any], str | None] | None = None,
    *,
    method: str = "majority_vote",
) -> Selection:
    """The candidate whose normalised ``field`` is the most common (``method`` labels the :class:`Selection`).

    Ties go to the answer that appeared first; the chosen candidate is that answer's first
    occurrence. Candidates whose answer normalises to None do not vote; if none votes, the first
    successful candidate is returned with a ``fallback`` reason.
    """
    ok = cset.ok
    if not ok:
        raise AggregationError("no successful candidate to vote on")
    field = field or cset.output_fields[-1]
    if field not in cset.output_fields:
        raise AggregationError(f"majority vote: {field!r} is not an output field ({', '.join(cset.output_fields)})")
    normalize = normalize or default_normalize
    keys: dict[int, str | None] = {}
    for c in ok:
        try:
            keys[c.index] = normalize(c.outputs.get(field))
        except Exception:  # noqa: BLE001 - an answer that cannot be normalised does not vote
            keys[c.index] = None
    counts = Counter(k for k in keys.values() if k is not None)
    if not counts:
        first = ok[0]
        return Selection(first.index, dict(first.outputs), {c.index: None for c in ok}, method,
                         fallback="no candidate had a usable answer to vote on; kept the first candidate",
                         details={"keys": keys})
    top = max(counts.values())
    first_seen = {}
    for c in ok:
        k = keys[c.index]
        if k is not None and k not in first_seen:
            first_seen[k] = c.index
    winner = min((k for k, v in counts.items() if v == top), key=lambda k: first_seen[k])
    index = first_seen[winner]
    chosen = next(c for c in ok if c.index == index)
    scores = {c.index: float(counts[keys[c.index]]) if keys[c.index] is not None else None for c in ok}
    return Selection(index, dict(chosen.outputs), scores, method, details={"votes": dict(counts), "winner": winner})
