"""Tune only the fusor's instruction with DSPy's optimizers: GEPA, MIPROv2 (instructions only), COPRO.

The candidates are sampled once (and cached on disk by :class:`~fusion_dspy.optimizers.cache.CandidateCache`);
the program the optimizers see is :class:`CachedFusion`, whose only predictor is the fusor's
``fuse``, and which fuses the cached candidate set of its inputs. So every optimizer step pays only
for fusor calls, and the result is exactly a fusor state: it is saved as a :class:`FusionOfN` (DSPy's
``save``) that ``FusionOfN(program).load(path)`` reads back.

The optimizers tune on the train split; the before/after comparison is on the held-out split, which
no optimizer sees.

Why one file over 400 lines: it is one procedure read top to bottom (the cached program the
optimizers see, the feedback metric, the held-out evaluation, the tuning run); every part is used
only by the next, so split files would only send the reader back and forth.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dspy

from fusion_dspy.aggregate import FusionAggregator, FusionOfN
from fusion_dspy.errors import ConfigurationError
from fusion_dspy.fuse import Fusor
from fusion_dspy.lm import fan_out
from fusion_dspy.records import record_id
from fusion_dspy.sampling import task_signature
from fusion_dspy.task import Task
from fusion_dspy.types import CandidateSet, Usage, json_text

from .cache import CandidateCache

logger = logging.getLogger(__name__)

__all__ = [
    "OPTIMIZERS",
    "CachedFusion",
    "FusorScore",
    "TuningResult",
    "evaluate_fusor",
    "feedback_metric",
    "tune_instruction",
]

Optimizer = Literal["gepa", "miprov2", "copro"]
OPTIMIZERS: tuple[str, ...] = ("gepa", "miprov2", "copro")
AUTO_BUDGETS = ("light", "medium", "heavy")
# COPRO has no auto mode: (breadth, depth) per named budget.
_COPRO_BUDGETS = {"light": (3, 1), "medium": (6, 2), "heavy": (10, 3)}
# Label fields that hold the reference answer, tried in order after the task's answer field.
_GOLD_FIELDS = ("answer", "target", "reference", "answer_list", "answers")


class _Shared:
    """Read-only state shared by every copy of a :class:`CachedFusion` (optimizers deep-copy programs)."""

    def __init__(self, sets: Mapping[str, CandidateSet], lm: Any):
        self.sets = dict(sets)
        self.lm = lm

    def __deepcopy__(self, memo: dict) -> _Shared:
        return self


def inputs_key(inputs: Mapping[str, Any], input_fields: Sequence[str]) -> str:
    """The lookup key of an example's cached candidate set: a hash of its task inputs."""
    return record_id({k: inputs.get(k) for k in input_fields})


