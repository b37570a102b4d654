"""``eval --engine ray``: sampling and aggregation of each example as two Ray Data stages.

read examples (the driver, as in-process: ids, resume) → sample (the example's pool at the largest
N, once) → aggregate (greedy, every method at every N, the scores) → the writer
(:mod:`fusion_dspy.records.ray_runner`). Both stages run the in-process engine's own worker
(:class:`fusion_dspy.eval.run._Worker`, shipped to the actors without the examples), so a record
is the in-process record. Between the stages the pool travels as its record (``CandidateSet``
``to_dict`` / ``from_dict``): candidate outputs are what the record holds (JSON values).

With vLLM engines inside the pipeline (``engines``: ``{teacher: ray.data.llm processor config}``,
from :func:`fusion_dspy.serving.ray_llm.engines_for_pool`) sampling is one stage per teacher, in
the pool's order: a teacher in ``engines`` is a
:class:`~fusion_dspy.records.ray_processor.ProcessorStage` whose requests are the messages of
in-process sampling (:func:`~fusion_dspy.sampling.engine_request`, one request per sample, sample
``i`` with the seed ``--seed + i``), the others are actors sampling their endpoint as in-process.
The aggregate stage gathers the parts into the candidate set in teacher order
(:func:`~fusion_dspy.sampling.gather_candidates`, as in-process sampling does) and runs the same
``finish``: greedy (the first teacher at temperature 0), the fusor, the scorer and the judge are
called over HTTP.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from typing import Any

from fusion_dspy.errors import ConfigurationError
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


class SampleTeacherOfExample:
    """With engines: the stage sampling one teacher of the example's pool over HTTP (its part of the pool)."""

    def __init__(self, worker: Any, teacher: str):
        self.worker, self.teacher = worker, teacher

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        from fusion_dspy.types import CandidateSet, Usage

        started = time.perf_counter()
        candidates = self.worker.sample_teacher(_example(state), self.teacher)
        part = CandidateSet({}, tuple(candidates), (), Usage(seconds=time.perf_counter() - started))
        return {**state, "samples": [*state.get("samples", []), part.to_dict()]}


