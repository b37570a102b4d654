"""``synth --engine ray``: the stages of one synth row as Ray Data actors.

read prompts (the driver, as in-process: ids, resume, duplicates) → one stage per teacher, each
sampling that teacher's ``k`` candidates → one stage that gathers them into the candidate set,
filters, aggregates (fuse / select) and makes the row → the writer
(:mod:`fusion_dspy.records.ray_runner`). Every actor builds its setup with
:func:`~fusion_dspy.synth.steps.build_setup` from the same pool and settings as the driver, and
checks that its configuration (the one in every id) is the driver's; the prompts are built and the
answers parsed by the same DSPy program and adapters, so a row is the in-process row.

The candidate set's sampling ``seconds`` is the sum of the teacher stages' times (in-process the
teachers are sampled at once and it is the wall time of all of them).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.records.ray_runner import RayOptions, Stage, run_on_ray
from fusion_dspy.records.runner import RunStats
from fusion_dspy.synth.prompts import Prompt


def _setup(pool: Any, settings: Mapping[str, Any], config: Mapping[str, Any]) -> Any:
    import json

    from fusion_dspy.synth.steps import build_setup

    setup = build_setup(pool, **settings)
    if json.loads(json.dumps(setup.config)) != json.loads(json.dumps(dict(config))):
        raise ConfigurationError(
            "a Ray worker built another synth configuration than the driver (is the same fusion-dspy installed on every node?): "
            f"{setup.config} vs {dict(config)}"
        )
    return setup


def _prompt(state: Mapping[str, Any]) -> Prompt:
    return Prompt(tuple(dict(m) for m in state["messages"]), state["where"])


class SampleTeacher:
    """The stage sampling one teacher: its ``k`` candidates for the row's prompt, failed samples kept."""

    def __init__(self, pool: Any, settings: Mapping[str, Any], config: Mapping[str, Any], teacher: str):
        self.setup = _setup(pool, settings, config)
        if teacher not in self.setup.teachers:
            raise ConfigurationError(f"{teacher!r} is not a teacher of the pool ({', '.join(self.setup.teachers)})")
        self.teacher = teacher
        # as sample_candidates shares its 4 request threads between the teachers (used by non-n strategies only)
        self.max_workers = max(1, 4 // len(self.setup.teachers)) if len(self.setup.teachers) > 1 else 4

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        from fusion_dspy.sampling import sample_teacher
        from fusion_dspy.types import CandidateSet, Usage

        setup = self.setup
        started = time.perf_counter()
        candidates = sample_teacher(
            setup.program, {"prompt": _prompt(state).text}, self.teacher, setup.teachers[self.teacher], setup.samples,
            temperature=setup.temperature, max_workers=self.max_workers, rollout_offset=state["attempt"] * setup.samples,
        )
        part = CandidateSet({}, tuple(candidates), (), Usage(seconds=time.perf_counter() - started))
        return {**state, "samples": [*state.get("samples", []), part.to_dict()]}


class Aggregate:
    """The stage after sampling: the candidate set in teacher order, filters, the methods, the row."""

    def __init__(self, pool: Any, settings: Mapping[str, Any], config: Mapping[str, Any]):
        self.setup = _setup(pool, settings, config)

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        from fusion_dspy.sampling import gather_candidates, output_fields_of
        from fusion_dspy.synth.steps import finish_row
        from fusion_dspy.types import CandidateSet

        prompt = _prompt(state)
        parts = [CandidateSet.from_dict({**p, "inputs": {}, "output_fields": []}) for p in state["samples"]]
        cset = gather_candidates(
            {"prompt": prompt.text}, output_fields_of(self.setup.program), [p.candidates for p in parts],
            sum(p.usage.seconds for p in parts),
        )
        return {"record": finish_row(self.setup, prompt, cset, attempt=state["attempt"])}


def stages(pool: Any, settings: Mapping[str, Any], config: Mapping[str, Any]) -> list[Stage]:
    """The pipeline's model stages: one per teacher (in the pool's order), then the aggregation."""
    common = {"pool": pool, "settings": dict(settings), "config": dict(config)}
    teachers = [Stage(f"sample {t}", SampleTeacher, {**common, "teacher": t}) for t in pool.teachers]
    return [*teachers, Stage("aggregate", Aggregate, common)]


def run_synth_on_ray(
    items: Iterable[tuple[str, tuple[Prompt, int]]],
    store: Any,
    *,
    pool: Any,
    settings: Mapping[str, Any],
    config: Mapping[str, Any],
    options: RayOptions,
    on_record: Any = None,
    progress: Any = None,
    stop: Any = None,
) -> RunStats:
    """The synth items (``(id, (prompt, attempt))``) not in ``store`` through the stages on Ray; rows end in ``store``."""
    payloads = (
        (rid, {"messages": [dict(m) for m in prompt.messages], "where": prompt.where, "attempt": attempt})
        for rid, (prompt, attempt) in items
    )
    return run_on_ray(payloads, stages(pool, settings, config), store, options=options, on_record=on_record,
                      progress=progress, stop=stop)
