"""The models a search may use, by name, and the aggregation results cached on disk.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.lm import Endpoint, Pool
from fusion_dspy.records import RecordStore, record_id
from fusion_dspy.types import CandidateSet

from ..cache import teacher_descriptor


class Models:
    """The LMs a search may use, by name: teachers sample, any model may fuse or rate.

    Args:
        lms: ``{name: dspy LM}`` (request defaults such as max_tokens already set).
        teachers: which of them are teachers (default: all).
        endpoints: ``{name: Endpoint}`` when the LMs come from endpoints (needed to write a pool YAML).
    """

    def __init__(self, lms: Mapping[str, Any], *, teachers: Sequence[str] | None = None, endpoints: Mapping[str, Endpoint] | None = None):
        if not lms:
            raise ConfigurationError("no models to search with")
        self.lms = dict(lms)
        self.names = tuple(self.lms)
        self.teachers = tuple(teachers) if teachers else self.names
        self.endpoints = dict(endpoints or {})
        self._copies: dict[tuple[str, float], Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_pool(cls, pool: Pool, *, max_tokens: int | None = None) -> Models:
        """Every endpoint of the pool except a reward model; DSPy's cache off so tokens are measured."""
        overrides: dict[str, Any] = {"cache": False}
        if max_tokens:
            overrides["max_tokens"] = max_tokens
        names = [n for n in pool.endpoints if n != pool.reward_model]
        order = list(pool.teachers) + [n for n in names if n not in pool.teachers]
        endpoints = {n: pool.endpoints[n].with_defaults(**({"max_tokens": max_tokens} if max_tokens else {})) for n in order}
        return cls({n: pool.endpoints[n].lm(**overrides) for n in order}, teachers=pool.teachers, endpoints=endpoints)

    def teacher(self, name: str, temperature: float) -> Any:
        with self._lock:
            key = (name, float(temperature))
            if key not in self._copies:
                self._copies[key] = self.lms[name].copy(temperature=float(temperature))
            return self._copies[key]

    def aggregator(self, name: str) -> Any:
        return self.lms[name]


class ResultCache:
    """Aggregation results on disk, keyed by method, aggregator and the exact candidate set.

    A repeated configuration then costs nothing, and reports the tokens it cost the first time.
    """

    def __init__(self, path: str | Path):
        self._store = RecordStore(path)
        self._results = {rec["id"]: rec["result"] for rec in self._store if isinstance(rec.get("result"), Mapping)}
        self._lock = threading.Lock()

    @staticmethod
    def key(method: str, aggregator: Any, cset: CandidateSet, example_id: str) -> str:
        who = teacher_descriptor(aggregator) if aggregator is not None else None
        pool = [(c.model, c.sample, c.outputs, c.error) for c in cset.candidates]
        return record_id("aggregation", method, who, example_id, pool)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._results.get(key)

    def put(self, key: str, result: Mapping[str, Any]) -> None:
        with self._lock:
            if key in self._results:
                return
            self._results[key] = dict(result)
            self._store.append({"id": key, "result": dict(result)})

