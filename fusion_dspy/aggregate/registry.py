"""Every aggregation method, by name: the one module where a method is defined.

A method is one class with a ``name``, what it ``needs`` (a scorer, a fusor, gold labels, an answer
normaliser) and ``run(candidate_set) -> MethodResult``; :data:`AGGREGATORS` maps each name to its
class, as inspect_ai's scorer and reducer registries map a name to an object. ``FusionOfN`` and
``BestOfN``, ``eval``, ``synth``, ``demo`` and ``optimize`` all aggregate through these classes, so
what the harness measures is what users import. Other modules refer to the names through the
constants below (:data:`BON`, :data:`FUSION`, ...), never by spelling them.

``greedy`` is not an aggregation (it is one temperature-0 sample, the no-sampling baseline): it is a
name of :data:`BASELINES` and runs through :func:`run_greedy`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.task import Task
from fusion_dspy.types import CandidateSet, Fusion, Selection, Usage

if TYPE_CHECKING:  # the implementations import DSPy; they load when a method runs, so the names stay cheap to import
    from fusion_dspy.fuse import Fusor
    from fusion_dspy.select.scoring import Scorer

GREEDY = "greedy"
BON = "bon"
FUSION = "fusion"
MAJORITY = "majority"
ORACLE = "oracle"

Need = Literal["scorer", "fusor", "gold", "normalizer"]
#: what each need is, for error messages ("needs ...", "the task has no ...")
NEED_TEXT: dict[str, tuple[str, str]] = {
    "scorer": ("a scorer (rater LM, reward model or callable)", "scorer"),
    "fusor": ("a fusor", "fusor"),
    "gold": ("a task with gold answers and the gold example", "gold answers"),
    "normalizer": ("a task with an answer normaliser", "answer normaliser"),
}


@dataclass(frozen=True)
class MethodResult:
    """What one method made of one candidate set.

    Attributes:
        method: the method's name.
        outcome: a :class:`~fusion_dspy.types.Selection` or a :class:`~fusion_dspy.types.Fusion`.
        usage: ``sampling`` / ``aggregation`` / ``total`` (:meth:`Usage.breakdown`).
        seconds: wall time of the aggregation.
    """

    method: str
    outcome: Selection | Fusion
    usage: dict[str, dict[str, Any]]
    seconds: float
    adaptive: dict[str, Any] | None = None  # rounds, samples, stop reason, tokens saved (adaptive sampling only)

    @property
    def outputs(self) -> dict[str, Any]:
        return self.outcome.outputs

    @property
    def fallback(self) -> str | None:
        return self.outcome.fallback

    @property
    def detail_key(self) -> str:
        """The key the outcome's details go under in a record: ``fusion`` or ``selection``."""
        return FUSION if isinstance(self.outcome, Fusion) else "selection"

    def to_record(self) -> dict[str, Any]:
        """The JSON form written in records (outputs, fallback, the outcome's details, usage, seconds)."""
        record = {
            "outputs": self.outcome.outputs,
            "fallback": self.outcome.fallback,
            self.detail_key: self.outcome.to_dict(),
            "usage": self.usage,
            "seconds": round(self.seconds, 4),
        }
        if self.adaptive is not None:
            record["adaptive"] = self.adaptive
        return record

    def to_prediction(self, cset: CandidateSet) -> Any:
        """A ``dspy.Prediction`` with the answer's fields plus ``candidates``, the outcome, ``fallback`` and ``usage``."""
        import dspy

        extra = {} if self.adaptive is None else {"adaptive": self.adaptive}
        return dspy.Prediction(
            **self.outcome.outputs, candidates=cset, **{self.detail_key: self.outcome},
            fallback=self.outcome.fallback, usage=self.usage, **extra,
        )


@dataclass(frozen=True)
class Resources:
    """What a run offers its methods; each method takes what it needs.

    Attributes:
        fusor: a configured :class:`~fusion_dspy.fuse.Fusor`.
        scorer: Best-of-N's scorer (an LLMRater, a RewardModelScorer, any :class:`Scorer`).
        task: gives the metric (oracle), the answer field and the normaliser (majority).
        seed: seeds Best-of-N's scoring order and tie-breaking draw.
    """

    fusor: Fusor | None = None
    scorer: Scorer | None = None
    task: Task | None = None
    seed: int = 0


