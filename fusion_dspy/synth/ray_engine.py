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

On a GPU cluster a teacher can run inside the pipeline as a ``ray.data.llm`` vLLM engine
(``engines``: ``{teacher: processor config}``, from :func:`fusion_dspy.serving.ray_llm.engines_for_pool`):
its stage is a :class:`~fusion_dspy.records.ray_processor.ProcessorStage` whose requests are
:class:`EngineTeacher`'s. The engine gets the messages DSPy's adapter builds for the teacher (the
``n``-request of in-process sampling, :func:`~fusion_dspy.sampling.engine_request`), one request per sample since an
engine row returns one text, each with its own seed; the texts are parsed as sampling parses them
(:func:`~fusion_dspy.sampling.parse_choice`) into the same per-teacher part of the candidate set as :class:`SampleTeacher`'s.
The fusor, too, can run as an engine (:mod:`fusion_dspy.synth.ray_fusor`); the scorer stays HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.records.ray_runner import RayOptions, Stage, run_on_ray
from fusion_dspy.records.runner import RunStats
from fusion_dspy.synth.prompts import Prompt
from fusion_dspy.synth.ray_setup import cached_setup, gather, row_prompt, stage_setup


class SampleTeacher:
    """The stage sampling one teacher: its ``k`` candidates for the row's prompt, failed samples kept."""

    def __init__(self, pool: Any, settings: Mapping[str, Any], config: Mapping[str, Any], teacher: str):
        self.setup = stage_setup(pool, settings, config)
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
            setup.program, {"prompt": row_prompt(state).text}, self.teacher, setup.teachers[self.teacher], setup.samples,
            temperature=setup.temperature, max_workers=self.max_workers, rollout_offset=state["attempt"] * setup.samples,
        )
        part = CandidateSet({}, tuple(candidates), (), Usage(seconds=time.perf_counter() - started))
        return {**state, "samples": [*state.get("samples", []), part.to_dict()]}


class Aggregate:
    """The stage after sampling: the candidate set in teacher order, filters, the methods, the row."""

    def __init__(self, pool: Any, settings: Mapping[str, Any], config: Mapping[str, Any]):
        self.setup = stage_setup(pool, settings, config)

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        from fusion_dspy.synth.steps import finish_row

        return {"record": finish_row(self.setup, row_prompt(state), gather(self.setup, state), attempt=state["attempt"])}


