"""Serving the fusion endpoint with uvicorn: in the foreground (the CLI) or in a background thread.

Example:
    >>> with GatewayServer(Gateway(pool), GatewaySettings()) as server:   # doctest: +SKIP
    ...     client = openai.OpenAI(base_url=server.api_base, api_key="none")
"""

from __future__ import annotations

import threading
import time
from typing import Any

from fusion_dspy.errors import ServerError
from fusion_dspy.gateway.app import GatewaySettings, create_app
from fusion_dspy.gateway.methods import Gateway

DEFAULT_HOST = "127.0.0.1"


def _config(gateway: Gateway, settings: GatewaySettings, host: str, port: int, log_level: str) -> Any:
    import uvicorn

    # no access log: the request line is all it would add, and the endpoint logs each answer itself
    return uvicorn.Config(create_app(gateway, settings), host=host, port=port, log_level=log_level, access_log=False,
                          timeout_graceful_shutdown=5, lifespan="off")


def serve(gateway: Gateway, settings: GatewaySettings, *, stop: threading.Event, host: str = DEFAULT_HOST, port: int = 8000,
          log_level: str = "warning") -> None:
    """Serve until ``stop`` is set (the CLI sets it on SIGINT/SIGTERM), then finish the answers in flight (5 s at most).

    uvicorn runs in a thread, so that the caller keeps the signals: uvicorn's own handling re-raises
    them after its shutdown, which would kill the process before it stops what it started.
    """
    with GatewayServer(gateway, settings, host=host, port=port, log_level=log_level) as server:
        while not stop.wait(0.5):
            if not server.running:
                raise ServerError("the fusion endpoint stopped unexpectedly", name="fusion-gateway")


class GatewayServer:
    """The endpoint in a background thread, on ``host`` and a free port by default (tests, benchmarks, notebooks)."""

    def __init__(self, gateway: Gateway, settings: GatewaySettings | None = None, *, host: str = DEFAULT_HOST, port: int = 0,
                 log_level: str = "warning", startup_timeout: float = 30.0):
        import uvicorn

        self.gateway = gateway
        self.settings = settings or GatewaySettings()
        self.config = _config(gateway, self.settings, host, port, log_level)
        self.server = uvicorn.Server(self.config)
        self.host = host
        self.startup_timeout = startup_timeout
        self._thread: threading.Thread | None = None

    def start(self) -> GatewayServer:
        self._thread = threading.Thread(target=self.server.run, name="fusion-gateway", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServerError(f"the fusion endpoint did not start on {self.host}", name="fusion-gateway")
            time.sleep(0.02)
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        servers = getattr(self.server, "servers", None) or []
        for srv in servers:
            for sock in srv.sockets:
                return sock.getsockname()[1]
        return self.config.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        return self.url + "/v1"

    @property
    def app(self) -> Any:
        return self.config.app
