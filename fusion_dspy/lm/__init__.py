"""Calling models: endpoints and pools, the one LM factory, the Router LM, lenient parsing, shared threads.

Everything that talks to a model server as a client lives here; :mod:`fusion_dspy.serving` only
starts servers. Importing this package is cheap: the parts that import DSPy or LiteLLM load on
first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from fusion_dspy.lm.endpoints import (
    Endpoint,
    Pool,
    endpoints_from_model_list,
    lm_name,
    load_pool,
    model_list_of,
)
from fusion_dspy.lm.factory import lm_for
from fusion_dspy.lm.fanout import fan_out
from fusion_dspy.lm.preflight import DEFAULT_CHECK_TIMEOUT, check_endpoint, check_pool

_LAZY = {
    "RoutedLM": "fusion_dspy.lm.router",
    "build_router": "fusion_dspy.lm.router",
    "SchemaAdapter": "fusion_dspy.lm.parsing",
    "field_char_limits": "fusion_dspy.lm.parsing",
    "lenient_parse": "fusion_dspy.lm.parsing",
    "chars_per_token": "fusion_dspy.lm.token_count",
    "count_tokens": "fusion_dspy.lm.token_count",
}

__all__ = [
    "DEFAULT_CHECK_TIMEOUT",
    "Endpoint",
    "Pool",
    "RoutedLM",
    "SchemaAdapter",
    "build_router",
    "chars_per_token",
    "check_endpoint",
    "check_pool",
    "count_tokens",
    "endpoints_from_model_list",
    "fan_out",
    "field_char_limits",
    "lenient_parse",
    "lm_for",
    "lm_name",
    "load_pool",
    "model_list_of",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fusion_dspy.lm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
