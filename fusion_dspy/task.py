"""What a task is to fusion-dspy: a data loader, a DSPy program and a metric.

Tasks live outside the library's core (``programs/`` in this repository, installed as
``fusion_dspy.programs``, or the user's own module) and are found by import string, as inspect_ai
finds tasks: ``mgsm`` means ``fusion_dspy.programs:TASKS["mgsm"]``;
``my_pkg.my_tasks:summarise`` means the attribute ``summarise`` of ``my_pkg.my_tasks``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fusion_dspy.errors import ConfigurationError

DEFAULT_REGISTRY = "fusion_dspy.programs:TASKS"


@dataclass(frozen=True)
class Task:
    """A task: examples, a program that answers them, and a metric.

    Attributes:
        name: short name (``mgsm``, ``wmt``, ...).
        load: ``load(path, *, limit=None, skip_bad_rows=False, bad_rows=None) -> list[dspy.Example]``.
            Each example has its inputs marked with ``with_inputs``, a string ``id`` and a ``language``
            (language code or pair such as ``en-de_DE``) used to split results.
        program: factory returning a fresh DSPy program (``Predict``/``ChainOfThought``/``Module``).
        metric: DSPy metric ``metric(example, prediction, trace=None) -> float`` (higher is better).
        answer_field: the output field that holds the answer (shown, voted on, analysed).
        normalize: turns an answer into the key majority vote counts (None: no majority vote).
        corpus_metrics: optional ``f(examples, predictions) -> {name: value}`` for corpus-level scores
            (BLEU, chrF++) computed in summaries per method and language.
        has_gold: whether the metric compares with a reference (so an oracle is meaningful).
        baseline_method: for a metric that compares with a reference answer (a pairwise judge),
            the method whose answer in the same run stands in for a missing reference: it is
            attached to the example as ``baseline`` before the methods are scored. Arena-Hard
            without reference answers uses the greedy baseline: every method's win rate against greedy.
        oracle_metric: the metric the ``oracle`` selects by (None: ``metric``), e.g. WMT's oracle by
            XCOMET while the reported metric is chrF++, or both by one metric as in the paper.
        extra_metrics: further per-example scores ``name -> metric(example, prediction) -> float | None``,
            recorded beside the metric (``metrics`` in a method result) and averaged in summaries,
            e.g. GeoFactX's reasoning judge beside answer accuracy.
        uses_judge: whether a metric calls an LLM judge (the run's judge, ``eval --judge``; recorded
            in the run's configuration).
        metric_label: what the metric measures, for tables and plots (``win rate vs gpt-4o``).
        make: the task's factory (``make_task``): :meth:`configure` calls it with options.
        options: the options the task was made with (JSON values; recorded in every eval configuration).
    """

    name: str
    load: Callable[..., list[Any]]
    program: Callable[[], Any]
    metric: Callable[..., float]
    answer_field: str
    normalize: Callable[[Any], str | None] | None = None
    corpus_metrics: Callable[[Sequence[Any], Sequence[Any]], dict[str, float]] | None = None
    has_gold: bool = True
    baseline_method: str | None = None
    description: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    oracle_metric: Callable[..., float] | None = None
    extra_metrics: Mapping[str, Callable[..., float | None]] = field(default_factory=dict)
    uses_judge: bool = False
    metric_label: str = ""
    make: Callable[..., Task] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def option_names(self) -> tuple[str, ...]:
        """The options :meth:`configure` accepts (the keyword parameters of the task's factory)."""
        if self.make is None:
            return ()
        params = inspect.signature(self.make).parameters.values()
        return tuple(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))

    def configure(self, **options: Any) -> Task:
        """This task made again with ``options`` (those that are None are left out) on top of its own.

        Raises:
            ConfigurationError: an option the task does not take (its options are listed).
        """
        given = {k: v for k, v in options.items() if v is not None}
        if not given:
            return self
        accepted = self.option_names()
        unknown = sorted(k for k in given if k not in accepted)
        if unknown:
            takes = f"its options: {', '.join(accepted)}" if accepted else "it takes none"
            raise ConfigurationError(f"task {self.name!r} has no option {', '.join(map(repr, unknown))} ({takes})")
        make: Callable[..., Task] = self.make  # type: ignore[assignment] - accepted is empty without a factory
        return make(**{**{k: v for k, v in self.options.items() if k in accepted}, **given})


def load_task(spec: str) -> Task:
    """Resolve ``spec`` (a registered name or ``module:attribute``) to a :class:`Task`."""
    if ":" in spec:
        module_name, attr = spec.split(":", 1)
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"cannot load task {spec!r}: {type(exc).__name__}: {exc}") from exc
        task = obj() if callable(obj) and not isinstance(obj, Task) else obj
        if not isinstance(task, Task):
            raise ConfigurationError(f"{spec!r} is not a fusion_dspy.task.Task (got {type(task).__name__})")
        return task
    registry = registered_tasks()
    if spec not in registry:
        raise ConfigurationError(f"unknown task {spec!r}; valid tasks: {', '.join(sorted(registry))}")
    return registry[spec]


def registered_tasks(registry: str = DEFAULT_REGISTRY) -> dict[str, Task]:
    """The tasks of the default registry (``fusion_dspy.programs:TASKS``).

    Raises:
        ConfigurationError: the registry cannot be imported (a broken install, a missing dependency
            of one task module): the import error is shown, never an empty list of tasks.
    """
    module_name, attr = registry.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"the task registry {module_name} cannot be imported ({type(exc).__name__}: {exc}); "
            "reinstall fusion-dspy, or install what the error names"
        ) from exc
    try:
        return dict(getattr(module, attr))
    except (AttributeError, TypeError) as exc:
        raise ConfigurationError(f"the task registry {registry} is not a mapping of task names to tasks ({exc})") from exc
