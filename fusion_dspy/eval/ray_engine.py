"""``eval --engine ray``: sampling and aggregation of each example as two Ray Data stages.

read examples (the driver, as in-process: ids, resume) → sample (the example's pool at the largest
N, once) → aggregate (greedy, every method at every N, the scores) → the writer
(:mod:`fusion_dspy.records.ray_runner`). Both stages run the in-process engine's own worker
(:class:`fusion_dspy.eval.run._Worker`, shipped to the actors without the examples), so a record
is the in-process record. Between the stages the pool travels as its record (``CandidateSet``
``to_dict`` / ``from_dict``): candidate outputs are what the record holds (JSON values).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from fusion_dspy.records.ray_runner import RayOptions, Stage, run_on_ray
from fusion_dspy.records.runner import RunStats


def _example(state: Mapping[str, Any]) -> Any:
    import dspy

    return dspy.Example(**state["example"]).with_inputs(*state["input_keys"])


class SampleExample:
    """The stage drawing an example's candidate pool."""

    def __init__(self, worker: Any):
        self.worker = worker

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "candidates": self.worker.sample(_example(state)).to_dict()}


class AggregateExample:
    """The stage making the record: every method on the pool (and its first k candidates), scored."""

    def __init__(self, worker: Any):
        self.worker = worker

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        import dspy

        from fusion_dspy.types import CandidateSet

        # a metric that calls an LM (a pairwise judge) uses the pool's judge, as in-process
        with dspy.context(lm=dspy.settings.lm or self.worker.roles.judge_lm):
            return {"record": self.worker.finish(_example(state), CandidateSet.from_dict(state["candidates"]))}


def run_eval_on_ray(
    items: Iterable[tuple[str, Any]],
    worker: Any,
    store: Any,
    *,
    options: RayOptions,
    on_record: Any = None,
    stop: Any = None,
) -> RunStats:
    """The eval items (``(id, dspy.Example)``) not in ``store`` through the two stages on Ray; records end in ``store``."""
    shipped = _light(worker)
    payloads = ((rid, {"example": ex.toDict(), "input_keys": sorted(ex._input_keys or ())}) for rid, ex in items)
    stages = [Stage("sample", SampleExample, {"worker": shipped}), Stage("aggregate", AggregateExample, {"worker": shipped})]
    return run_on_ray(payloads, stages, store, options=options, on_record=on_record, stop=stop)


def _light(worker: Any) -> Any:
    """A copy of the worker without the plan's examples (the actors get each example in its row, not all of them)."""
    import copy

    light = copy.copy(worker)
    light.plan = dataclasses.replace(worker.plan, examples=[])
    return light
