"""Running ``synth``: all prompts, on either engine (the steps of one prompt are in :mod:`fusion_dspy.synth.steps`).

The id of a row is a hash of the conversation and the configuration (teachers, methods,
temperature, max_tokens, samples, filters, instructions), so rerunning the same command skips
finished prompts; the loop is :func:`~fusion_dspy.records.run_items` (durable appends, bounded
concurrency, failures in ``synth.failed.jsonl`` retried on the next run, with fresh samples: the
rollout ids move on with each recorded failure). An output folder holds one configuration
(``synth.config.json``): a different configuration needs another folder, since one training set
with the same prompt answered twice under two configurations is rarely what anyone wants.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

from fusion_dspy.aggregate.registry import FUSION
from fusion_dspy.data import BadRows
from fusion_dspy.errors import ConfigurationError, DataError
from fusion_dspy.synth.filters import Filters
from fusion_dspy.synth.prompts import Prompt, read_prompts
from fusion_dspy.synth.rows import PARQUET_NAME, RECORDS_NAME, export_to_parquet
from fusion_dspy.synth.steps import (  # noqa: F401 - re-exported: their home before the Ray engine shared them
    DEFAULT_MAX_TOKENS,
    DEFAULT_SAMPLES,
    SYNTH_INSTRUCTION,
    SYNTH_METHODS,
    build_setup,
    check_synth_methods,
    finish_row,
    prompt_id,
    synth_program,
    synthesize_one,
)

logger = logging.getLogger(__name__)

CONFIG_NAME = "synth.config.json"
DEFAULT_CONCURRENCY = 4


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
    engine: str = "inprocess",
    ray: Any = None,
    ray_engines: Mapping[str, Any] | None = None,
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
        engine: ``inprocess`` (threads in this process) or ``ray`` (a Ray Data pipeline,
            ``docs/scale-out.md``); both write the same rows to the same file and resume each other.
        ray: the Ray engine's :class:`~fusion_dspy.records.ray_runner.RayOptions` (address,
            workers; its ``concurrency`` is ``concurrency``: prompts in flight per worker).
        ray_engines: with ``engine="ray"``, the teachers (and the fusor) run by vLLM engines inside
            the pipeline, ``{name: ray.data.llm processor config}``
            (:func:`fusion_dspy.serving.ray_llm.engines_for_pool`); the other teachers, the fusor
            when it is not among them, and the scorer are called over HTTP. Same rows, same ids.

    Example:
        >>> stats = synthesize("prompts.jsonl", "out", pool=load_pool("pool.yaml"), limit=100)  # doctest: +SKIP
    """
    from fusion_dspy.records import RecordStore, failures_path, lock_folder, run_items
    from fusion_dspy.records.shards import merge_shards

    if engine not in ("inprocess", "ray"):
        raise ConfigurationError(f"engine must be 'inprocess' or 'ray', got {engine!r}")
    if limit is not None and limit < 1:
        raise ConfigurationError(f"limit must be >= 1, got {limit}")
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
    settings = {"methods": methods, "samples_per_teacher": samples_per_teacher, "temperature": temperature, "max_tokens": max_tokens,
                "filters": filters}
    setup = build_setup(pool, **settings)
    if engine == "ray":
        from fusion_dspy.records.ray_runner import RayOptions, import_ray

        import_ray()  # fails now, with what to install, when Ray is missing
        ray = replace(ray or RayOptions(), concurrency=concurrency)
        from fusion_dspy.synth.ray_engine import check_engines

        check_engines(ray_engines or {}, pool, setup.aggregators.fusor)
    elif ray_engines:
        raise ConfigurationError("vLLM engines inside the pipeline (ray_engines, --ray-engines) need engine='ray' (--engine ray)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"--out {out} exists and is not a folder")
    with lock_folder(out):  # one run per folder: two would write the same rows
        merge_shards(out / RECORDS_NAME)  # rows a Ray run left in shards (its driver was killed) count as written
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

        if engine == "ray":
            from fusion_dspy.synth.ray_engine import run_synth_on_ray

            run = run_synth_on_ray(items(), store, pool=pool, settings=settings, config=setup.config, options=ray,
                                   engines=ray_engines, on_record=on_record, progress=progress, stop=stop)
            store = RecordStore(store.path)  # the rows the run merged in
        else:
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


