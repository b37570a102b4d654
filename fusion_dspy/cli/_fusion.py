"""``fusion-dspy serve --fusion``: the OpenAI-compatible fusion endpoint over a pool (default: the embedded model)."""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

import typer

from fusion_dspy.errors import ServerError

logger = logging.getLogger(__name__)
DEFAULT_PORT = 8000


def serve_fusion(
    *, pool_file: Path | None, host: str, port: int | None, api_key: str | None, n: int | None, max_n: int, max_in_flight: int,
    max_queue: int, queue_timeout: float, timeout: float, max_tokens: int, fusor_temperature: float, embedded: dict[str, Any],
    stop: threading.Event,
) -> None:
    """Serve the fusion endpoint until SIGINT/SIGTERM; the embedded model, when it is the pool, stops with it."""
    from fusion_dspy.gateway import Gateway, GatewaySettings, serve
    from fusion_dspy.lm.endpoints import Pool, load_pool
    from fusion_dspy.lm.preflight import check_pool
    from fusion_dspy.lm.secrets import Secret
    from fusion_dspy.serving.ports import port_is_free

    port = DEFAULT_PORT if port is None else port
    if not port_is_free(host, port):
        raise ServerError(f"port {port} on {host} is already in use; choose another with --port", name="fusion endpoint")
    key = Secret.from_config(api_key, where="--api-key") if api_key else None
    if host not in ("127.0.0.1", "localhost", "::1") and key is None:
        logger.warning("serving on %s without --api-key: anyone who reaches this address can spend your models' time", host)
    chosen_n = {"default_n": n} if n is not None else {}  # else the library's N
    settings = GatewaySettings(api_key=key, max_n=max_n, max_in_flight=max_in_flight, max_queue=max_queue, queue_timeout=queue_timeout,
                               request_timeout=timeout, **chosen_n)
    with contextlib.ExitStack() as stack:
        if pool_file is not None:
            pool = load_pool(pool_file)
            check_pool(pool)
        else:
            from fusion_dspy.serving.embedded import EmbeddedServer

            server = stack.enter_context(EmbeddedServer(embedded.pop("model_path"), **embedded))
            pool = Pool({server.endpoint.name: server.endpoint}, (server.endpoint.name,))
        gateway = Gateway(pool, fusor_temperature=fusor_temperature, default_max_tokens=max_tokens)
        members = ", ".join(pool.endpoints)
        n = settings.default_n
        typer.echo(f"fusion endpoint: http://{host}:{port}/v1  models: fusion-{n}, best-of-n-{n} (any -N up to {max_n}), {members}")
        serve(gateway, settings, stop=stop, host=host, port=port)
    typer.echo("stopped", err=True)
