"""Model options shared by every command: one way to say which endpoints a run uses.

Precedence: ``--pool CONFIG`` (LiteLLM model_list YAML with roles) > ``--model/--api-base`` (one
endpoint) > the embedded model, started for the run and stopped after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import typer

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.lm.endpoints import Endpoint, Pool, load_pool
from fusion_dspy.lm.preflight import DEFAULT_CHECK_TIMEOUT, check_pool

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
    check_timeout: float | None = DEFAULT_CHECK_TIMEOUT,
    engine_only: Callable[[Pool], Collection[str]] | None = None,
) -> Iterator[Pool]:
    """Yield the run's :class:`Pool`, starting (and afterwards stopping) the embedded model if needed.

    Endpoints given by ``--pool`` or ``--model`` are checked first (:func:`check_pool`, each within
    ``check_timeout`` seconds; None skips it), so a server that is down fails the command at once
    with its name and URL instead of failing every example.
    ``engine_only(pool)`` names the models that run only as
    engines inside a Ray pipeline (``--ray-engines``): they have no server to check.
    """
    if pool is None and model is None and (api_base is not None or api_key is not None):
        raise ConfigurationError("--api-base and --api-key need --model (the LiteLLM model string of that endpoint)")
    if pool is not None:
        the_pool = load_pool(pool)
    elif model is not None:
        ep = Endpoint(name=model.split("/", 1)[-1], model=model, api_base=api_base, api_key=api_key)
        the_pool = Pool({ep.name: ep}, (ep.name,), samples_per_teacher=samples_per_teacher, temperature=temperature)
    else:
        the_pool = None
    if the_pool is not None:
        if check_timeout is not None:
            check_pool(the_pool, check_timeout, skip=engine_only(the_pool) if engine_only else ())
            if the_pool.reward_model:  # /models may answer while the reward route itself does not
                from fusion_dspy.select import RewardModelScorer

                RewardModelScorer.from_endpoint(the_pool.endpoints[the_pool.reward_model]).check(check_timeout)
        yield the_pool
        return
    from fusion_dspy.serving.embedded import EmbeddedServer

    with EmbeddedServer(model_path) as server:
        ep = server.endpoint
        yield Pool({ep.name: ep}, (ep.name,), samples_per_teacher=samples_per_teacher, temperature=temperature)
