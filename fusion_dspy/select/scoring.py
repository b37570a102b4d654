"""Best-of-N: score every candidate of a set, keep the best (ties: a seeded draw, not the first)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import dspy

from fusion_dspy.errors import AggregationError, ConfigurationError
from fusion_dspy.types import CandidateSet, Selection, Usage

logger = logging.getLogger(__name__)


@runtime_checkable
class Scorer(Protocol):
    """Scores the candidates of a set. Returns ``(scores, details, usage)``.

    ``scores`` maps ``Candidate.index`` to a float, or None where no score could be obtained.
    """

    def score_candidates(self, cset: CandidateSet) -> tuple[dict[int, float | None], dict[str, Any], Usage]: ...


class CallableScorer:
    """Adapts ``scorer(inputs: dict, prediction) -> float`` (DSPy's ``reward_fn`` convention).

    With a metric that compares with gold labels this is the oracle. A scorer that raises or
    returns a non-number gives that candidate no score (recorded), never aborting the batch.
    """

    def __init__(self, fn: Callable[[dict[str, Any], dspy.Prediction], float], name: str | None = None):
        if not callable(fn):
            raise ConfigurationError(f"scorer must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "scorer")

    def score_candidates(self, cset: CandidateSet) -> tuple[dict[int, float | None], dict[str, Any], Usage]:
        scores: dict[int, float | None] = {}
        errors: dict[int, str] = {}
        started = time.perf_counter()
        with dspy.track_usage() as tracker:
            for c in cset.ok:
                try:
                    value = self.fn(dict(cset.inputs), dspy.Prediction(**c.outputs))
                    value = float(value)
                    if math.isnan(value):
                        raise ValueError("score is NaN")
                    scores[c.index] = value
                except Exception as exc:  # noqa: BLE001 - one bad score never aborts a batch
                    scores[c.index] = None
                    errors[c.index] = f"{type(exc).__name__}: {exc}"[:300]
        usage = Usage.from_lm_usage(tracker.get_total_tokens(), seconds=time.perf_counter() - started)
        return scores, ({"errors": errors} if errors else {}), usage


def as_scorer(scorer: Any) -> Scorer:
    """A :class:`Scorer` from a scorer object or a plain callable."""
    if isinstance(scorer, Scorer):
        return scorer
    if callable(scorer):
        return CallableScorer(scorer)
    raise ConfigurationError(
        f"scorer must be a callable scorer(inputs, prediction) -> float, an LLMRater or a RewardModelScorer; got {type(scorer).__name__}"
    )


def select_best(cset: CandidateSet, scorer: Any, *, method: str = "best_of_n", seed: int = 0) -> Selection:
    """Score the successful candidates of ``cset`` and select the highest.

    Neither the pool's order nor the scorer's sees a favourite: candidates are scored in an order
    shuffled by ``seed`` (and the inputs), and ties between the best scores are broken by a draw
    from the same seeded generator, so the first teacher of a pool wins no more often than the last.
    When no candidate could be scored, the first successful candidate is returned with
    ``fallback`` saying why.
    """
    ok = cset.ok
    if not ok:
        raise AggregationError("no successful candidate to select from")
    rng = cset.rng(seed, "select")
    order = list(cset.candidates)
    rng.shuffle(order)
    scores, details, usage = as_scorer(scorer).score_candidates(
        CandidateSet(cset.inputs, tuple(order), cset.output_fields, cset.usage)
    )
    scored = [(s, c.index) for c in ok if (s := scores.get(c.index)) is not None and math.isfinite(s)]
    fallback = None
    if scored:
        best_score = max(s for s, _ in scored)
        tied = sorted(i for s, i in scored if s == best_score)
        index = tied[0] if len(tied) == 1 else rng.choice(tied)
        if len(tied) > 1:
            details = {**details, "tie": {"between": tied, "drawn": index}}
    else:
        index = ok[0].index
        fallback = "no candidate could be scored; kept the first candidate"
        logger.warning(fallback)
    chosen = next(c for c in ok if c.index == index)
    return Selection(index, dict(chosen.outputs), scores, method, usage, fallback, details)
