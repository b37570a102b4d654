"""Scoring one configuration on the examples: shared candidates, cached aggregations, the task metric.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dspy

from fusion_dspy.adaptive import answer_key, replay
from fusion_dspy.aggregate import Aggregators, fusor_for, needs_of
from fusion_dspy.aggregate.adaptive import run_adaptive
from fusion_dspy.errors import SamplingError, is_endpoint_failure
from fusion_dspy.fuse import Fusor
from fusion_dspy.lm import fan_out
from fusion_dspy.select import LLMRater
from fusion_dspy.task import Task
from fusion_dspy.types import Usage

from ..cache import CandidateCache
from .models import Models, ResultCache
from .space import TrialConfig

logger = logging.getLogger(__name__)


@dataclass
class ConfigScore:
    """The outcome of one configuration on the examples evaluated so far."""

    scores: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    sampling: Usage = field(default_factory=Usage)
    aggregation: Usage = field(default_factory=Usage)
    fallbacks: int = 0
    failures: int = 0

    @property
    def metric(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else math.nan

    @property
    def tokens_per_example(self) -> float:
        return sum(self.tokens) / len(self.tokens) if self.tokens else math.nan


@dataclass
class SearchContext:
    """What every trial shares: the task, its examples, the models and the caches."""

    task: Task
    examples: Sequence[Any]
    models: Models
    candidates: CandidateCache
    results: ResultCache
    num_threads: int = 2
    batch_size: int | None = None
    seed: int = 0
    _fusors: dict[str, Fusor] = field(default_factory=dict)
    _raters: dict[str, LLMRater] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.program = self.task.program()
        # adaptive trials: the closed-form rule's key (the task's normaliser), else the free-form rule
        self.answer_key = answer_key(self.task.answer_field, self.task.normalize) if self.task.normalize is not None else None

    def aggregators(self, config: TrialConfig) -> Aggregators:
        """The registry's methods with the trial's aggregator model in the role its method needs."""
        name, needs = config.aggregator, needs_of(config.method)
        fusor = scorer = None
        if "fusor" in needs and name is not None:
            if name not in self._fusors:
                self._fusors[name] = fusor_for(self.program, lm=self.models.aggregator(name), seed=self.seed)
            fusor = self._fusors[name]
        if "scorer" in needs and name is not None:
            if name not in self._raters:
                self._raters[name] = LLMRater(lm=self.models.aggregator(name))
            scorer = self._raters[name]
        return Aggregators(fusor=fusor, scorer=scorer, task=self.task, seed=self.seed)


def _evaluate_example(ctx: SearchContext, config: TrialConfig, example: Any) -> tuple[float, int, Usage, Usage, bool, bool]:
    """(metric, tokens, sampling usage, aggregation usage, fell back, failed) for one example."""
    teachers = {name: ctx.models.teacher(name, config.temperature) for name in config.teachers}
    try:
        cset = ctx.candidates.pool_set(ctx.program, example, teachers, n=config.n, temperature=config.temperature)
    except SamplingError as exc:
        if is_endpoint_failure(exc):
            raise  # a server that did not answer says nothing about the configuration: the trial fails
        logger.warning("example %s: no usable candidate was sampled (%s); scored 0", example.get("id"), exc)
        return 0.0, 0, Usage(), Usage(), False, True
    trace = None
    if config.adaptive is not None:  # replayed on the cached pool: where the rounds would have stopped
        cset, trace = replay(cset, config.adaptive, key=ctx.answer_key, field=ctx.task.answer_field,
                             max_tokens=_max_tokens(next(iter(teachers.values()))))
    aggregator_lm = ctx.models.aggregator(config.aggregator) if config.aggregator else None
    key = ResultCache.key(config.method, aggregator_lm, cset, str(example.get("id")))
    agreed = trace is not None and trace.agreed
    result = None if agreed else ctx.results.get(key)
    if result is None:
        if agreed:  # the candidates agree: their answer, no aggregation call (nothing to cache)
            run = run_adaptive(ctx.aggregators(config).get(config.method), cset, trace, example=example).to_record()
        else:
            run = ctx.aggregators(config).run(cset, [config.method], example)[config.method]
        u = run["usage"]["aggregation"]
        result = {"outputs": run["outputs"], "fallback": run.get("fallback"),
                  "aggregation": {k: u[k] for k in ("prompt_tokens", "completion_tokens", "seconds", "calls")}}
        if not agreed:
            ctx.results.put(key, result)
    aggregation = Usage.from_dict(result["aggregation"])
    score = float(ctx.task.metric(example, dspy.Prediction(**result["outputs"])))
    tokens = cset.usage.total_tokens + aggregation.total_tokens
    return score, tokens, cset.usage, aggregation, bool(result.get("fallback")), False


def _max_tokens(lm: Any) -> int | None:
    return int((getattr(lm, "kwargs", None) or {}).get("max_tokens") or 0) or None


def evaluate_config(ctx: SearchContext, config: TrialConfig, *, on_batch: Any = None) -> ConfigScore:
    """Score ``config`` on the context's examples, batch by batch; ``on_batch(score, done)`` may raise to stop."""
    out = ConfigScore()
    examples = list(ctx.examples)
    size = ctx.batch_size or len(examples)
    for start in range(0, len(examples), size):
        batch = examples[start : start + size]
        rows = fan_out(lambda e: _evaluate_example(ctx, config, e), batch, max_workers=ctx.num_threads)
        for score, tokens, sampling, aggregation, fell_back, failed in rows:
            out.scores.append(score)
            out.tokens.append(tokens)
            out.sampling = out.sampling + sampling
            out.aggregation = out.aggregation + aggregation
            out.fallbacks += int(fell_back)
            out.failures += int(failed)
        if on_batch is not None:
            on_batch(out, len(out.scores))
    return out

