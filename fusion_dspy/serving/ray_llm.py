"""The GPU-cluster path of ``--engine ray``: vLLM engines inside the Ray Data pipeline, from a serve configuration.

On CPU machines (and against any served endpoint) the model stages of ``--engine ray`` are Ray
Data actors making the project's own LiteLLM calls (:mod:`fusion_dspy.records.ray_runner`). On a
GPU cluster a model can instead run inside the pipeline as a ``ray.data.llm`` vLLM engine
processor: each ``engine: vllm`` model of a serve configuration (the file ``fusion-dspy serve
--config`` starts, e.g. ``examples/ray_gpu_cluster.yaml``) becomes a ``vLLMEngineProcessorConfig``
with the same engine arguments, its replicas as the processor's engine actors, and the GPUs of
one replica from its tensor and pipeline parallel sizes (Ray places them; ``cuda_devices`` is for
``serve`` only). The prompts stay DSPy's: :func:`engine_request` builds a teacher's messages with
the adapter in-process sampling uses, and :func:`parse_choice` parses an answer as sampling does.

Building the processor itself (:func:`teacher_processor`, ``ray.data.llm.build_processor``)
imports vLLM and transformers, which only GPU nodes have; without them this module builds and
checks the configurations, which ``tests/serving/test_ray_llm.py`` does for the shipped examples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.records.ray_runner import import_ray
from fusion_dspy.serving.config import ServeConfig

#: serve-only arguments that are not vLLM engine arguments (a chat template file is given to ``vllm serve``)
SERVE_ONLY_ARGS = ("chat_template",)


def engine_kwargs(spec: Any) -> dict[str, Any]:
    """The vLLM engine arguments of one ``engine: vllm`` model (its ``args``, by vLLM's own names)."""
    if spec.extra:
        raise ConfigurationError(
            f"model {spec.name!r}: raw vLLM flags (args.extra: {' '.join(spec.extra)}) cannot become engine arguments "
            "inside Ray Data; give them as args keys"
        )
    bad = [k for k in spec.args if k in SERVE_ONLY_ARGS]
    if bad:
        raise ConfigurationError(f"model {spec.name!r}: {', '.join(bad)} is an argument of `vllm serve`, not of the engine")
    return dict(spec.args)


def gpus_per_replica(spec: Any) -> int:
    """GPUs one engine replica takes: tensor parallel x pipeline parallel size."""
    return int(spec.args.get("tensor_parallel_size", 1)) * int(spec.args.get("pipeline_parallel_size", 1))


def engine_processor_configs(config: ServeConfig, *, batch_size: int = 32, max_concurrent_batches: int = 8) -> dict[str, Any]:
    """One ``ray.data.llm.vLLMEngineProcessorConfig`` per generating ``engine: vllm`` model of ``config``, by name.

    ``url`` and ``embedded`` models, and reward models (vLLM pooling), stay servers: the pipeline
    calls them over HTTP as on CPU. Raises ConfigurationError for what cannot run as an engine.
    """
    import_ray()
    from ray.data.llm import vLLMEngineProcessorConfig

    out: dict[str, Any] = {}
    for spec in config.models:
        if spec.engine != "vllm" or spec.is_reward:
            continue
        if not spec.model:
            raise ConfigurationError(f"model {spec.name!r}: an engine needs `model` (a Hugging Face id or a path)")
        out[spec.name] = vLLMEngineProcessorConfig(
            model_source=spec.model,
            engine_kwargs=engine_kwargs(spec),
            concurrency=len(spec.ports),  # one engine actor per replica
            batch_size=batch_size,
            max_concurrent_batches=max_concurrent_batches,
            runtime_env={"env_vars": dict(spec.env)} if spec.env else None,
        )
    if not out:
        raise ConfigurationError(f"{config.source}: no `engine: vllm` model that generates, so nothing to run inside Ray Data")
    return out


def engine_request(program: Any, inputs: Mapping[str, Any], *, sample: int, temperature: float, max_tokens: int,
                   seed: int = 0) -> dict[str, Any]:
    """One teacher sample as a vLLM processor row: the messages DSPy's adapter builds, and its sampling parameters.

    One row per sample (``seed + sample`` keeps samples distinct and reproducible), since an
    engine processor returns one ``generated_text`` per row.
    """
    from fusion_dspy.sampling import default_adapter, single_predictor

    predictor = single_predictor(program)
    if predictor is None:
        raise ConfigurationError("a vLLM engine stage samples one predictor (dspy.Predict / ChainOfThought); this program has several")
    messages = default_adapter().format(predictor.signature, predictor.demos, dict(inputs))
    return {"messages": messages, "sampling_params": {"temperature": temperature, "max_tokens": max_tokens, "seed": seed + sample}}


def parse_choice(program: Any, text: str | None, *, teacher: str, sample: int) -> Any:
    """A vLLM engine's ``generated_text`` as a :class:`~fusion_dspy.types.Candidate`, parsed as in-process sampling parses it."""
    from fusion_dspy.sampling import _parse_candidate, default_adapter, single_predictor
    from fusion_dspy.types import Usage

    predictor = single_predictor(program)
    return _parse_candidate(default_adapter(), predictor.signature, text, teacher, sample, Usage(calls=1))


def teacher_processor(processor_config: Any, preprocess: Any, postprocess: Any) -> Any:
    """The ``ray.data.llm`` processor of one teacher (needs vLLM and transformers on the nodes that build it)."""
    import_ray()
    from ray.data.llm import build_processor

    try:
        return build_processor(processor_config, preprocess=preprocess, postprocess=postprocess)
    except ImportError as exc:
        raise ConfigurationError(f"a vLLM engine processor needs vLLM on this node ({exc}): pip install 'fusion-dspy[vllm]'") from None