class CachedFusion(dspy.Module):
    """The program instruction optimizers tune: fuse the cached candidate set of the given inputs.

    Its only predictor is ``fusor.fuse`` (the same name it has in :class:`FusionOfN`), so a state
    saved from it, or copied into a FusionOfN, carries the tuned instruction.

    Args:
        task_signature: the wrapped program's signature.
        candidate_sets: ``{inputs_key(inputs): CandidateSet}`` for every example it will see.
        fusor_lm: the fusor LM.
        instruction: the starting instruction (default: the library's fusion instruction).
        seed: seeds the shuffling of the candidates shown to the fusor.
    """

    def __init__(
        self,
        task_signature: type[dspy.Signature],
        candidate_sets: Mapping[str, CandidateSet],
        fusor_lm: Any,
        *,
        instruction: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.fusor = Fusor(task_signature, instruction=instruction, seed=seed)
        self._shared = _Shared(candidate_sets, fusor_lm)
        self._input_fields = tuple(task_signature.input_fields)

    @property
    def instruction(self) -> str:
        return self.fusor.instruction

    def forward(self, **inputs: Any) -> dspy.Prediction:
        key = inputs_key(inputs, self._input_fields)
        cset = self._shared.sets.get(key)
        if cset is None:
            raise ConfigurationError("no cached candidate set for these inputs; CachedFusion only answers the examples it was built with")
        with dspy.context(lm=self._shared.lm):
            fusion = FusionAggregator(self.fusor).run(cset).outcome
        return dspy.Prediction(**fusion.outputs, fusion=fusion, fallback=fusion.fallback, usage=fusion.usage)


# --------------------------------------------------------------------------------------------------
# metrics


def _gold(task: Task, example: Any) -> Any:
    labels = example.labels() if hasattr(example, "labels") else example
    for name in (task.answer_field, *_GOLD_FIELDS):
        value = labels.get(name) if hasattr(labels, "get") else None
        if value is not None:
            return value
    return None


def _short(value: Any, limit: int = 300) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def feedback_metric(task: Task) -> Callable[..., dspy.Prediction]:
    """GEPA's metric for ``task``: the task's score plus a sentence saying what went wrong.

    MGSM gives ``expected 42, got 41``; tasks without a normaliser compare the reference text; a
    fused answer that had to fall back to a candidate says so. A task may provide its own
    ``extras["feedback"](example, prediction, score) -> str``.
    """
    custom = task.extras.get("feedback") if task.extras else None

    def metric(gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None) -> dspy.Prediction:
        score = float(task.metric(gold, pred))
        if custom is not None:
            return dspy.Prediction(score=score, feedback=str(custom(gold, pred, score)))
        parts = []
        expected = _gold(task, gold)
        got = pred.get(task.answer_field) if hasattr(pred, "get") else None
        if task.normalize is not None:
            try:
                got_key = task.normalize(pred)
            except Exception:  # noqa: BLE001 - a prediction the normaliser cannot read counts as no answer
                got_key = None
            verdict = "correct" if score >= 1.0 else "wrong"
            parts.append(f"{verdict}: expected {_short(expected)}, got {got_key if got_key is not None else 'no usable answer'}.")
        else:
            parts.append(f"score {score:.2f} (1.0 is best).")
            if expected is not None:
                parts.append(f"Reference: {_short(expected)}")
            parts.append(f"Fused answer: {_short(got)}")
        if getattr(pred, "fallback", None):
            parts.append(
                "The fusor's output was unusable, so a candidate was returned instead: "
                "the instruction should make the output format easier to follow."
            )
        return dspy.Prediction(score=score, feedback=" ".join(parts))

    return metric


# --------------------------------------------------------------------------------------------------
# evaluation


@dataclass(frozen=True)
class FusorScore:
    """How a fusor instruction does on a split.

    Attributes:
        metric: mean task metric.
        scores: per-example metric, in the split's order.
        fusor_usage: tokens and calls of the fusor over the split.
        sampling_usage: tokens of the (cached) candidates it fused, as first spent.
        fallbacks: examples where the fusor's output was unusable and a candidate was returned.
    """

    metric: float
    scores: tuple[float, ...]
    fusor_usage: Usage
    sampling_usage: Usage
    fallbacks: int

    def to_dict(self) -> dict[str, Any]:
        n = max(1, len(self.scores))
        return {
            "metric": self.metric,
            "scores": list(self.scores),
            "fusor_usage": self.fusor_usage.to_dict(),
            "sampling_usage": self.sampling_usage.to_dict(),
            "fusor_tokens_per_example": self.fusor_usage.total_tokens / n,
            "total_tokens_per_example": (self.fusor_usage.total_tokens + self.sampling_usage.total_tokens) / n,
            "fallbacks": self.fallbacks,
        }


def evaluate_fusor(program: CachedFusion, examples: Sequence[Any], metric: Callable[..., float], *, num_threads: int = 1) -> FusorScore:
    """Score ``program`` on ``examples`` with the task metric, counting the fusor's tokens."""

    def one(example: Any) -> tuple[float, Usage, Usage, bool]:
        pred = program(**example.inputs())
        cset = program._shared.sets[inputs_key(example.inputs(), program._input_fields)]
        return float(metric(example, pred)), pred.usage, cset.usage, bool(pred.fallback)

    results = fan_out(one, examples, max_workers=num_threads)
    scores = tuple(r[0] for r in results)
    fusor = sum((r[1] for r in results), Usage())
    sampling = sum((r[2] for r in results), Usage())
    mean = sum(scores) / len(scores) if scores else math.nan
    return FusorScore(mean, scores, fusor, sampling, sum(r[3] for r in results))


# --------------------------------------------------------------------------------------------------
# tuning


@dataclass
class TuningResult:
    """The outcome of :func:`tune_instruction`.

    Attributes:
        optimizer: ``gepa``, ``miprov2`` or ``copro``.
        before, after: the default and the tuned instruction's scores on the held-out split.
        instruction_before, instruction_after: the fusor instruction before and after tuning.
        program: the tuned :class:`FusionOfN` (wrapping the task's program, fusor state tuned).
        optimizer_usage: tokens the optimizer spent (fusor calls on train and proposer calls).
        seconds: wall time of the optimization step.
        saved: the path of the saved FusionOfN state, when saved.
    """

    optimizer: str
    before: FusorScore
    after: FusorScore
    instruction_before: str
    instruction_after: str
    program: FusionOfN
    optimizer_usage: Usage
    seconds: float
    train_size: int
    val_size: int
    budget: str | int
    saved: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.instruction_after != self.instruction_before

    def to_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "budget": self.budget,
            "train_size": self.train_size,
            "val_size": self.val_size,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "instruction_before": self.instruction_before,
            "instruction_after": self.instruction_after,
            "instruction_changed": self.changed,
            "optimizer_usage": self.optimizer_usage.to_dict(),
            "seconds": round(self.seconds, 2),
            "saved": str(self.saved) if self.saved else None,
            **self.extras,
        }


