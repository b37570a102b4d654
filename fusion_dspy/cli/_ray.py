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
