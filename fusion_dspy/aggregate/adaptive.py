"""A registry method on an adaptively sampled pool: the agreed answer without an aggregation call, else the method.

When adaptive sampling stopped on agreement (:data:`~fusion_dspy.adaptive.AGREEMENT`: the Beta rule
on closed-form answers, or near-duplicates on free-form ones), the agreed candidate is the answer and
the method's own call (the fusor's, the rater's) is skipped; the outcome is then a
:class:`~fusion_dspy.types.Selection` whose ``method`` is :data:`AGREEMENT_METHOD`. Otherwise the
method runs on the candidates drawn, as it would on a fixed pool. Either way the result carries the
:class:`~fusion_dspy.adaptive.AdaptiveTrace` (``MethodResult.adaptive``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from fusion_dspy.adaptive import AdaptiveTrace
from fusion_dspy.aggregate.registry import MAJORITY, Aggregator, MethodResult
from fusion_dspy.types import CandidateSet, Selection, Usage

#: ``Selection.method`` of an answer taken from the candidates' agreement (no aggregation call)
AGREEMENT_METHOD = "agreement"


def run_adaptive(aggregator: Aggregator, cset: CandidateSet, trace: AdaptiveTrace, *, example: Any = None,
                 prior: dict[str, MethodResult] | None = None, **options: Any) -> MethodResult:
    """``aggregator`` on an adaptively sampled ``cset``; on agreement its call is skipped (majority runs: it is free)."""
    if trace.agreed and aggregator.name != MAJORITY:
        started = time.perf_counter()
        chosen = next(c for c in cset.candidates if c.index == trace.agreed_index)
        outcome = Selection(chosen.index, dict(chosen.outputs), {c.index: None for c in cset.ok}, AGREEMENT_METHOD,
                            details={"stop": trace.stop, **trace.evidence})
        done = replace(trace, aggregation_skipped=True)
        return MethodResult(aggregator.name, outcome, Usage.breakdown(cset.usage, Usage()), time.perf_counter() - started,
                            adaptive=done.to_dict())
    result = aggregator.run(cset, example=example, prior=prior, **options)
    return replace(result, adaptive=trace.to_dict())
