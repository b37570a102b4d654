"""Aggregation: one registry of methods (``bon``, ``fusion``, ``oracle``, ``majority``) and the DSPy modules over it.

:mod:`~fusion_dspy.aggregate.registry` defines each method once (name, needs, ``run``);
:class:`FusionOfN` and :class:`BestOfN` sample a program and run one of them; :class:`Aggregators`
runs several on one shared candidate set (what ``eval``, ``synth``, ``demo`` and ``optimize`` do).
"""

from __future__ import annotations

import importlib
from typing import Any

from fusion_dspy.aggregate.registry import (
    AGGREGATORS,
    ALL_METHODS,
    BASELINES,
    BON,
    FUSION,
    GREEDY,
    MAJORITY,
    ORACLE,
    Aggregator,
    Aggregators,
    BestOfNAggregator,
    FusionAggregator,
    MajorityAggregator,
    MethodResult,
    OracleAggregator,
    Resources,
    available_methods,
    check_methods,
    example_language,
    method_order,
    needs_of,
    run_greedy,
    task_offers,
)

__all__ = [
    "AGGREGATORS",
    "ALL_METHODS",
    "BASELINES",
    "BON",
    "FUSION",
    "GREEDY",
    "MAJORITY",
    "ORACLE",
    "Aggregator",
    "Aggregators",
    "BestOfN",
    "BestOfNAggregator",
    "FusionAggregator",
    "FusionOfN",
    "MajorityAggregator",
    "MethodResult",
    "OracleAggregator",
    "Resources",
    "available_methods",
    "check_methods",
    "example_language",
    "fusor_for",
    "method_order",
    "needs_of",
    "run_greedy",
    "task_offers",
]

# the DSPy modules load on first use, so the method names stay cheap to import (the CLI's start-up)
_LAZY = {"BestOfN", "FusionOfN", "fusor_for"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fusion_dspy.aggregate' has no attribute {name!r}")
    value = getattr(importlib.import_module("fusion_dspy.aggregate.modules"), name)
    globals()[name] = value
    return value
