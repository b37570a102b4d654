"""Model options shared by every command: one way to say which endpoints a run uses.

Precedence: ``--pool CONFIG`` (LiteLLM model_list YAML with roles) > ``--model/--api-base`` (one
endpoint) > the embedded model, started for the run and stopped after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import typer

from fusion_dspy.endpoints import Endpoint, Pool, load_pool

POOL_OPTION = typer.Option(None, "--pool", help="LiteLLM model_list YAML with a fusion_dspy roles section.")
MODEL_OPTION = typer.Option(None, "--model", help="LiteLLM model string of one endpoint, e.g. hosted_vllm/NAME.")
API_BASE_OPTION = typer.Option(None, "--api-base", help="Base URL of that endpoint's OpenAI-compatible server.")
API_KEY_OPTION = typer.Option(None, "--api-key", help="Key for that endpoint (local servers accept anything).")
MODEL_PATH_OPTION = typer.Option(None, "--model-path", help="GGUF file for the embedded model (default: SmolLM2-135M).")


@contextlib.contextmanager
def open_pool(
    pool: Path | None = None,
    model: str | None = None,
    api_base: str | None = None,
    api_key: str | None = None,
    model_path: Path | None = None,
    temperature: float = 0.7,
    samples_per_teacher: int = 1,
) -> Iterator[Pool]:
    """Yield the run's :class:`Pool`, starting (and afterwards stopping) the embedded model if needed."""
    if pool is not None:
        yield load_pool(pool)
        return
    if model is not None:
        ep = Endpoint(name=model.split("/", 1)[-1], model=model, api_base=api_base, api_key=api_key)
        yield Pool({ep.name: ep}, (ep.name,), samples_per_teacher=samples_per_teacher, temperature=temperature)
        return
    from fusion_dspy.serving.embedded import EmbeddedServer

    with EmbeddedServer(model_path) as server:
        ep = server.endpoint
        yield Pool({ep.name: ep}, (ep.name,), samples_per_teacher=samples_per_teacher, temperature=temperature)
