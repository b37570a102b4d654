"""What a task is to fusion-dspy: a data loader, a DSPy program and a metric.

Tasks live outside the library's core (``programs/`` in this repository, installed as
``fusion_dspy.programs``, or the user's own module) and are found by import string, as inspect_ai
finds tasks: ``mgsm`` means ``fusion_dspy.programs:TASKS["mgsm"]``;
``my_pkg.my_tasks:summarise`` means the attribute ``summarise`` of ``my_pkg.my_tasks``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
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


def load_task(spec: str) -> Task:
    """Resolve ``spec`` (a registered name or ``module:attribute``) to a :class:`Task`."""
    if ":" in spec:
        module_name, attr = spec.split(":", 1)
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"cannot load task {spec!r}: {exc}") from exc
        task = obj() if callable(obj) and not isinstance(obj, Task) else obj
        if not isinstance(task, Task):
            raise ConfigurationError(f"{spec!r} is not a fusion_dspy.task.Task (got {type(task).__name__})")
        return task
    registry = registered_tasks()
    if spec not in registry:
        raise ConfigurationError(f"unknown task {spec!r}; valid tasks: {', '.join(sorted(registry))}")
    return registry[spec]


def registered_tasks(registry: str = DEFAULT_REGISTRY) -> dict[str, Task]:
    """The tasks of the default registry (``fusion_dspy.programs:TASKS``); empty if it cannot be imported."""
    module_name, attr = registry.split(":", 1)
    try:
        return dict(getattr(importlib.import_module(module_name), attr))
    except (ImportError, AttributeError):
        return {}
