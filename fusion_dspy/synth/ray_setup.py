"""What every stage of ``synth --engine ray`` shares: the setup a worker builds, the row's prompt and candidate set.

Used by :mod:`fusion_dspy.synth.ray_engine` (the teacher and aggregate stages) and
:mod:`fusion_dspy.synth.ray_fusor` (the fusor as an engine).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.synth.prompts import Prompt


def stage_setup(pool: Any, settings: Mapping[str, Any], config: Mapping[str, Any]) -> Any:
    """The setup of :func:`~fusion_dspy.synth.steps.build_setup`, refused unless its configuration is the driver's ``config``."""
    from fusion_dspy.synth.steps import build_setup

    setup = build_setup(pool, **settings)
    if json.loads(json.dumps(setup.config)) != json.loads(json.dumps(dict(config))):
        raise ConfigurationError(
            "a Ray worker built another synth configuration than the driver (is the same fusion-dspy installed on every node?): "
            f"{setup.config} vs {dict(config)}"
        )
    return setup


_SETUPS: dict[str, Any] = {}  # one setup per configuration and worker process (the hooks run in Ray Data tasks)


def cached_setup(pool: Any, settings: Mapping[str, Any], config: Mapping[str, Any]) -> Any:
    """:func:`stage_setup`, built once per configuration in this process (for engine hooks, which run in Ray Data tasks)."""
    key = json.dumps(config, sort_keys=True, default=str)
    if key not in _SETUPS:
        _SETUPS[key] = stage_setup(pool, settings, config)
    return _SETUPS[key]


def row_prompt(state: Mapping[str, Any]) -> Prompt:
    """The row's prompt (its messages and where it was read)."""
    return Prompt(tuple(dict(m) for m in state["messages"]), state["where"])


def gather(setup: Any, state: Mapping[str, Any]) -> Any:
    """The row's candidate set from the teacher stages' parts, in teacher order (as in-process sampling gathers it)."""
    from fusion_dspy.sampling import gather_candidates, output_fields_of
    from fusion_dspy.types import CandidateSet

    parts = [CandidateSet.from_dict({**p, "inputs": {}, "output_fields": []}) for p in state["samples"]]
    return gather_candidates(
        {"prompt": row_prompt(state).text}, output_fields_of(setup.program), [p.candidates for p in parts],
        sum(p.usage.seconds for p in parts),
    )