class Aggregator(ABC):
    """One aggregation method: turns a candidate set into one answer.

    Subclasses set ``name``, ``needs`` and ``summary``, build themselves from :class:`Resources`
    (:meth:`build`) and implement :meth:`aggregate`; :meth:`run` adds timing and usage.
    """

    name: ClassVar[str]
    needs: ClassVar[frozenset[Need]]
    summary: ClassVar[str]
    #: False for a method that looks at gold labels: a ceiling to compare with, not a method to deploy
    deployable: ClassVar[bool] = True

    @classmethod
    @abstractmethod
    def build(cls, resources: Resources) -> Aggregator:
        """This method from a run's resources; raises ConfigurationError naming what is missing."""

    @abstractmethod
    def aggregate(self, cset: CandidateSet, *, example: Any = None, prior: Mapping[str, MethodResult]) -> Selection | Fusion:
        """The method's outcome on ``cset`` (``prior``: results of methods run before it on the same set)."""

    def run(self, cset: CandidateSet, *, example: Any = None, prior: Mapping[str, MethodResult] | None = None, **options: Any) -> MethodResult:
        """Aggregate ``cset`` (with the gold ``example`` where the method needs one)."""
        started = time.perf_counter()
        outcome = self.aggregate(cset, example=example, prior=prior or {}, **options)
        return MethodResult(self.name, outcome, Usage.breakdown(cset.usage, outcome.usage), time.perf_counter() - started)

    @classmethod
    def _missing(cls, what: Need) -> ConfigurationError:
        return ConfigurationError(f"method {cls.name!r} needs {NEED_TEXT[what][0]}")


class BestOfNAggregator(Aggregator):
    """Best-of-N: the candidate the scorer rates highest (seeded scoring order and tie-break)."""

    name = BON
    needs = frozenset({"scorer"})
    summary = "Best-of-N: the candidate a scorer (LLM rater or reward model) rates highest"

    def __init__(self, scorer: Scorer, *, seed: int = 0):
        self.scorer = scorer
        self.seed = seed

    @classmethod
    def build(cls, resources: Resources) -> BestOfNAggregator:
        if resources.scorer is None:
            raise cls._missing("scorer")
        return cls(resources.scorer, seed=resources.seed)

    def aggregate(self, cset: CandidateSet, *, example: Any = None, prior: Mapping[str, MethodResult]) -> Selection:
        from fusion_dspy.select.scoring import select_best

        return select_best(cset, self.scorer, seed=self.seed)


class FusionAggregator(Aggregator):
    """Fusion-of-N: the fusor compares the candidates and writes a new answer.

    It falls back (when the fusor's output is unusable) to the candidate Best-of-N scored highest
    when Best-of-N ran on the same set before it, and writes in the example's language when the
    example has one.
    """

    name = FUSION
    needs = frozenset({"fusor"})
    summary = "Fusion-of-N: a fusor compares the candidates and writes a new answer"

    def __init__(self, fusor: Fusor):
        self.fusor = fusor

    @classmethod
    def build(cls, resources: Resources) -> FusionAggregator:
        if resources.fusor is None:
            raise cls._missing("fusor")
        return cls(resources.fusor)

    def aggregate(
        self,
        cset: CandidateSet,
        *,
        example: Any = None,
        prior: Mapping[str, MethodResult],
        fallback_scores: dict[int, float | None] | None = None,
    ) -> Fusion:
        if fallback_scores is None and BON in prior and isinstance(prior[BON].outcome, Selection):
            fallback_scores = prior[BON].outcome.scores
        return self.fusor(candidates=cset, fallback_scores=fallback_scores, language=example_language(example))


class MajorityAggregator(Aggregator):
    """Majority vote on the task's normalised answer field."""

    name = MAJORITY
    needs = frozenset({"normalizer"})
    summary = "majority vote on the normalised answer (closed-form tasks)"

    def __init__(self, field: str | None, normalize: Any):
        self.field = field
        self.normalize = normalize

    @classmethod
    def build(cls, resources: Resources) -> MajorityAggregator:
        if resources.task is None or resources.task.normalize is None:
            raise cls._missing("normalizer")
        return cls(resources.task.answer_field, resources.task.normalize)

    def aggregate(self, cset: CandidateSet, *, example: Any = None, prior: Mapping[str, MethodResult]) -> Selection:
        from fusion_dspy.select.majority import majority_vote

        return majority_vote(cset, self.field, self.normalize, method=self.name)


class OracleAggregator(Aggregator):
    """Best-of-N scored against the gold example: the ceiling of selection.

    It selects by the task's ``oracle_metric`` when it has one (WMT's ``--oracle-metric``), else by its metric.
    """

    name = ORACLE
    needs = frozenset({"gold"})
    summary = "Best-of-N scored by the task metric against gold (a ceiling)"
    deployable = False

    def __init__(self, metric: Any, *, seed: int = 0):
        self.metric = metric
        self.seed = seed

    @classmethod
    def build(cls, resources: Resources) -> OracleAggregator:
        if resources.task is None or not resources.task.has_gold:
            raise cls._missing("gold")
        return cls(resources.task.oracle_metric or resources.task.metric, seed=resources.seed)

    def aggregate(self, cset: CandidateSet, *, example: Any = None, prior: Mapping[str, MethodResult]) -> Selection:
        from fusion_dspy.select.scoring import CallableScorer, select_best

        if example is None:
            raise ConfigurationError(f"method {self.name!r} needs the gold example of the candidate set")
        metric = self.metric
        scorer = CallableScorer(lambda _inputs, pred: metric(example, pred), name=self.name)
        return select_best(cset, scorer, method=self.name, seed=self.seed)


