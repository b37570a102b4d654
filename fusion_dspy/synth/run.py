"""Running ``synth``: the setup (program, teachers, methods, the configuration in every id), one prompt, all prompts.

The id of a row is a hash of the conversation and the configuration (teachers, methods,
temperature, max_tokens, samples, filters, instructions), so rerunning the same command skips
finished prompts; the loop is :func:`~fusion_dspy.records.run_items` (durable appends, bounded
concurrency, failures in ``synth.failed.jsonl`` retried on the next run, with fresh samples: the
rollout ids move on with each recorded failure). An output folder holds one configuration
(``synth.config.json``): a different configuration needs another folder, since one training set
with the same prompt answered twice under two configurations is rarely what anyone wants.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from fusion_dspy.aggregate.registry import BON, FUSION, available_methods, check_methods, method_order
from fusion_dspy.data import BadRows
from fusion_dspy.errors import ConfigurationError, DataError, SamplingError
from fusion_dspy.sampling import DEFAULT_N
from fusion_dspy.synth.filters import Filters, apply_filters, check_filters
from fusion_dspy.synth.prompts import Prompt, read_prompts
from fusion_dspy.synth.rows import PARQUET_NAME, RECORDS_NAME, RESPONSE_FIELD, export_to_parquet, synth_row

logger = logging.getLogger(__name__)

SYNTH_INSTRUCTION = (
    "You are a helpful, honest and harmless assistant. Answer the user's prompt fully and "
    "accurately, in the language of the prompt. Follow its instructions, give the relevant "
    "information clearly, and refuse only what would be harmful."
)
# open-ended prompts have no gold answers and no answer normaliser: the methods that need neither
SYNTH_METHODS = available_methods(None, baselines=False, deployable_only=True)
CONFIG_NAME = "synth.config.json"
DEFAULT_MAX_TOKENS = 512
DEFAULT_CONCURRENCY = 4
DEFAULT_SAMPLES = DEFAULT_N  # one model without a pool file: the paper's five candidates per prompt

@dataclass
class SynthStats:
    """What a synth run did."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    duplicates: int = 0
    bad_rows: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    completion_tokens: int = 0
    records_path: str = ""
    parquet_path: str | None = None
    failures: list[str] = field(default_factory=list)
    bad_row_examples: list[str] = field(default_factory=list)

    @property
    def completion_tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "done": self.done, "skipped": self.skipped, "failed": self.failed, "duplicates": self.duplicates,
            "bad_rows": self.bad_rows, "interrupted": self.interrupted, "seconds": round(self.seconds, 2),
            "completion_tokens": self.completion_tokens,
            "completion_tokens_per_second": round(self.completion_tokens_per_second, 2),
            "records": self.records_path, "parquet": self.parquet_path,
            "failures": self.failures[:20], "bad_row_examples": self.bad_row_examples[:20],
        }


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
    kept, report = apply_filters(cset, prompt.text, setup.filters)
    if not kept.candidates:
        reasons = Counter(d["reason"].split(":")[0] for d in report["dropped"])
        raise SamplingError(f"filters dropped all {len(cset.candidates)} candidates ({dict(reasons)}); rerun to retry with fresh samples")
    results = setup.aggregators.results(kept, setup.methods)

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


def _prior_failures(path: Path) -> Counter:
    counts: Counter = Counter()
    if not path.exists():
        return counts
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            try:
                counts[json.loads(line)["id"]] += 1
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a half-written line of a killed run
    return counts


