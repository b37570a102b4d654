"""Candidate pools sampled once and kept on disk, so optimizers pay only for aggregation.

One pool per (task, example, teacher, temperature, max_tokens) is stored in a
:class:`~fusion_dspy.records.RecordStore` (append-only JSONL). Each record holds the pool of one teacher
at some size; the largest record of a key wins. A request for ``n`` samples of a teacher reuses the
first ``n`` of the cached pool when it is large enough, and otherwise draws only the missing samples
(fresh rollout ids, so they are new samples, not cache hits) and stores the extended pool. A pool of
several teachers is the concatenation of each teacher's first ``n`` samples, so a trial with a
smaller ``n`` or fewer teachers reuses the samples of a larger one.

Teachers are identified by their endpoint name, LiteLLM model string and request defaults (not by the
URL they are served at: the embedded model gets a new port on every run, and the same model served
elsewhere draws the same distribution).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fusion_dspy.errors import ConfigurationError, EndpointSamplingError
from fusion_dspy.lm import lm_name
from fusion_dspy.records import RecordStore, record_id
from fusion_dspy.sampling import ENDPOINT_FAILURE_MARK, sample_candidates
from fusion_dspy.types import Candidate, CandidateSet, Usage

logger = logging.getLogger(__name__)

__all__ = ["CandidateCache", "combine", "teacher_descriptor"]

# Request settings that are part of the cache key separately (temperature, max_tokens) or that do
# not change what is sampled (transport, caching, rollout ids).
_NOT_IDENTITY = {"temperature", "max_tokens", "max_completion_tokens", "rollout_id", "cache", "api_key", "api_base", "num_retries", "timeout", "n"}


def teacher_descriptor(lm: Any) -> dict[str, Any]:
    """What identifies a teacher's samples: name, model string and request defaults (no URL, no key)."""
    kwargs = dict(getattr(lm, "kwargs", {}) or {})
    return {
        "name": lm_name(lm),
        "model": getattr(lm, "model", None),
        "defaults": {k: v for k, v in sorted(kwargs.items()) if k not in _NOT_IDENTITY},
    }


def _max_tokens(lm: Any) -> int | None:
    kwargs = getattr(lm, "kwargs", {}) or {}
    return kwargs.get("max_tokens") or kwargs.get("max_completion_tokens")


def combine(sets: list[CandidateSet]) -> CandidateSet:
    """One candidate set from several (same inputs), candidates renumbered in order."""
    if not sets:
        raise ConfigurationError("no candidate sets to combine")
    candidates: list[Candidate] = []
    usage = Usage()
    for cset in sets:
        for c in cset.candidates:
            candidates.append(Candidate(len(candidates), c.model, c.sample, c.outputs, c.usage, c.error, c.raw, c.parse))
        usage = usage + cset.usage
    return CandidateSet(dict(sets[0].inputs), tuple(candidates), sets[0].output_fields, usage)


class CandidateCache:
    """Per-teacher candidate pools on disk, grown on demand.

    Args:
        path: the JSONL file of the pools (created when missing).
        task_name: part of every key (two tasks never share pools).

    Example:
        >>> cache = CandidateCache("runs/candidates.jsonl", task_name="mgsm")   # doctest: +SKIP
        >>> cset = cache.pool_set(program, example, {"qwen": qwen_lm}, n=4, temperature=0.7)  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], *, task_name: str):
        self.path = Path(path)
        self.task_name = task_name
        self._store = RecordStore(self.path)
        self._pools: dict[str, CandidateSet] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self.drawn = Usage()  # what this process actually spent on fresh samples
        for rec in self._store:
            key, cset = rec.get("key"), rec.get("cset")
            if not isinstance(key, str) or not isinstance(cset, Mapping):
                continue
            pool = CandidateSet.from_dict(cset)
            if key not in self._pools or len(pool.candidates) > len(self._pools[key].candidates):
                self._pools[key] = pool

    def key(self, example_id: str, lm: Any, temperature: float) -> str:
        """The cache key of one teacher's pool for one example."""
        return record_id("candidates", self.task_name, str(example_id), teacher_descriptor(lm), float(temperature), _max_tokens(lm))

    def cached_size(self, example_id: str, lm: Any, temperature: float) -> int:
        pool = self._pools.get(self.key(example_id, lm, temperature))
        return 0 if pool is None else len(pool.candidates)

    def teacher_set(self, program: Any, example: Any, name: str, lm: Any, *, n: int, temperature: float) -> CandidateSet:
        """The first ``n`` samples of teacher ``name`` for ``example``, drawing only what is missing."""
        if n < 1:
            raise ConfigurationError(f"n must be >= 1, got {n}")
        example_id = _example_id(example)
        key = self.key(example_id, lm, temperature)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            pool = self._pools.get(key)
            have = 0 if pool is None else len(pool.candidates)
            if have >= n:
                return pool.first(n)  # type: ignore[union-attr]
            inputs = dict(example.inputs()) if hasattr(example, "inputs") else dict(example)
            logger.info("sampling %d more candidate(s) of %s for %s (cached: %d)", n - have, name, example_id, have)
            fresh = sample_candidates(
                program, inputs, pool={name: lm}, samples_per_model=n - have, temperature=temperature, rollout_offset=have,
            )
            self.drawn = self.drawn + fresh.usage
            down = [c for c in fresh.candidates if c.error and c.error.startswith(ENDPOINT_FAILURE_MARK)]
            if down:  # never cache an outage: the samples would stand in for the model's answers for ever
                raise EndpointSamplingError(f"{len(down)} of {len(fresh.candidates)} samples of {name} failed because the server "
                                            f"did not answer ({down[0].error})", endpoint=name)
            shifted = [Candidate(c.index, c.model, have + c.sample, c.outputs, c.usage, c.error, c.raw, c.parse) for c in fresh.candidates]
            grown = combine([pool, CandidateSet(fresh.inputs, tuple(shifted), fresh.output_fields, fresh.usage)] if pool else [fresh])
            grown = CandidateSet(grown.inputs, grown.candidates, grown.output_fields, sum((c.usage for c in grown.candidates), Usage()))
            self._store.append(
                {
                    "id": record_id(key, len(grown.candidates)),
                    "key": key,
                    "size": len(grown.candidates),
                    "task": self.task_name,
                    "example_id": example_id,
                    "teacher": teacher_descriptor(lm),
                    "temperature": float(temperature),
                    "max_tokens": _max_tokens(lm),
                    "cset": grown.to_dict(),
                }
            )
            self._pools[key] = grown
            return grown.first(n)

    def pool_set(self, program: Any, example: Any, teachers: Mapping[str, Any], *, n: int, temperature: float) -> CandidateSet:
        """``n`` samples of every teacher (in the given order), as one candidate set."""
        if not teachers:
            raise ConfigurationError("no teachers: give at least one")
        sets = [self.teacher_set(program, example, name, lm, n=n, temperature=temperature) for name, lm in teachers.items()]
        return combine(sets)


def _example_id(example: Any) -> str:
    rid = example.get("id") if hasattr(example, "get") else None
    if rid is None:
        inputs = dict(example.inputs()) if hasattr(example, "inputs") else dict(example)
        rid = record_id(inputs)
    return str(rid)
