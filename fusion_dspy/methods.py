"""Every aggregation method applied to one candidate set, so all methods see the identical pool.

Used by ``eval`` (test-time scaling), ``synth`` (training data) and the optimizers. Methods:
``bon`` (Best-of-N with the rater or reward model), ``fusion``, ``oracle`` (Best-of-N scored by the
task metric against gold), ``majority`` (vote on the normalised answer). ``greedy`` is not an
aggregation (it is one temperature-0 sample) and is handled by :func:`greedy`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.fuse import Fusor
from fusion_dspy.select.best_of_n import CallableScorer, Scorer, select_best
from fusion_dspy.select.majority import majority_vote
from fusion_dspy.task import Task
from fusion_dspy.types import CandidateSet, Usage

AGGREGATION_METHODS = ("bon", "fusion", "oracle", "majority")
ALL_METHODS = ("greedy",) + AGGREGATION_METHODS


def check_methods(methods: Sequence[str], task: Task | None = None) -> tuple[str, ...]:
    """Validate method names (clear error listing the valid ones)."""
    methods = tuple(m.strip() for m in methods if m.strip())
    if not methods:
        raise ConfigurationError(f"no methods given; valid methods: {', '.join(ALL_METHODS)}")
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ConfigurationError(f"unknown method(s) {', '.join(unknown)}; valid methods: {', '.join(ALL_METHODS)}")
    if task is not None:
        if "oracle" in methods and not task.has_gold:
            raise ConfigurationError(f"task {task.name!r} has no gold answers, so 'oracle' is not available")
        if "majority" in methods and task.normalize is None:
            raise ConfigurationError(f"task {task.name!r} has no answer normaliser, so 'majority' is not available")
    return methods


@dataclass
class Aggregators:
    """The aggregators of a run.

    Attributes:
        fusor: fuses (needed for ``fusion``).
        scorer: scores for ``bon`` (an LLMRater or RewardModelScorer).
        task: gives the metric (``oracle``), the answer field and normaliser (``majority``).
        seed: seeds Best-of-N's scoring order and tie-breaking draw.
    """

    fusor: Fusor | None = None
    scorer: Scorer | None = None
    task: Task | None = None
    seed: int = 0

    def run(self, cset: CandidateSet, methods: Sequence[str], example: Any = None) -> dict[str, dict[str, Any]]:
        """Apply each aggregation method in ``methods`` (``greedy`` is skipped) to ``cset``."""
        results: dict[str, dict[str, Any]] = {}
        bon_scores = None
        for method in methods:
            if method == "greedy":
                continue
            started = time.perf_counter()
            if method == "bon":
                if self.scorer is None:
                    raise ConfigurationError("method 'bon' needs a scorer (rater LM or reward model)")
                sel = select_best(cset, self.scorer, seed=self.seed)
                bon_scores = sel.scores
                results[method] = _selection_result(sel, cset)
            elif method == "oracle":
                if self.task is None or example is None:
                    raise ConfigurationError("method 'oracle' needs the task and the gold example")
                metric, ex = self.task.metric, example
                oracle = CallableScorer(lambda _inputs, pred, metric=metric, ex=ex: metric(ex, pred), name="oracle")
                sel = select_best(cset, oracle, method="oracle", seed=self.seed)
                results[method] = _selection_result(sel, cset)
            elif method == "majority":
                if self.task is None or self.task.normalize is None:
                    raise ConfigurationError("method 'majority' needs a task with an answer normaliser")
                sel = majority_vote(cset, self.task.answer_field, self.task.normalize)
                results[method] = _selection_result(sel, cset)
            elif method == "fusion":
                if self.fusor is None:
                    raise ConfigurationError("method 'fusion' needs a fusor")
                language = _example_language(example)
                fusion = self.fusor(candidates=cset, fallback_scores=bon_scores, language=language)
                results[method] = {
                    "outputs": fusion.outputs,
                    "fallback": fusion.fallback,
                    "fusion": fusion.to_dict(),
                    "usage": Usage.breakdown(cset.usage, fusion.usage),
                }
            else:
                raise ConfigurationError(f"unknown method {method!r}; valid methods: {', '.join(ALL_METHODS)}")
            results[method]["seconds"] = round(time.perf_counter() - started, 4)
        return results


def _example_language(example: Any) -> str | None:
    """An example's ``language`` (a code such as ``de``; pairs such as ``en-de_DE`` give the target)."""
    language = getattr(example, "language", None) if example is not None else None
    if not isinstance(language, str) or not language.strip() or language == "-":
        return None
    return language.split("-", 1)[1] if "-" in language and "_" in language else language


def _selection_result(sel, cset: CandidateSet) -> dict[str, Any]:
    return {"outputs": sel.outputs, "fallback": sel.fallback, "selection": sel.to_dict(), "usage": Usage.breakdown(cset.usage, sel.usage)}


def greedy(program: Any, inputs: dict[str, Any], lm: Any) -> dict[str, Any]:
    """One temperature-0 answer of ``program`` (the no-sampling baseline), parsed leniently."""
    from fusion_dspy.sampling import sample_candidates

    cset = sample_candidates(program, inputs, lm=lm, n=1, temperature=0.0)
    only = cset.ok[0]
    return {"outputs": dict(only.outputs), "fallback": None, "parse": only.parse, "usage": Usage.breakdown(cset.usage, Usage())}