def synthesize(
    prompts_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    pool: Any,
    limit: int | None = None,
    methods: Sequence[str] = (FUSION,),
    samples_per_teacher: int | None = None,
    temperature: float | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    concurrency: int = DEFAULT_CONCURRENCY,
    filters: Filters | None = None,
    prompt_field: str = "prompt",
    skip_bad_rows: bool = False,
    export_parquet: bool = False,
    progress: Any = None,
    stop: threading.Event | None = None,
) -> SynthStats:
    """Synthesise one training row per prompt into ``out_dir/synth.jsonl``; resumable.

    Args:
        prompts_path: JSONL (``prompt`` a string or a list of chat messages), parquet, or a folder
            saved with ``datasets``.
        pool: the teachers and roles (:func:`~fusion_dspy.lm.endpoints.load_pool`).
        limit: only the first ``limit`` prompts of the input.
        methods: ``fusion`` and/or ``bon`` (on the same candidates); the answer is the fused one
            when fusion runs, else the selected one.
        samples_per_teacher: overrides the pool's ``samples_per_teacher``.
        temperature: overrides the pool's teacher temperature (default 0.3).
        max_tokens: completion limit of every teacher sample (the fusor gets twice as much).
        concurrency: prompts in flight at once (each sends ``teachers x samples`` requests).
        filters: language / minimum-length filters before aggregation.
        skip_bad_rows: count and skip malformed prompt rows instead of stopping.
        export_parquet: also write ``out_dir/synth.parquet`` (through ``datasets``) at the end.

    Example:
        >>> stats = synthesize("prompts.jsonl", "out", pool=load_pool("pool.yaml"), limit=100)  # doctest: +SKIP
    """
    from fusion_dspy.records import RecordStore, failures_path, lock_folder, run_items

    if limit is not None and limit < 1:
        raise ConfigurationError(f"limit must be >= 1, got {limit}")
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
    setup = build_setup(
        pool, methods=methods, samples_per_teacher=samples_per_teacher, temperature=temperature, max_tokens=max_tokens, filters=filters
    )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"--out {out} exists and is not a folder")
    with lock_folder(out):  # one run per folder: two would write the same rows
        store = RecordStore(out / RECORDS_NAME)
        _claim_folder(out, store, setup.config)
        setup.prior_failures = _prior_failures(failures_path(store))
        bad = BadRows()
        stats = SynthStats(records_path=str(store.path))
        prompts = read_prompts(prompts_path, field_name=prompt_field, skip_bad_rows=skip_bad_rows, bad_rows=bad)
        first = next(prompts, None)  # bad input fails before any model call
        if first is None:
            raise DataError("no usable prompts", path=str(prompts_path))

        _import_litellm()
        seen: set[str] = set()

        def items() -> Iterator[tuple[str, tuple[Prompt, int]]]:
            for prompt in islice(_chain(first, prompts), limit):
                rid = prompt_id(prompt, setup.config)
                if rid in seen:
                    stats.duplicates += 1
                    logger.info("%s: same prompt as an earlier row; skipped", prompt.where)
                    continue
                seen.add(rid)
                yield rid, (prompt, setup.prior_failures.get(rid, 0))

        def on_record(record: dict[str, Any]) -> None:
            stats.completion_tokens += int(record["usage"]["total"]["completion_tokens"])

        run = run_items(
            items(), lambda payload: synthesize_one(setup, payload[0], attempt=payload[1]), store,
            concurrency=concurrency, on_record=on_record, progress=progress, stop=stop,
        )
        stats.done, stats.skipped, stats.failed = run.done, run.skipped, run.failed
        stats.interrupted, stats.seconds, stats.failures = run.interrupted, run.seconds, run.failures
        stats.bad_rows, stats.bad_row_examples = bad.count, bad.examples
        if export_parquet and not stats.interrupted:
            stats.parquet_path = str(export_to_parquet(store.path, out / PARQUET_NAME))
        logger.info("synth: %s", stats.to_dict())
        return stats


def _import_litellm() -> None:
    """Import LiteLLM before the worker threads do: concurrent first imports of litellm fail with
    "partially initialized module 'litellm'" (seen when a resumed run starts several prompts at once)."""
    import litellm  # noqa: F401


def _claim_folder(out: Path, store: Any, config: Mapping[str, Any]) -> None:
    """Record the folder's configuration, or refuse a different one (see the module docstring)."""
    path = out / CONFIG_NAME
    current = json.loads(json.dumps(config))
    stored = None
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{path} is not valid JSON ({exc.msg}); delete it only if {store.path} is empty") from None
    elif len(store):
        stored = next(iter(store)).get("config")
    if stored is not None and stored != current:
        keys = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        changes = "; ".join(f"{k}: {json.dumps(stored.get(k))} -> {json.dumps(current.get(k))}" for k in keys)
        raise ConfigurationError(
            f"{out} holds rows made with another configuration ({changes}); "
            "use another --out folder for this configuration, or the earlier settings to resume"
        )
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(current, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def _chain(first: Prompt, rest: Iterator[Prompt]) -> Iterator[Prompt]:
    yield first
    yield from rest


