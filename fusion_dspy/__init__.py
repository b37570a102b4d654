"""fusion-dspy: make, not take, the best of N LLM generations.

Sample N candidates of any DSPy program, then *fuse* them into a new answer (Fusion-of-N) or *select*
one (Best-of-N, majority vote). Heavy or optional backends (xllamacpp, vLLM, optuna, torch) load only
when used: importing this package is cheap.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from fusion_dspy.errors import (  # noqa: E402
    AggregationError,
    ConfigurationError,
    DataError,
    EndpointError,
    FusionError,
    ModelFileError,
    SamplingError,
    ServerError,
)
from fusion_dspy.lm.endpoints import Endpoint, Pool, load_pool  # noqa: E402
from fusion_dspy.types import Candidate, CandidateSet, Fusion, Selection, Usage  # noqa: E402

# name -> module; loaded on first access so that `import fusion_dspy` stays light.
_LAZY = {
    "embedded": "fusion_dspy.serving.embedded",
    "EmbeddedServer": "fusion_dspy.serving.embedded",
    "sample_candidates": "fusion_dspy.sampling",
    "AdaptiveN": "fusion_dspy.adaptive",
    "Fusor": "fusion_dspy.fuse",
    "DEFAULT_FUSION_INSTRUCTION": "fusion_dspy.signatures",
    "PLAIN_FUSION_INSTRUCTION": "fusion_dspy.signatures",
    "PlainAdapter": "fusion_dspy.plain_adapter",
    "assess": "fusion_dspy.substance",
    "LLMRater": "fusion_dspy.select",
    "RewardModelScorer": "fusion_dspy.select",
    "select_best": "fusion_dspy.select",
    "majority_vote": "fusion_dspy.select",
    "FusionOfN": "fusion_dspy.aggregate",
    "BestOfN": "fusion_dspy.aggregate",
    "fusor_for": "fusion_dspy.aggregate",
    "RecordStore": "fusion_dspy.records",
    "contributions": "fusion_dspy.analysis",
    "attribute": "fusion_dspy.analysis",
    "launch": "fusion_dspy.serving.launch",
    "evaluate": "fusion_dspy.eval",
    "synthesize": "fusion_dspy.synth",
}

__all__ = [
    "AdaptiveN",
    "AggregationError",
    "BestOfN",
    "Candidate",
    "CandidateSet",
    "ConfigurationError",
    "DEFAULT_FUSION_INSTRUCTION",
    "DataError",
    "EmbeddedServer",
    "Endpoint",
    "EndpointError",
    "Fusion",
    "FusionError",
    "FusionOfN",
    "Fusor",
    "LLMRater",
    "ModelFileError",
    "PLAIN_FUSION_INSTRUCTION",
    "PlainAdapter",
    "Pool",
    "RecordStore",
    "RewardModelScorer",
    "SamplingError",
    "Selection",
    "ServerError",
    "Usage",
    "assess",
    "attribute",
    "contributions",
    "embedded",
    "evaluate",
    "fusor_for",
    "launch",
    "load_pool",
    "majority_vote",
    "sample_candidates",
    "select_best",
    "synthesize",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fusion_dspy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
