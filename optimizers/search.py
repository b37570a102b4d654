"""An Optuna study over how to spend test-time compute: n, temperature, teachers, fusor and method.

Each trial picks

- ``n``: samples per teacher (the pool YAML's ``samples_per_teacher``),
- ``temperature``: the teachers' sampling temperature,
- ``teachers``: a non-empty subset of the pool's teachers (one categorical: ``"a+b"``),
- ``method``: every deployable method of :mod:`fusion_dspy.aggregate` the task supports (fusion,
  Best-of-N with an LLM rater, majority vote when the task has an answer normaliser),
- ``fusor`` (only for a method that needs a fusor) or ``rater`` (only for one that needs a scorer):
  which model aggregates,

and scores it on the examples: the mean task metric and the mean tokens per example (sampling plus
aggregation). Two objectives:

- ``pareto``: maximise the metric, minimise tokens (``directions=["maximize", "minimize"]``). Optuna
  cannot prune multi-objective trials, so every trial runs on all examples; the caches below keep a
  repeated or overlapping trial cheap instead.
- ``budget``: maximise the metric subject to a token budget (mean tokens per example). Over-budget
  trials are infeasible: the sampler is told through ``constraints_func``, and their value is
  ``metric - 1`` (below any feasible trial, as metrics are in 0..1). Examples run in batches; after
  each batch the running metric is reported (``trial.report``) and the median pruner stops poor
  trials; a trial whose tokens so far already exceed the budget for all examples is pruned too.

Candidates are cached on disk per teacher (:class:`~fusion_dspy.optimizers.cache.CandidateCache`): a trial with a
smaller n or fewer teachers reuses a larger pool's samples. Aggregation results are cached too
(:class:`ResultCache`), so a repeated configuration is free and costs the tokens it cost first.
The study lives in persistent storage (SQLite by default; any Optuna RDB URL), so running the same
command again adds trials to the one study.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dspy

from fusion_dspy.aggregate import AGGREGATORS, FUSION, Aggregators, check_methods, fusor_for, needs_of, task_offers
from fusion_dspy.errors import ConfigurationError, SamplingError
from fusion_dspy.fuse import Fusor
from fusion_dspy.lm import Endpoint, Pool, fan_out, model_list_of
from fusion_dspy.records import RecordStore, record_id
from fusion_dspy.select import LLMRater
from fusion_dspy.task import Task
from fusion_dspy.types import CandidateSet, Usage

from .cache import CandidateCache, teacher_descriptor

logger = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "PARAMETERS",
    "Models",
    "Objective",
    "ResultCache",
    "SearchResult",
    "SearchSpace",
    "TrialConfig",
    "check_storage",
    "check_study",
    "pick",
    "plot_trials",
    "study_attrs",
    "evaluate_config",
    "run_search",
    "write_pool",
]

PARAMETERS = ("n", "temperature", "teachers", "method", "fusor", "rater")
# the deployable methods (not the oracle, which reads gold labels), fusion first
METHODS = (FUSION,) + tuple(name for name, cls in AGGREGATORS.items() if cls.deployable and name != FUSION)
# the searched parameter that names the model a method needs for its aggregation
_ROLE_PARAMETER = {"fusor": "fusor", "scorer": "rater"}
MAX_TEACHERS = 8  # subsets are one categorical: 2^8 - 1 choices at most


# --------------------------------------------------------------------------------------------------
# the search space


def _parse_list(name: str, value: Any, kind: type) -> tuple[Any, ...]:
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    items = [v for v in items if v != ""]
    out = []
    for v in items:
        try:
            out.append(kind(v))
        except (TypeError, ValueError):
            raise ConfigurationError(f"search parameter {name!r}: {v!r} is not a valid {kind.__name__}") from None
    if not out:
        raise ConfigurationError(f"search parameter {name!r} has no choices: the search space is empty")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class SearchSpace:
    """The choices of every searched parameter (a single choice fixes a parameter)."""

    n: tuple[int, ...]
    temperature: tuple[float, ...]
    teachers: tuple[str, ...]
    method: tuple[str, ...]
    fusor: tuple[str, ...]
    rater: tuple[str, ...]

    @classmethod
    def build(cls, values: Mapping[str, Any], *, names: Sequence[str], teachers: Sequence[str] | None = None, task: Task) -> SearchSpace:
        """Validate choices (comma-separated strings or sequences) against the models and the task.

        Args:
            values: ``{parameter: choices}``; a missing parameter takes its default.
            names: every model that may be used; ``teachers`` those that may sample (default: all).

        Defaults: n 1,2,4; temperature 0.3,0.7; every teacher; every method the task allows; every
        model as fusor; the first model as rater.
        """
        names = tuple(names)
        pool_teachers = tuple(teachers) if teachers else names
        unknown = sorted(set(values) - set(PARAMETERS))
        if unknown:
            raise ConfigurationError(f"unknown search parameter(s) {', '.join(unknown)}; valid parameters: {', '.join(PARAMETERS)}")
        allowed_methods = tuple(m for m in METHODS if all(task_offers(need, task) for need in needs_of(m)))
        get = lambda k, d: values[k] if values.get(k) is not None else d  # noqa: E731
        n = _parse_list("n", get("n", (1, 2, 4)), int)
        if any(v < 1 for v in n):
            raise ConfigurationError(f"search parameter 'n': every choice must be >= 1, got {list(n)}")
        temperature = _parse_list("temperature", get("temperature", (0.3, 0.7)), float)
        if any(not (0.0 <= t <= 2.0) for t in temperature):
            raise ConfigurationError(f"search parameter 'temperature': choices must be in 0..2, got {list(temperature)}")
        teachers = _parse_list("teachers", get("teachers", pool_teachers), str)
        method = _parse_list("method", get("method", allowed_methods), str)
        fusor = _parse_list("fusor", get("fusor", names), str)
        rater = _parse_list("rater", get("rater", names[:1]), str)
        for role, chosen in (("teacher", teachers), ("fusor", fusor), ("rater", rater)):
            missing = [x for x in chosen if x not in names]
            if missing:
                raise ConfigurationError(f"{role} {', '.join(missing)} not among the models; known: {', '.join(names)}")
        if len(teachers) > MAX_TEACHERS:
            raise ConfigurationError(f"at most {MAX_TEACHERS} teachers can be searched over, got {len(teachers)}")
        check_methods(method, task, allowed=METHODS)
        return cls(n, temperature, teachers, method, fusor, rater)

    def teacher_subsets(self) -> tuple[str, ...]:
        """Every non-empty subset of the teachers, as ``"a+b"`` in pool order."""
        subsets = []
        for size in range(1, len(self.teachers) + 1):
            subsets.extend("+".join(c) for c in itertools.combinations(self.teachers, size))
        return tuple(subsets)

    def distributions(self) -> dict[str, Any]:
        """The Optuna distribution of every parameter."""
        from optuna.distributions import CategoricalDistribution

        return {
            "n": CategoricalDistribution(list(self.n)),
            "temperature": CategoricalDistribution(list(self.temperature)),
            "teachers": CategoricalDistribution(list(self.teacher_subsets())),
            "method": CategoricalDistribution(list(self.method)),
            "fusor": CategoricalDistribution(list(self.fusor)),
            "rater": CategoricalDistribution(list(self.rater)),
        }

    def to_dict(self) -> dict[str, list[Any]]:
        return {"n": list(self.n), "temperature": list(self.temperature), "teachers": list(self.teachers),
                "method": list(self.method), "fusor": list(self.fusor), "rater": list(self.rater)}


def aggregator_parameter(method: str) -> str | None:
    """``fusor`` or ``rater``: the parameter naming the model ``method`` aggregates with (None: it needs none)."""
    needs = needs_of(method)
    return next((parameter for need, parameter in _ROLE_PARAMETER.items() if need in needs), None)


@dataclass(frozen=True)
class TrialConfig:
    """One configuration to evaluate."""

    n: int
    temperature: float
    teachers: tuple[str, ...]
    method: str
    aggregator: str | None = None  # the fusor (fusion) or rater (bon)

    @classmethod
    def suggest(cls, trial: Any, space: SearchSpace) -> TrialConfig:
        dists = space.distributions()
        n = trial.suggest_categorical("n", dists["n"].choices)
        temperature = trial.suggest_categorical("temperature", dists["temperature"].choices)
        teachers = trial.suggest_categorical("teachers", dists["teachers"].choices)
        method = trial.suggest_categorical("method", dists["method"].choices)
        parameter = aggregator_parameter(method)
        aggregator = trial.suggest_categorical(parameter, dists[parameter].choices) if parameter else None
        return cls(int(n), float(temperature), tuple(str(teachers).split("+")), str(method), aggregator)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrialConfig:
        method = str(params["method"])
        parameter = aggregator_parameter(method)
        aggregator = params.get(parameter) if parameter else None
        return cls(int(params["n"]), float(params["temperature"]), tuple(str(params["teachers"]).split("+")), method, aggregator)


@dataclass(frozen=True)
class Objective:
    """``pareto`` (metric up, tokens down) or ``budget`` (metric up, mean tokens per example <= budget)."""

    kind: Literal["pareto", "budget"] = "pareto"
    budget: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("pareto", "budget"):
            raise ConfigurationError(f"objective must be 'pareto' or 'budget', got {self.kind!r}")
        if self.kind == "budget" and (self.budget is None or not self.budget > 0):
            raise ConfigurationError("--objective budget needs --budget TOKENS (mean tokens per example, > 0)")
        if self.kind == "pareto" and self.budget is not None:
            raise ConfigurationError("--budget applies only to --objective budget")

    @property
    def directions(self) -> list[str]:
        return ["maximize", "minimize"] if self.kind == "pareto" else ["maximize"]

    def describe(self) -> dict[str, Any]:
        return {"objective": self.kind, "budget": self.budget}


# --------------------------------------------------------------------------------------------------
# models and caches


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


# --------------------------------------------------------------------------------------------------
# evaluating one configuration


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
        logger.warning("example %s: no candidate could be sampled (%s); scored 0", example.get("id"), exc)
        return 0.0, 0, Usage(), Usage(), False, True
    aggregator_lm = ctx.models.aggregator(config.aggregator) if config.aggregator else None
    key = ResultCache.key(config.method, aggregator_lm, cset, str(example.get("id")))
    result = ctx.results.get(key)
    if result is None:
        run = ctx.aggregators(config).run(cset, [config.method], example)[config.method]
        u = run["usage"]["aggregation"]
        result = {"outputs": run["outputs"], "fallback": run.get("fallback"),
                  "aggregation": {k: u[k] for k in ("prompt_tokens", "completion_tokens", "seconds", "calls")}}
        ctx.results.put(key, result)
    a = result["aggregation"]
    aggregation = Usage(a["prompt_tokens"], a["completion_tokens"], a["seconds"], a["calls"])
    score = float(ctx.task.metric(example, dspy.Prediction(**result["outputs"])))
    tokens = cset.usage.total_tokens + aggregation.total_tokens
    return score, tokens, cset.usage, aggregation, bool(result.get("fallback")), False


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


# --------------------------------------------------------------------------------------------------
# storage and study


def check_storage(storage: str) -> Any:
    """Open an Optuna RDB storage URL (``sqlite:///file.db``, ``postgresql://...``), or say why not."""
    import optuna

    if not isinstance(storage, str) or "://" not in storage:
        raise ConfigurationError(f"storage must be an Optuna storage URL such as sqlite:///study.db, got {storage!r}")
    try:
        return optuna.storages.RDBStorage(storage)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds; all mean "cannot open"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(f"cannot open the study storage {storage!r}: {first}") from None


def study_attrs(task: Task, objective: Objective, examples: Sequence[Any]) -> dict[str, Any]:
    ids = [str(e.get("id")) for e in examples]
    return {"task": task.name, **objective.describe(), "examples": record_id(ids), "example_count": len(ids)}


def check_study(storage: Any, study_name: str, objective: Objective, space: SearchSpace, attrs: Mapping[str, Any]) -> bool:
    """Compare an existing study with this run (directions, objective, task, examples, space).

    Returns whether the study exists. Raises ConfigurationError on any mismatch, before a model call.
    """
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return False
    directions = [d.name.lower() for d in storage.get_study_directions(study_id)]
    if directions != objective.directions:
        raise ConfigurationError(
            f"study {study_name!r} exists with directions {directions}; this run's objective {objective.kind!r} needs "
            f"{objective.directions}: use another --study or the study's own objective"
        )
    stored = storage.get_study_user_attrs(study_id)
    for key in ("task", "objective", "budget", "examples"):
        if key in stored and stored[key] != attrs.get(key):
            raise ConfigurationError(
                f"study {study_name!r} was run with {key}={stored[key]!r}, this run has {key}={attrs.get(key)!r}; "
                "trials would not be comparable: use another --study"
            )
    ours = space.distributions()
    for trial in storage.get_all_trials(study_id, deepcopy=False):
        for name, dist in trial.distributions.items():
            if name in ours and dist != ours[name]:
                theirs = getattr(dist, "choices", dist)
                raise ConfigurationError(
                    f"study {study_name!r} searched {name!r} over {list(theirs)}; this run asks for "
                    f"{list(ours[name].choices)}: use the same choices or another --study"
                )
    return True


@dataclass
class SearchResult:
    """The study after this run, its best trials and the chosen configuration."""

    study: Any
    objective: Objective
    space: SearchSpace
    best: list[Any]
    chosen: Any | None
    trials_run: int
    drawn: Usage
    plot: Path | None = None
    pool_file: Path | None = None

    def rows(self) -> list[dict[str, Any]]:
        """Every trial of the study as a table row (number, state, params, metric, tokens)."""
        best_numbers = {t.number for t in self.best}
        out = []
        for t in self.study.get_trials(deepcopy=False):
            out.append(
                {
                    "trial": t.number,
                    "state": t.state.name,
                    "params": dict(t.params),
                    "metric": t.user_attrs.get("metric"),
                    "tokens_per_example": t.user_attrs.get("tokens_per_example"),
                    "feasible": t.user_attrs.get("feasible"),
                    "best": t.number in best_numbers,
                    "chosen": self.chosen is not None and t.number == self.chosen.number,
                }
            )
        return out


def run_search(
    task: Task,
    examples: Sequence[Any],
    models: Models,
    space: SearchSpace,
    *,
    trials: int,
    storage: str,
    study_name: str,
    objective: Objective = Objective(),
    out_dir: str | Path,
    sampler: Literal["tpe", "random", "grid"] = "tpe",
    num_threads: int = 2,
    batch_size: int | None = None,
    seed: int = 0,
    cache_path: str | Path | None = None,
) -> SearchResult:
    """Run ``trials`` more trials of the study ``study_name`` in ``storage``; plot and pick a configuration.

    Every check (storage, existing study, space) happens before any model call.
    """
    import optuna

    if trials < 1:
        raise ConfigurationError(f"--trials must be >= 1, got {trials}")
    if not examples:
        raise ConfigurationError("no examples to evaluate on")
    if sampler not in ("tpe", "random", "grid"):
        raise ConfigurationError(f"sampler must be tpe, random or grid, got {sampler!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rdb = check_storage(storage)
    attrs = study_attrs(task, objective, examples)
    existed = check_study(rdb, study_name, objective, space, attrs)
    previous = len(rdb.get_all_trials(rdb.get_study_id_from_name(study_name), deepcopy=False)) if existed else 0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    constraints = (lambda t: [float(t.user_attrs.get("constraint", 0.0))]) if objective.kind == "budget" else None
    run_seed = seed + previous  # a resumed study does not replay the first run's random draws
    if sampler == "grid":
        dists = space.distributions()
        chosen_sampler: Any = optuna.samplers.GridSampler({k: list(d.choices) for k, d in dists.items()}, seed=run_seed)
    elif sampler == "random":
        chosen_sampler = optuna.samplers.RandomSampler(seed=run_seed)
    else:
        chosen_sampler = optuna.samplers.TPESampler(seed=run_seed, constraints_func=constraints, n_startup_trials=max(2, min(10, trials // 2)))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0) if objective.kind == "budget" else optuna.pruners.NopPruner()
    study = optuna.create_study(storage=rdb, study_name=study_name, directions=objective.directions,
                                load_if_exists=True, sampler=chosen_sampler, pruner=pruner)
    if not existed:
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        study.set_user_attr("space", space.to_dict())

    ctx = SearchContext(
        task, list(examples), models, CandidateCache(cache_path or out / "candidates.jsonl", task_name=task.name),
        ResultCache(out / "aggregations.jsonl"), num_threads=num_threads, batch_size=batch_size, seed=seed,
    )
    study.optimize(lambda trial: _objective(trial, ctx, space, objective), n_trials=trials)

    best, chosen = pick(study, objective)
    result = SearchResult(study, objective, space, best, chosen, trials, ctx.candidates.drawn)
    result.plot = plot_trials(study, objective, chosen, out / "pareto.png")
    if chosen is not None and models.endpoints:
        result.pool_file = write_pool(out / "chosen_pool.yaml", TrialConfig.from_params(chosen.params), models, chosen,
                                      study_name=study_name, storage=storage, task=task.name)
    (out / "trials.json").write_text(json.dumps(result.rows(), indent=2, default=str), encoding="utf-8")
    return result


def _objective(trial: Any, ctx: SearchContext, space: SearchSpace, objective: Objective) -> Any:
    import optuna

    config = TrialConfig.suggest(trial, space)
    total = len(ctx.examples)

    def on_batch(score: ConfigScore, done: int) -> None:
        if objective.kind != "budget" or done >= total:
            return
        assert objective.budget is not None
        trial.report(score.metric, step=done)
        _record(trial, score, objective)
        if sum(score.tokens) > objective.budget * total:
            trial.set_user_attr("pruned_because", "over the token budget before the last example")
            raise optuna.TrialPruned("over the token budget")
        if trial.should_prune():
            trial.set_user_attr("pruned_because", f"metric {score.metric:.3f} after {done} examples is below the median")
            raise optuna.TrialPruned()

    score = evaluate_config(ctx, config, on_batch=on_batch)
    _record(trial, score, objective)
    if objective.kind == "pareto":
        return score.metric, score.tokens_per_example
    assert objective.budget is not None
    feasible = score.tokens_per_example <= objective.budget
    return score.metric if feasible else score.metric - 1.0


def _record(trial: Any, score: ConfigScore, objective: Objective) -> None:
    """The trial's figures as user attributes (few of them: each is one storage commit)."""
    trial.set_user_attr("metric", score.metric)
    trial.set_user_attr("tokens_per_example", score.tokens_per_example)
    trial.set_user_attr("detail", {
        "examples": len(score.scores), "sampling_tokens": score.sampling.total_tokens,
        "aggregation_tokens": score.aggregation.total_tokens, "fallbacks": score.fallbacks, "failures": score.failures,
    })
    if objective.kind == "budget":
        assert objective.budget is not None
        trial.set_user_attr("constraint", score.tokens_per_example - objective.budget)
        trial.set_user_attr("feasible", score.tokens_per_example <= objective.budget)


def pick(study: Any, objective: Objective) -> tuple[list[Any], Any | None]:
    """The best trials (Pareto front, or best feasible) and the chosen one: highest metric, then fewest tokens."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return [], None
    key = lambda t: (-float(t.user_attrs.get("metric", -math.inf)), float(t.user_attrs.get("tokens_per_example", math.inf)), t.number)  # noqa: E731
    if objective.kind == "pareto":
        best = sorted(study.best_trials, key=key)
    else:
        feasible = [t for t in complete if t.user_attrs.get("feasible")]
        best = sorted(feasible, key=key)[:5]
    return best, (best[0] if best else None)


def plot_trials(study: Any, objective: Objective, chosen: Any | None, path: Path) -> Path | None:
    """A PNG of metric against tokens per example: every trial, the Pareto front, the chosen one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    done = [
        t for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("metric") is not None and t.user_attrs.get("tokens_per_example") is not None
    ]
    if not done:
        return None
    front = _front([t for t in done if t.state == optuna.trial.TrialState.COMPLETE])
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    styles = (("COMPLETE", dict(c="tab:blue", alpha=0.5, label="trial")), ("PRUNED", dict(c="tab:gray", marker="x", alpha=0.6, label="pruned")))
    for state, style in styles:
        pts = [t for t in done if t.state.name == state]
        if pts:
            ax.scatter([t.user_attrs["tokens_per_example"] for t in pts], [t.user_attrs["metric"] for t in pts], **style)
    if front:
        ax.plot([t.user_attrs["tokens_per_example"] for t in front], [t.user_attrs["metric"] for t in front],
                "-o", c="tab:red", label="Pareto front")
    if chosen is not None:
        ax.scatter([chosen.user_attrs["tokens_per_example"]], [chosen.user_attrs["metric"]], s=180, facecolors="none",
                   edgecolors="black", linewidths=2, label=f"chosen (trial {chosen.number})")
        p = chosen.params
        label = f"n={p.get('n')} {p.get('method')} t={p.get('temperature')}"
        point = (chosen.user_attrs["tokens_per_example"], chosen.user_attrs["metric"])
        ax.annotate(label, point, textcoords="offset points", xytext=(8, -14), fontsize=8)
    if objective.kind == "budget":
        ax.axvline(objective.budget, ls="--", c="tab:orange", label=f"budget {objective.budget:g}")
    ax.set_xlabel("tokens per example (sampling + aggregation)")
    ax.set_ylabel("metric")
    ax.set_title(f"{study.study_name}: {len(done)} trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _front(trials: list[Any]) -> list[Any]:
    """Non-dominated trials (metric up, tokens down), sorted by tokens."""
    pts = sorted(trials, key=lambda t: (t.user_attrs["tokens_per_example"], -t.user_attrs["metric"]))
    front, best = [], -math.inf
    for t in pts:
        if t.user_attrs["metric"] > best:
            front.append(t)
            best = t.user_attrs["metric"]
    return front


def write_pool(path: str | Path, config: TrialConfig, models: Models, trial: Any = None, **provenance: Any) -> Path:
    """Write ``config`` as a pool YAML (LiteLLM model_list + ``fusion_dspy:`` roles) for ``--pool``.

    The method and the search's figures go under a top-level ``optimized:`` section, which
    :func:`fusion_dspy.load_pool` ignores.
    """
    import yaml

    used = list(config.teachers) + ([config.aggregator] if config.aggregator and config.aggregator not in config.teachers else [])
    missing = [n for n in used if n not in models.endpoints]
    if missing:
        raise ConfigurationError(f"cannot write a pool file: no endpoint for {', '.join(missing)}")
    roles: dict[str, Any] = {"teachers": list(config.teachers), "samples_per_teacher": config.n, "temperature": config.temperature}
    parameter = aggregator_parameter(config.method)
    if parameter:  # the pool file's role names are the search's parameter names (fusor, rater)
        roles[parameter] = config.aggregator
    optimized: dict[str, Any] = {"method": config.method, "n": config.n, **provenance}
    if trial is not None:
        attrs = trial.user_attrs
        optimized.update({"trial": trial.number, "metric": attrs.get("metric"), "tokens_per_example": attrs.get("tokens_per_example")})
    doc = {"model_list": model_list_of([models.endpoints[n] for n in used]), "fusion_dspy": roles, "optimized": optimized}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return p
