"""The steps of one synth row: the setup (program, teachers, methods, the configuration in every id), sampling, the row.

Both engines run these: the in-process loop (:mod:`fusion_dspy.synth.run`) calls
:func:`synthesize_one` per prompt; the Ray engine (:mod:`fusion_dspy.synth.ray_engine`) samples
each teacher in its own stage and calls :func:`finish_row` on the gathered candidates.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fusion_dspy.aggregate.registry import BON, FUSION, available_methods, check_methods, method_order
from fusion_dspy.errors import ConfigurationError, SamplingError
from fusion_dspy.sampling import DEFAULT_N
from fusion_dspy.synth.filters import Filters, apply_filters, check_filters
from fusion_dspy.synth.prompts import Prompt
from fusion_dspy.synth.rows import RESPONSE_FIELD, synth_row

SYNTH_INSTRUCTION = (
    "You are a helpful, honest and harmless assistant. Answer the user's prompt fully and "
    "accurately, in the language of the prompt. Follow its instructions, give the relevant "
    "information clearly, and refuse only what would be harmful."
)
# open-ended prompts have no gold answers and no answer normaliser: the methods that need neither
SYNTH_METHODS = available_methods(None, baselines=False, deployable_only=True)
DEFAULT_MAX_TOKENS = 512
DEFAULT_SAMPLES = DEFAULT_N  # one model without a pool file: the paper's five candidates per prompt


def synth_program(instruction: str = SYNTH_INSTRUCTION) -> Any:
    """The program whose answers are fused: ``dspy.Predict`` with ``prompt -> response``."""
    import dspy

    fields = {
        "prompt": (str, dspy.InputField(desc="the user's prompt (or the conversation so far)")),
        RESPONSE_FIELD: (str, dspy.OutputField(desc="the assistant's answer")),
    }
    signature = dspy.make_signature(fields, instruction, signature_name="SynthResponse")
    return dspy.Predict(signature)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def check_synth_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """Validate synth's methods; ``bon`` runs before ``fusion`` so fusion falls back to its pick."""
    names = check_methods(methods, allowed=SYNTH_METHODS, what="synth method")
    return tuple(sorted(dict.fromkeys(names), key=method_order))


@dataclass
class _Setup:
    """Everything one prompt's work needs, built once per run."""

    program: Any
    teachers: dict[str, Any]
    samples: int
    temperature: float
    methods: tuple[str, ...]
    aggregators: Any
    filters: Filters
    config: dict[str, Any]
    prior_failures: Counter


def build_setup(
    pool: Any,
    *,
    methods: Sequence[str] = (FUSION,),
    samples_per_teacher: int | None = None,
    temperature: float | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    filters: Filters | None = None,
    instruction: str = SYNTH_INSTRUCTION,
    fusion_instruction: str | None = None,
    seed: int = 0,
) -> _Setup:
    """The program, teachers, aggregators and the configuration that goes into every id."""
    from fusion_dspy.aggregate import Aggregators, fusor_for
    from fusion_dspy.lm.endpoints import Pool
    from fusion_dspy.select import LLMRater, RewardModelScorer

    if not isinstance(pool, Pool):
        raise ConfigurationError(f"pool must be a fusion_dspy Pool (see load_pool), got {type(pool).__name__}")
    methods = check_synth_methods(methods)
    filters = filters or Filters()
    check_filters(filters)
    if max_tokens < 16:
        raise ConfigurationError(f"max_tokens must be >= 16, got {max_tokens}")
    k = pool.samples_per_teacher if samples_per_teacher is None else samples_per_teacher
    if k < 1:
        raise ConfigurationError(f"samples per teacher must be >= 1, got {k}")
    t = float(pool.temperature if temperature is None else temperature)
    if not 0.0 <= t <= 2.0:
        raise ConfigurationError(f"temperature must be in [0, 2], got {t}")

    program = synth_program(instruction)
    teachers = pool.teacher_lms(temperature=t, max_tokens=max_tokens)
    fusor = scorer = None
    fusor_ep = pool.endpoints[pool.fusor_name]
    if FUSION in methods:  # the Fusor raises its budget to what the candidates used (and a comparison's share)
        fusor = fusor_for(program, lm=fusor_ep.lm(temperature=0.0, max_tokens=max_tokens), instruction=fusion_instruction, seed=seed)
    scorer_desc = None
    if BON in methods:
        if pool.reward_model is not None:
            rm = pool.endpoints[pool.reward_model]
            scorer = RewardModelScorer.from_endpoint(rm)
            scorer_desc = {"kind": "reward_model", "name": rm.name, "model": rm.model}
        else:
            rater_ep = pool.endpoints[pool.rater_name]
            scorer = LLMRater(rater_ep.lm(temperature=0.0, max_tokens=256), max_workers=4)
            scorer_desc = {"kind": "llm_rater", "name": rater_ep.name, "model": rater_ep.model}
    config = {
        "teachers": [{"name": n, "model": pool.endpoints[n].model} for n in pool.teachers],
        "samples_per_teacher": k,
        "temperature": t,
        "max_tokens": max_tokens,
        "methods": list(methods),
        "fusor": {"name": fusor_ep.name, "model": fusor_ep.model, "max_tokens": max_tokens, "format": fusor.format} if fusor else None,
        "scorer": scorer_desc,
        "filters": filters.to_config(),
        "instruction": _hash(instruction),
        "fusion_instruction": _hash(fusor.instruction) if fusor else None,
        "seed": seed,
    }
    return _Setup(program, teachers, k, t, methods, Aggregators(fusor=fusor, scorer=scorer, seed=seed), filters, config, Counter())