class EngineTeacher:
    """The requests of one teacher run as a vLLM engine, and the candidates its answers make (``EngineHooks``).

    Sample ``i`` of a row's attempt ``a`` has the seed ``seed + a * k + i`` (the configuration's
    seed): a retried row gets fresh samples, as the rollout ids of in-process sampling move on.
    """

    def __init__(self, pool: Any, settings: Mapping[str, Any], config: Mapping[str, Any], teacher: str):
        if teacher not in pool.teachers:
            raise ConfigurationError(f"{teacher!r} is not a teacher of the pool ({', '.join(pool.teachers)})")
        self.pool, self.settings, self.config, self.teacher = pool, dict(settings), dict(config), teacher

    def _setup(self) -> Any:
        return cached_setup(self.pool, self.settings, self.config)

    def requests(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        from fusion_dspy.sampling import engine_request

        setup = self._setup()
        k = setup.samples
        seed = int(setup.config["seed"]) + int(state["attempt"]) * k
        inputs = {"prompt": row_prompt(state).text}
        return [
            engine_request(setup.program, inputs, sample=i, temperature=setup.temperature, max_tokens=int(setup.config["max_tokens"]),
                           seed=seed)
            for i in range(k)
        ]

    def collect(self, state: dict[str, Any], outputs: list[dict[str, Any]]) -> dict[str, Any]:
        from fusion_dspy.sampling import engine_candidates
        from fusion_dspy.types import CandidateSet, Usage

        candidates = engine_candidates(self._setup().program, self.teacher, outputs)
        # the engine runs a row's samples at once: the part's time is the longest one
        part = CandidateSet({}, tuple(candidates), (), Usage(seconds=max((o["seconds"] for o in outputs), default=0.0)))
        return {**state, "samples": [*state.get("samples", []), part.to_dict()]}


def check_engines(engines: Mapping[str, Any], pool: Any, fusor: Any = None) -> None:
    """Every engine is a teacher or the fusor of the pool, with a ``ray.data.llm`` processor configuration (checked before
    Ray starts); the fusor (``fusor``: the setup's :class:`~fusion_dspy.fuse.Fusor`, None when fusion does not run) must
    be one that can run as an engine (:func:`~fusion_dspy.synth.ray_fusor.check_fusor_engine`)."""
    from fusion_dspy.records.ray_processor import check_processor_config
    from fusion_dspy.synth.ray_fusor import check_fusor_engine

    for name, config in engines.items():
        if name not in pool.teachers and name != pool.fusor_name:
            raise ConfigurationError(
                f"engine {name!r} is not a teacher of the pool ({', '.join(pool.teachers)}) nor its fusor ({pool.fusor_name}): "
                "only teachers and the fusor run as engines inside the pipeline (the scorer is called over HTTP)"
            )
        if name == pool.fusor_name and (fusor is not None or name not in pool.teachers):
            check_fusor_engine(fusor)
        check_processor_config(name, config)


def stages(pool: Any, settings: Mapping[str, Any], config: Mapping[str, Any],
           engines: Mapping[str, Any] | None = None) -> list[Any]:
    """The pipeline's model stages: one per teacher (in the pool's order), then the aggregation.

    A teacher in ``engines`` (``{name: ray.data.llm processor config}``) is sampled by its vLLM
    engine inside the pipeline; the others by actors calling their endpoints. When the pool's
    fusor is in ``engines`` and fusion runs, the aggregation is the passes of
    :func:`~fusion_dspy.synth.ray_fusor.fusor_stages` (prepare, fuse on the engine, retry, finish)
    instead of one ``aggregate`` stage calling the fusor over HTTP.
    """
    from fusion_dspy.records.ray_processor import ProcessorStage

    engines = dict(engines or {})
    fusor = stage_setup(pool, settings, config).aggregators.fusor
    check_engines(engines, pool, fusor)
    common = {"pool": pool, "settings": dict(settings), "config": dict(config)}
    teachers: list[Any] = []
    for t in pool.teachers:
        if t in engines:
            hooks = EngineTeacher(pool, settings, config, t)
            teachers.append(ProcessorStage(f"sample {t} (vLLM engine)", engines[t], hooks, samples=int(config["samples_per_teacher"])))
        else:
            teachers.append(Stage(f"sample {t}", SampleTeacher, {**common, "teacher": t}))
    if fusor is not None and pool.fusor_name in engines:
        from fusion_dspy.synth.ray_fusor import fusor_stages

        return [*teachers, *fusor_stages(pool, settings, config, engines[pool.fusor_name], retries=fusor.retries)]
    return [*teachers, Stage("aggregate", Aggregate, common)]


def run_synth_on_ray(
    items: Iterable[tuple[str, tuple[Prompt, int]]],
    store: Any,
    *,
    pool: Any,
    settings: Mapping[str, Any],
    config: Mapping[str, Any],
    options: RayOptions,
    engines: Mapping[str, Any] | None = None,
    on_record: Any = None,
    progress: Any = None,
    stop: Any = None,
) -> RunStats:
    """The synth items (``(id, (prompt, attempt))``) not in ``store`` through the stages on Ray; rows end in ``store``.

    ``engines``: the teachers (and fusor) run by vLLM engines inside the pipeline (``{name: processor config}``).
    """
    payloads = (
        (rid, {"messages": [dict(m) for m in prompt.messages], "where": prompt.where, "attempt": attempt})
        for rid, (prompt, attempt) in items
    )
    return run_on_ray(payloads, stages(pool, settings, config, engines), store, options=options, on_record=on_record,
                      progress=progress, stop=stop)