def check_budget(optimizer: str, budget: str | int) -> str | int:
    """Validate ``budget``: ``light``/``medium``/``heavy`` or a positive integer (meaning per optimizer)."""
    if optimizer not in OPTIMIZERS:
        raise ConfigurationError(f"unknown optimizer {optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    if isinstance(budget, str):
        text = budget.strip().lower()
        if text in AUTO_BUDGETS:
            return text
        if text.isdigit():
            budget = int(text)
        else:
            raise ConfigurationError(f"budget must be one of {', '.join(AUTO_BUDGETS)} or a positive integer, got {budget!r}")
    if not isinstance(budget, int) or budget < 1:
        raise ConfigurationError(f"budget must be one of {', '.join(AUTO_BUDGETS)} or a positive integer, got {budget!r}")
    if optimizer == "copro" and budget < 2:
        raise ConfigurationError("copro's budget (breadth: candidate instructions per round) must be >= 2")
    return budget


def candidate_sets(
    task: Task,
    examples: Sequence[Any],
    cache: CandidateCache,
    teachers: Mapping[str, Any],
    *,
    n: int,
    temperature: float,
    num_threads: int = 1,
) -> dict[str, CandidateSet]:
    """The cached candidate set of every example (sampled only where the cache lacks samples)."""
    program = task.program()
    fields = tuple(task_signature(program).input_fields)

    def one(example: Any) -> tuple[str, CandidateSet]:
        return inputs_key(example.inputs(), fields), cache.pool_set(program, example, teachers, n=n, temperature=temperature)

    return dict(fan_out(one, examples, max_workers=num_threads))


def tune_instruction(
    task: Task,
    trainset: Sequence[Any],
    valset: Sequence[Any],
    *,
    teachers: Mapping[str, Any],
    fusor_lm: Any,
    proposer_lm: Any,
    cache: CandidateCache,
    optimizer: Optimizer = "gepa",
    budget: str | int = "light",
    n: int = 4,
    temperature: float = 0.7,
    num_threads: int = 1,
    seed: int = 0,
    out_dir: str | Path | None = None,
) -> TuningResult:
    """Tune the fusor instruction of ``task`` on ``trainset``; compare before/after on ``valset``.

    Args:
        teachers: ``{name: LM}`` that produce the candidates (``n`` samples each).
        fusor_lm: the fusor LM (what the tuned instruction is for).
        proposer_lm: the LM that proposes instructions (GEPA's reflection LM, MIPROv2's and COPRO's
            prompt model); a strong model at a high temperature works best.
        cache: where candidate pools are cached.
        budget: ``light``/``medium``/``heavy``, or an integer: GEPA's ``max_metric_calls``, MIPROv2's
            number of instruction candidates (and trials), COPRO's breadth (depth 1).
        out_dir: where to save ``fusion_of_n.json`` (the tuned FusionOfN) and ``result.json``.

    Raises:
        ConfigurationError: bad optimizer, budget or splits (before any model call).
    """
    budget = check_budget(optimizer, budget)
    if not trainset:
        raise ConfigurationError("the train split is empty: give --train K with K >= 1")
    if not valset:
        raise ConfigurationError("the held-out split is empty: give --val K with K >= 1")
    program = task.program()
    signature = task_signature(program)

    logger.info("sampling (or reading cached) candidates for %d train + %d held-out examples", len(trainset), len(valset))
    sets = candidate_sets(task, list(trainset) + list(valset), cache, teachers, n=n, temperature=temperature, num_threads=num_threads)
    student = CachedFusion(signature, sets, fusor_lm, seed=seed)
    instruction_before = student.instruction
    before = evaluate_fusor(student, valset, task.metric, num_threads=num_threads)
    logger.info("held-out metric before tuning: %.4f", before.metric)

    started = time.perf_counter()
    with dspy.track_usage() as tracker, dspy.context(lm=fusor_lm):
        tuned = _run_optimizer(optimizer, budget, task, student, list(trainset), proposer_lm, fusor_lm, num_threads, seed)
    seconds = time.perf_counter() - started
    optimizer_usage = Usage.from_lm_usage(tracker.get_total_tokens(), seconds=seconds)
    if not isinstance(tuned, CachedFusion):
        raise ConfigurationError(f"{optimizer} returned a {type(tuned).__name__}, not the tuned program")
    after = evaluate_fusor(tuned, valset, task.metric, num_threads=num_threads)
    logger.info("held-out metric after tuning: %.4f", after.metric)

    fused = FusionOfN(task.program(), n=n, seed=seed)
    fused.fusor.fuse.load_state(tuned.fusor.fuse.dump_state())
    result = TuningResult(
        optimizer=optimizer,
        before=before,
        after=after,
        instruction_before=instruction_before,
        instruction_after=tuned.instruction,
        program=fused,
        optimizer_usage=optimizer_usage,
        seconds=seconds,
        train_size=len(trainset),
        val_size=len(valset),
        budget=budget,
        extras={"task": task.name, "n": n, "temperature": temperature, "teachers": list(teachers)},
    )
    if out_dir is not None:
        save_result(result, out_dir)
    return result


def save_result(result: TuningResult, out_dir: str | Path) -> Path:
    """Write ``fusion_of_n.json`` (DSPy state of the tuned FusionOfN) and ``result.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "fusion_of_n.json"
    result.program.save(str(path))
    result.saved = path
    (out / "result.json").write_text(json_text(result.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def _run_optimizer(
    optimizer: str,
    budget: str | int,
    task: Task,
    student: CachedFusion,
    trainset: list[Any],
    proposer_lm: Any,
    fusor_lm: Any,
    num_threads: int,
    seed: int,
) -> Any:
    from dspy.teleprompt import COPRO, GEPA, MIPROv2

    if optimizer == "gepa":
        kwargs: dict[str, Any] = {"auto": budget} if isinstance(budget, str) else {"max_metric_calls": budget}
        gepa = GEPA(
            metric=feedback_metric(task),
            reflection_lm=proposer_lm,
            reflection_minibatch_size=min(3, len(trainset)),
            num_threads=num_threads,
            use_merge=False,
            seed=seed,
            **kwargs,
        )
        # The train split is also GEPA's Pareto set: the held-out split stays unseen until the end.
        return gepa.compile(student, trainset=trainset, valset=trainset)
    if optimizer == "miprov2":
        if isinstance(budget, str):
            mipro = MIPROv2(metric=task.metric, prompt_model=proposer_lm, task_model=fusor_lm, auto=budget,
                            max_bootstrapped_demos=0, max_labeled_demos=0, num_threads=num_threads, seed=seed, verbose=False)
            return mipro.compile(student, trainset=trainset, valset=trainset, minibatch=len(trainset) > 35)
        mipro = MIPROv2(metric=task.metric, prompt_model=proposer_lm, task_model=fusor_lm, auto=None, num_candidates=budget,
                        max_bootstrapped_demos=0, max_labeled_demos=0, num_threads=num_threads, seed=seed, verbose=False)
        return mipro.compile(student, trainset=trainset, valset=trainset, num_trials=budget, minibatch=len(trainset) > 35)
    breadth, depth = _COPRO_BUDGETS[budget] if isinstance(budget, str) else (budget, 1)
    copro = COPRO(prompt_model=proposer_lm, metric=task.metric, breadth=breadth, depth=depth, init_temperature=1.0)
    return copro.compile(student, trainset=trainset, eval_kwargs={"num_threads": num_threads, "display_progress": False})


def split_examples(examples: Sequence[Any], train: int, val: int) -> tuple[list[Any], list[Any]]:
    """The first ``train`` examples for tuning, the next ``val`` held out (errors if too few)."""
    if train < 1 or val < 1:
        raise ConfigurationError(f"--train and --val must be >= 1, got {train} and {val}")
    if len(examples) < train + val:
        raise ConfigurationError(f"the data has {len(examples)} examples; --train {train} + --val {val} need {train + val}")
    return list(examples[:train]), list(examples[train : train + val])