def synthesize_one(setup: _Setup, prompt: Prompt, *, attempt: int = 0) -> dict[str, Any]:
    """One row for one prompt (without its ``id``). Raises when no candidate survives."""
    from fusion_dspy.sampling import sample_candidates

    cset = sample_candidates(
        setup.program, {"prompt": prompt.text}, pool=setup.teachers, samples_per_model=setup.samples,
        temperature=setup.temperature, rollout_offset=attempt * setup.samples,
    )
    return finish_row(setup, prompt, cset, attempt=attempt)


def finish_row(setup: _Setup, prompt: Prompt, cset: Any, *, attempt: int = 0) -> dict[str, Any]:
    """The steps after sampling: filters, the methods (fuse / select), the row. Raises when no candidate survives.

    Its own function so that an engine sampling in other processes (the Ray engine's per-teacher
    stages) makes the same row from the same candidates.
    """
    kept, report = filter_candidates(setup, prompt, cset)
    results = setup.aggregators.results(kept, setup.methods)
    return make_row(setup, prompt, cset, report, results, attempt=attempt)


def filter_candidates(setup: _Setup, prompt: Prompt, cset: Any) -> tuple[Any, dict[str, Any]]:
    """The candidates the filters keep, and their report. Raises when none survives (the row fails; a rerun retries it)."""
    kept, report = apply_filters(cset, prompt.text, setup.filters)
    if not kept.candidates:
        reasons = Counter(d["reason"].split(":")[0] for d in report["dropped"])
        raise SamplingError(f"filters dropped all {len(cset.candidates)} candidates ({dict(reasons)}); rerun to retry with fresh samples")
    return kept, report


def make_row(setup: _Setup, prompt: Prompt, cset: Any, report: Mapping[str, Any], results: Mapping[str, Any], *,
             attempt: int = 0) -> dict[str, Any]:
    """The row from the methods' results (``{method: MethodResult}``, in the setup's order). Raises when the answer is empty."""
    answer_from = FUSION if FUSION in results else BON  # the fused answer when fusion runs, else the selected one
    answer = results[answer_from].outputs.get(RESPONSE_FIELD)
    if not isinstance(answer, str) or not answer.strip():
        raise SamplingError(f"the {answer_from} answer is empty")
    return synth_row(
        messages=prompt.messages, answer=answer, answer_from=answer_from, cset=cset, results=results, filters=report,
        config=setup.config, attempt=attempt, source=prompt.where,
    )


def prompt_id(prompt: Prompt, config: Mapping[str, Any]) -> str:
    """The row id: a hash of the conversation and the configuration."""
    from fusion_dspy.records import record_id

    return record_id([dict(m) for m in prompt.messages], dict(config))