class EngineTeacherOfExample:
    """With engines: the requests of one teacher run as a vLLM engine, and its part of the pool from the answers
    (:class:`~fusion_dspy.records.ray_processor.EngineHooks`)."""

    def __init__(self, worker: Any, teacher: str):
        if teacher not in worker.roles.teachers:
            raise ConfigurationError(f"{teacher!r} is not a teacher of the pool ({', '.join(worker.roles.teachers)})")
        self.worker, self.teacher = worker, teacher

    def requests(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        from fusion_dspy.sampling import engine_request

        w = self.worker
        inputs = dict(_example(state).inputs().toDict())
        program = w.task.program()
        return [
            engine_request(program, inputs, sample=i, temperature=w.temperature, max_tokens=w.max_tokens_of(self.teacher), seed=w.plan.seed)
            for i in range(w.samples_of(self.teacher))
        ]

    def collect(self, state: dict[str, Any], outputs: list[dict[str, Any]]) -> dict[str, Any]:
        from fusion_dspy.sampling import engine_candidates
        from fusion_dspy.types import CandidateSet, Usage

        candidates = engine_candidates(self.worker.task.program(), self.teacher, outputs)
        # the engine runs an example's samples at once: the part's time is the longest one
        part = CandidateSet({}, tuple(candidates), (), Usage(seconds=max((o["seconds"] for o in outputs), default=0.0)))
        return {**state, "samples": [*state.get("samples", []), part.to_dict()]}


class AggregateExample:
    """The stage making the record: every method on the pool (and its first k candidates), scored."""

    def __init__(self, worker: Any):
        self.worker = worker

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        import dspy

        example = _example(state)
        cset = self._pool(example, state)
        # a metric that calls an LM (a pairwise judge) uses the pool's judge, as in-process
        with dspy.context(lm=dspy.settings.lm or self.worker.roles.judge_lm):
            return {"record": self.worker.finish(example, cset)}

    def _pool(self, example: Any, state: Mapping[str, Any]) -> Any:
        """The example's candidate set: sampled whole by one stage, or gathered from one part per teacher in teacher order."""
        from fusion_dspy.sampling import gather_candidates, output_fields_of
        from fusion_dspy.types import CandidateSet

        if "candidates" in state:
            return CandidateSet.from_dict(state["candidates"])
        parts = [CandidateSet.from_dict({**p, "inputs": {}, "output_fields": []}) for p in state["samples"]]
        return gather_candidates(dict(example.inputs().toDict()), output_fields_of(self.worker.task.program()),
                                 [p.candidates for p in parts], sum(p.usage.seconds for p in parts))


def check_eval_engines(engines: Mapping[str, Any], plan: Any, roles: Any) -> None:
    """Every engine is a teacher of the pool with a ``ray.data.llm`` processor configuration, and the task's program one
    predictor (its sample is one request); checked before Ray starts.

    Raises:
        ConfigurationError: naming the engine (or the task) and what to change.
    """
    from fusion_dspy.records.ray_processor import check_processor_config
    from fusion_dspy.sampling import single_predictor

    for name, config in engines.items():
        if name not in roles.teachers:
            raise ConfigurationError(
                f"engine {name!r} is not a teacher of the pool ({', '.join(roles.teachers)}): eval runs only teachers as engines "
                "inside the pipeline (the fusor, the scorer and the judge are called over HTTP)"
            )
        check_processor_config(name, config)
    if engines and single_predictor(plan.task.program()) is None:
        raise ConfigurationError(
            f"task {plan.task.name!r}: its program is not one predictor (dspy.Predict / ChainOfThought), so a sample cannot be "
            "one engine request; run it without --ray-engines"
        )


def eval_stages(worker: Any, engines: Mapping[str, Any] | None = None) -> list[Any]:
    """The model stages: ``sample`` then ``aggregate``; with ``engines``, one sampling stage per teacher (engine or HTTP)."""
    if not engines:
        return [Stage("sample", SampleExample, {"worker": worker}), Stage("aggregate", AggregateExample, {"worker": worker})]
    from fusion_dspy.records.ray_processor import ProcessorStage

    check_eval_engines(engines, worker.plan, worker.roles)
    teachers: list[Any] = []
    for t in worker.roles.teachers:
        if t in engines:
            teachers.append(ProcessorStage(f"sample {t} (vLLM engine)", engines[t], EngineTeacherOfExample(worker, t),
                                           samples=worker.samples_of(t)))
        else:
            teachers.append(Stage(f"sample {t}", SampleTeacherOfExample, {"worker": worker, "teacher": t}))
    return [*teachers, Stage("aggregate", AggregateExample, {"worker": worker})]


def run_eval_on_ray(
    items: Iterable[tuple[str, Any]],
    worker: Any,
    store: Any,
    *,
    options: RayOptions,
    engines: Mapping[str, Any] | None = None,
    on_record: Any = None,
    stop: Any = None,
) -> RunStats:
    """The eval items (``(id, dspy.Example)``) not in ``store`` through the stages on Ray; records end in ``store``.

    ``engines``: the teachers sampled by vLLM engines inside the pipeline (``{name: processor config}``).
    """
    shipped = _light(worker)
    stages = eval_stages(shipped, engines)
    payloads = ((rid, {"example": ex.toDict(), "input_keys": sorted(ex._input_keys or ())}) for rid, ex in items)
    return run_on_ray(payloads, stages, store, options=options, on_record=on_record, stop=stop)


def _light(worker: Any) -> Any:
    """A copy of the worker without the plan's examples (the actors get each example in its row, not all of them)."""
    import copy

    light = copy.copy(worker)
    light.plan = dataclasses.replace(worker.plan, examples=[])
    return light
