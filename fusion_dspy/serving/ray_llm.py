"""The GPU-cluster path of ``--engine ray``: vLLM engines inside the Ray Data pipeline, from a serve configuration.

On CPU machines (and against any served endpoint) the model stages of ``--engine ray`` are Ray
Data actors making the project's own LiteLLM calls (:mod:`fusion_dspy.records.ray_runner`). On a
GPU cluster a teacher, and the fusor, can instead run inside the pipeline as a ``ray.data.llm`` vLLM engine
processor: each ``engine: vllm`` model of a serve configuration (the file ``fusion-dspy serve
--config`` starts, e.g. ``examples/ray_gpu_cluster.yaml``) becomes a ``vLLMEngineProcessorConfig``
with the same engine arguments, its replicas as the processor's engine actors, and the GPUs of
one replica from its tensor and pipeline parallel sizes (Ray places them; ``cuda_devices`` is for
``serve`` only). :func:`engines_for_pool` picks the pool's teachers (and fusor) that the file runs as engines;
``synth --engine ray --ray-engines FILE`` passes them to the pipeline, whose engine stages
(:mod:`fusion_dspy.synth.ray_engine`, :mod:`fusion_dspy.records.ray_processor`) build each
teacher's messages with the adapter in-process sampling uses and parse its answers as sampling does.

Building a processor (``ray.data.llm.build_processor``) needs transformers on the driver and
vLLM on the GPU nodes; without them this module builds and checks the configurations, which
``tests/serving/test_ray_llm.py`` does for the shipped examples.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    out = {spec.name: _processor_config(spec, batch_size, max_concurrent_batches) for spec in _generating(config).values()}
    if not out:
        raise ConfigurationError(f"{config.source}: no `engine: vllm` model that generates, so nothing to run inside Ray Data")
    return out


def engines_for_pool(config: ServeConfig, teachers: Sequence[str], names: Sequence[str] | None = None, *,
                     fusor: str | None = None, batch_size: int = 32, max_concurrent_batches: int = 8) -> dict[str, Any]:
    """The models of a pool that run as vLLM engines inside ``synth --engine ray``: ``{name: processor config}``.

    A teacher, or the pool's ``fusor``, runs as an engine when ``config`` (a serve configuration)
    has a generating ``engine: vllm`` model of the same name; the other teachers and the scorer
    stay HTTP stages against the pool's endpoints. A name that is both a teacher and the fusor runs
    as an engine in both roles (two processors: its GPUs are taken for each). ``names`` limits the
    engines to those models (each must be such a model of ``config`` and a teacher or the fusor of
    the pool); ``None`` takes every teacher and the fusor that is one.

    Raises:
        ConfigurationError: an unknown name, a name that is no generating ``engine: vllm`` model or
            no teacher nor the fusor, nothing to run as an engine, or a model whose arguments cannot
            be engine arguments (raw ``extra`` flags, ``chat_template``); nothing has started then.
    """
    generating = _generating(config)
    known = [m.name for m in config.models]
    roles = [*teachers, *([fusor] if fusor and fusor not in teachers else [])]
    if names is None:
        chosen = [t for t in roles if t in generating]
        if not chosen:
            raise ConfigurationError(
                f"{config.source}: none of the pool's teachers ({', '.join(teachers)}){_fusor_text(fusor, teachers)} is an `engine: vllm` "
                f"model of it (its models that can: {', '.join(generating) or 'none'}); a model runs as an engine when both files "
                "give it one name"
            )
    else:
        chosen = list(dict.fromkeys(names))
        if not chosen:
            raise ConfigurationError("no engine model named: give one or more of " + ", ".join(generating))
        for name in chosen:
            if name not in known:
                raise ConfigurationError(f"unknown model {name!r}: {config.source} has {', '.join(known)}")
            if name not in generating:
                spec = next(m for m in config.models if m.name == name)
                what = "a reward model (vLLM pooling)" if spec.is_reward else f"`engine: {spec.engine}`"
                raise ConfigurationError(
                    f"model {name!r} of {config.source} is {what}: only generating `engine: vllm` models run inside the pipeline"
                )
            if name not in roles:
                raise ConfigurationError(
                    f"model {name!r} is not a teacher of the pool ({', '.join(teachers)}){_fusor_text(fusor, teachers, 'nor its')}: only "
                    "teachers and the fusor run as engines inside the pipeline (the scorer is called over HTTP)"
                )
    return {name: _processor_config(generating[name], batch_size, max_concurrent_batches) for name in chosen}


def _fusor_text(fusor: str | None, teachers: Sequence[str], joint: str = "or its") -> str:
    return f" {joint} fusor ({fusor})" if fusor and fusor not in teachers else ""


def _generating(config: ServeConfig) -> dict[str, Any]:
    return {spec.name: spec for spec in config.models if spec.engine == "vllm" and not spec.is_reward}


def _processor_config(spec: Any, batch_size: int, max_concurrent_batches: int) -> Any:
    import_ray()
    from ray.data.llm import vLLMEngineProcessorConfig

    if not spec.model:
        raise ConfigurationError(f"model {spec.name!r}: an engine needs `model` (a Hugging Face id or a path)")
    return vLLMEngineProcessorConfig(
        model_source=spec.model,
        engine_kwargs=engine_kwargs(spec),
        concurrency=len(spec.ports),  # one engine actor per replica
        batch_size=batch_size,
        max_concurrent_batches=max_concurrent_batches,
        runtime_env={"env_vars": dict(spec.env)} if spec.env else None,
    )
