"""The search space: each parameter's choices, one trial's configuration, the objective.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fusion_dspy.adaptive import AdaptiveN
from fusion_dspy.aggregate import AGGREGATORS, FUSION, check_methods, needs_of, task_offers
from fusion_dspy.errors import ConfigurationError
from fusion_dspy.task import Task

ADAPTIVE_PARAMETERS = tuple(f"adaptive_{k}" for k in ("start", "step", "threshold", "similarity", "budget"))
PARAMETERS = ("n", "temperature", "teachers", "method", "fusor", "rater", *ADAPTIVE_PARAMETERS)
ADAPTIVE_OFF = "off"  # an adaptive_start choice: fixed n (no adaptive sampling)
#: the searched adaptive settings and their kinds; a setting not given takes AdaptiveN's default
_ADAPTIVE = {"start": int, "step": int, "threshold": float, "similarity": float, "budget": int}
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
    adaptive: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # searched adaptive settings (empty: fixed n only)

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
        adaptive = _adaptive_choices(values, task)
        if adaptive and len(teachers) > 1:
            raise ConfigurationError("adaptive settings are searched with one teacher (adaptive N samples rounds of one model): "
                                     f"give --teachers with one of {', '.join(teachers)}")
        return cls(n, temperature, teachers, method, fusor, rater, adaptive)

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
            **{f"adaptive_{k}": CategoricalDistribution(list(v)) for k, v in self.adaptive.items()},
        }

    def to_dict(self) -> dict[str, list[Any]]:
        return {"n": list(self.n), "temperature": list(self.temperature), "teachers": list(self.teachers),
                "method": list(self.method), "fusor": list(self.fusor), "rater": list(self.rater),
                **{f"adaptive_{k}": list(v) for k, v in self.adaptive.items()}}


def _adaptive_choices(values: Mapping[str, Any], task: Task) -> dict[str, tuple[Any, ...]]:
    """The adaptive settings searched (``adaptive_start`` may include ``off``: fixed n); checked as AdaptiveN checks them.

    ``threshold`` applies to closed-form tasks (with an answer normaliser), ``similarity`` to free-form
    ones; ``budget`` (``max_tokens_total``) may include ``none``. Giving any adaptive setting searches
    ``start`` too (default choices ``off,2,4``).
    """
    given = {k[len("adaptive_"):]: v for k, v in values.items() if k.startswith("adaptive_") and v is not None}
    if not given:
        return {}
    closed = task.normalize is not None
    wrong = "similarity" if closed else "threshold"
    if wrong in given:
        kind = "closed-form (it has an answer normaliser): use adaptive_threshold" if closed else "free-form: use adaptive_similarity"
        raise ConfigurationError(f"search parameter 'adaptive_{wrong}' does not apply: task {task.name!r} is {kind}")
    out: dict[str, tuple[Any, ...]] = {}
    for name in ("start", "step", "threshold", "similarity", "budget"):
        if name not in given and name != "start":
            continue
        raw = given.get(name, f"{ADAPTIVE_OFF},2,4")
        items = [v.strip() for v in raw.split(",")] if isinstance(raw, str) else list(raw)
        choices: list[Any] = []
        for v in items:
            if v in ("", None):
                continue
            if (name == "start" and str(v).lower() == ADAPTIVE_OFF) or (name == "budget" and str(v).lower() == "none"):
                choices.append(ADAPTIVE_OFF if name == "start" else None)
                continue
            try:
                choices.append(_ADAPTIVE[name](v))
            except (TypeError, ValueError):
                raise ConfigurationError(f"search parameter 'adaptive_{name}': {v!r} is not a valid {_ADAPTIVE[name].__name__}") from None
        if not choices:
            raise ConfigurationError(f"search parameter 'adaptive_{name}' has no choices: the search space is empty")
        for v in choices:
            if v not in (ADAPTIVE_OFF, None):
                key = "max_tokens_total" if name == "budget" else name
                try:
                    AdaptiveN(**{key: v, "max_n": max(v, 8) if name == "start" else 8})
                except ConfigurationError as exc:
                    raise ConfigurationError(f"search parameter 'adaptive_{name}': {exc}") from None
        out[name] = tuple(dict.fromkeys(choices))
    return out


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
    adaptive: AdaptiveN | None = None  # adaptive N up to max_n = n (None: a fixed n)

    @classmethod
    def suggest(cls, trial: Any, space: SearchSpace) -> TrialConfig:
        dists = space.distributions()
        n = trial.suggest_categorical("n", dists["n"].choices)
        temperature = trial.suggest_categorical("temperature", dists["temperature"].choices)
        teachers = trial.suggest_categorical("teachers", dists["teachers"].choices)
        method = trial.suggest_categorical("method", dists["method"].choices)
        parameter = aggregator_parameter(method)
        aggregator = trial.suggest_categorical(parameter, dists[parameter].choices) if parameter else None
        params: dict[str, Any] = {}
        if space.adaptive:
            params["adaptive_start"] = trial.suggest_categorical("adaptive_start", dists["adaptive_start"].choices)
            if params["adaptive_start"] != ADAPTIVE_OFF:  # the other settings only matter when sampling adapts
                for name in space.adaptive:
                    if name != "start":
                        params[f"adaptive_{name}"] = trial.suggest_categorical(f"adaptive_{name}", dists[f"adaptive_{name}"].choices)
        return cls(int(n), float(temperature), tuple(str(teachers).split("+")), str(method), aggregator, _adaptive_of(params, int(n)))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrialConfig:
        method = str(params["method"])
        parameter = aggregator_parameter(method)
        aggregator = params.get(parameter) if parameter else None
        return cls(int(params["n"]), float(params["temperature"]), tuple(str(params["teachers"]).split("+")), method, aggregator,
                   _adaptive_of(params, int(params["n"])))


def _adaptive_of(params: Mapping[str, Any], n: int) -> AdaptiveN | None:
    """A trial's AdaptiveN (max_n = its n), or None for a fixed n."""
    start = params.get("adaptive_start", ADAPTIVE_OFF)
    if start == ADAPTIVE_OFF or n < 2:
        return None
    names = {"step": "step", "threshold": "threshold", "similarity": "similarity", "budget": "max_tokens_total"}
    settings = {key: params[f"adaptive_{name}"] for name, key in names.items() if f"adaptive_{name}" in params}
    return AdaptiveN(start=min(int(start), n), max_n=n, **settings)


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

