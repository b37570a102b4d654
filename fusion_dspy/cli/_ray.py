"""The engine options of ``eval`` and ``synth``: in-process threads (the default) or a Ray Data pipeline."""

from __future__ import annotations

from typing import Any

import typer

from fusion_dspy.errors import ConfigurationError

ENGINE_OPTION = typer.Option(
    "inprocess", "--engine", help="inprocess (threads in this process) or ray (a Ray Data pipeline; docs/scale-out.md)."
)
RAY_ADDRESS_OPTION = typer.Option(
    None, "--ray-address", help="With --engine ray: auto (the cluster this machine joined) or HOST:PORT (its head); "
    "default: a Ray instance on this machine for the run."
)
RAY_WORKERS_OPTION = typer.Option(1, "--ray-workers", min=1, help="With --engine ray: actors per model stage.")
RAY_ENGINES_OPTION = typer.Option(
    None, "--ray-engines", help="With --engine ray on a GPU cluster: a serve configuration (e.g. examples/ray_gpu_cluster.yaml); "
    "every pool teacher, and the fusor, that is an `engine: vllm` model of it runs as a vLLM engine inside the pipeline "
    "(docs/scale-out.md)."
)
RAY_ENGINE_MODELS_OPTION = typer.Option(
    None, "--ray-engine-models", help="With --ray-engines: only these teachers / the fusor (comma-separated names of the file's models) as engines."
)


def ray_options_for(engine: str, address: str | None, workers: int, concurrency: int) -> Any:
    """The run's RayOptions for ``--engine ray`` (Ray checked importable now), None for in-process."""
    if engine not in ("inprocess", "ray"):
        raise ConfigurationError(f"--engine must be inprocess or ray, got {engine!r}")
    if engine == "inprocess":
        if address is not None or workers != 1:
            raise ConfigurationError("--ray-address and --ray-workers need --engine ray")
        return None
    from fusion_dspy.records.ray_runner import RayOptions, import_ray

    options = RayOptions(address=address, workers=workers, concurrency=concurrency)
    import_ray()
    return options


def ray_engines_file(path: Any, models: str | None, ray_options: Any) -> tuple[Any, list[str] | None]:
    """The serve configuration of ``--ray-engines`` and the names of ``--ray-engine-models``, read before anything starts."""
    if path is None:
        if models is not None:
            raise ConfigurationError("--ray-engine-models needs --ray-engines FILE")
        return None, None
    if ray_options is None:
        raise ConfigurationError("--ray-engines needs --engine ray: the engines run inside the Ray Data pipeline")
    from fusion_dspy.serving.config import load_serve_config

    names = None if models is None else [m.strip() for m in models.split(",") if m.strip()]
    return load_serve_config(path), names


def ray_engines_for(serve_config: Any, names: list[str] | None, teachers: Any, fusor: str | None = None) -> dict[str, Any] | None:
    """``{model: vLLM processor config}`` for the pool's teachers and fusor the file runs as engines (None without --ray-engines)."""
    if serve_config is None:
        return None
    from fusion_dspy.serving.ray_llm import engines_for_pool

    return engines_for_pool(serve_config, tuple(teachers), names, fusor=fusor)