#: every aggregation method by name, in the order they run (Best-of-N before fusion, whose fallback uses its scores)
AGGREGATORS: dict[str, type[Aggregator]] = {cls.name: cls for cls in (BestOfNAggregator, FusionAggregator, OracleAggregator, MajorityAggregator)}
#: methods that are not aggregations: greedy (one temperature-0 sample)
BASELINES: tuple[str, ...] = (GREEDY,)
#: every method name, in display and run order
ALL_METHODS: tuple[str, ...] = BASELINES + tuple(AGGREGATORS)


def method_order(method: str) -> tuple[int, str]:
    """A sort key: the registry's order, unknown names last."""
    return (ALL_METHODS.index(method) if method in ALL_METHODS else len(ALL_METHODS), method)


def task_offers(need: Need, task: Task | None) -> bool:
    """Whether ``task`` (None: open-ended prompts) provides what a method needs; scorers and fusors come from the models."""
    if need == "gold":
        return task is not None and task.has_gold
    if need == "normalizer":
        return task is not None and task.normalize is not None
    return True


def available_methods(task: Task | None = None, *, baselines: bool = True, deployable_only: bool = False) -> tuple[str, ...]:
    """The methods ``task`` supports (None: open-ended prompts with no gold and no normaliser)."""
    out = list(BASELINES) if baselines else []
    for name, cls in AGGREGATORS.items():
        if deployable_only and not cls.deployable:
            continue
        if all(task_offers(need, task) for need in cls.needs):
            out.append(name)
    return tuple(out)


def check_methods(
    methods: Iterable[str],
    task: Task | None = None,
    *,
    allowed: Sequence[str] | None = None,
    what: str = "method",
) -> tuple[str, ...]:
    """Validate method names against ``allowed`` (default: every method) and ``task``; clear errors list the valid ones.

    Returns the names stripped, in the order given.
    """
    allowed = tuple(allowed) if allowed is not None else ALL_METHODS
    names = tuple(m.strip() for m in methods if m and m.strip())
    if not names:
        raise ConfigurationError(f"no methods given; valid {what}s: {', '.join(allowed)}")
    unknown = [m for m in names if m not in allowed]
    if unknown:
        raise ConfigurationError(f"unknown {what}(s) {', '.join(unknown)}; valid {what}s: {', '.join(allowed)}")
    if task is not None:
        for name in names:
            for need in sorted(AGGREGATORS[name].needs if name in AGGREGATORS else ()):
                if not task_offers(need, task):
                    raise ConfigurationError(f"task {task.name!r} has no {NEED_TEXT[need][1]}, so {name!r} is not available")
    return names


def needs_of(method: str) -> frozenset[Need]:
    """What ``method`` needs (a baseline needs nothing beyond the sampled model)."""
    return AGGREGATORS[method].needs if method in AGGREGATORS else frozenset()


@dataclass
class Aggregators:
    """The aggregation methods of one run, sharing its resources; every method sees the identical set.

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
    _built: dict[str, Aggregator] = field(default_factory=dict, init=False, repr=False)

    def get(self, method: str) -> Aggregator:
        """The method ``method`` built from this run's resources (once)."""
        if method not in self._built:
            cls = AGGREGATORS.get(method)
            if cls is None:
                raise ConfigurationError(f"unknown method {method!r}; valid methods: {', '.join(ALL_METHODS)}")
            self._built[method] = cls.build(Resources(self.fusor, self.scorer, self.task, self.seed))
        return self._built[method]

    def results(self, cset: CandidateSet, methods: Sequence[str], example: Any = None) -> dict[str, MethodResult]:
        """Run each aggregation in ``methods`` (baselines are skipped) on ``cset``, in the registry's order."""
        wanted = [m for m in methods if m not in BASELINES]
        done: dict[str, MethodResult] = {}
        for method in sorted(wanted, key=method_order):
            done[method] = self.get(method).run(cset, example=example, prior=done)
        return {m: done[m] for m in wanted}

    def run(self, cset: CandidateSet, methods: Sequence[str], example: Any = None) -> dict[str, dict[str, Any]]:
        """:meth:`results` in their record form (:meth:`MethodResult.to_record`), in the order asked for."""
        return {name: result.to_record() for name, result in self.results(cset, methods, example).items()}


def example_language(example: Any) -> str | None:
    """An example's ``language`` (a code such as ``de``; pairs such as ``en-de_DE`` give the target)."""
    language = getattr(example, "language", None) if example is not None else None
    if not isinstance(language, str) or not language.strip() or language == "-":
        return None
    return language.split("-", 1)[1] if "-" in language and "_" in language else language


def run_greedy(program: Any, inputs: dict[str, Any], lm: Any) -> dict[str, Any]:
    """The ``greedy`` baseline: one temperature-0 answer of ``program``, parsed leniently, as a record."""
    from fusion_dspy.sampling import sample_candidates

    cset = sample_candidates(program, inputs, lm=lm, n=1, temperature=0.0)
    only = cset.ok[0]
    return {"outputs": dict(only.outputs), "fallback": None, "parse": only.parse, "usage": Usage.breakdown(cset.usage, Usage())}
