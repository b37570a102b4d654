"""Start every server a pool needs from one configuration, and write the pool's endpoints file.

``launch(config)`` validates the configuration, starts the embedded and vLLM servers (vLLM
replicas in parallel), waits for each ``/health``, and yields a :class:`Deployment` whose
``model_list`` is the LiteLLM pool configuration that ``eval``, ``synth`` and ``optimize`` accept
(``--pool``). Leaving the ``with`` block, an exception, SIGTERM or interpreter exit stops
everything. ``serve_config`` is the ``fusion-dspy serve --config`` command's body.

Example:
    >>> from fusion_dspy.serving.launch import launch
    >>> with launch("serve.yaml") as deployment:                     # doctest: +SKIP
    ...     pool = deployment.pool()
    ...     lm = pool.endpoints["qwen"].lm(max_tokens=256)
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion_dspy.errors import ConfigurationError, ServerError
from fusion_dspy.lm.endpoints import Endpoint, Pool, endpoints_from_model_list, model_list_of
from fusion_dspy.serving.config import ModelSpec, ServeConfig, is_loopback, load_serve_config, parse_serve_config
from fusion_dspy.serving.ports import free_port, port_is_free
from fusion_dspy.serving.vllm import VLLMServer, find_vllm, has_api_key

logger = logging.getLogger(__name__)

ENDPOINTS_FILE = "endpoints.yaml"


class Interrupted(Exception):
    """Startup was interrupted by the stop event (SIGINT/SIGTERM in ``fusion-dspy serve``)."""


@dataclass
class Deployment:
    """The running servers of a configuration and the endpoints that reach them.

    Attributes:
        config: the validated configuration.
        servers: every started server (VLLMServer or EmbeddedServer), in start order.
        log_dir: where the server logs are (a temporary folder, removed on exit, when the
            configuration sets no ``log_dir``).
        model_list: the LiteLLM ``model_list`` (replicas share a ``model_name``; keys stay as written,
            e.g. ``os.environ/NAME``).
    """

    config: ServeConfig
    servers: list[Any] = field(default_factory=list)
    log_dir: Path = Path(".")
    model_list: list[dict[str, Any]] = field(default_factory=list)

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        """``{name: Endpoint}``, with replicas grouped and ``os.environ/`` keys resolved."""
        return endpoints_from_model_list(self.model_list, source=self.config.source)

    def document(self) -> dict[str, Any]:
        """The endpoints file's content: ``model_list`` plus the ``fusion_dspy:`` roles, if any."""
        doc: dict[str, Any] = {"model_list": self.model_list}
        if self.config.roles:
            doc["fusion_dspy"] = dict(self.config.roles)
        return doc

    def write_endpoints(self, path: str | os.PathLike[str]) -> Path:
        """Write the endpoints file (LiteLLM ``model_list`` YAML that ``load_pool`` reads)."""
        import yaml

        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(yaml.safe_dump(self.document(), sort_keys=False), encoding="utf-8")
        tmp.replace(out)  # readers never see half a file
        return out

    def pool(self) -> Pool:
        """The running models as a :class:`Pool` (roles from the configuration)."""
        from fusion_dspy.lm.endpoints import load_pool

        with tempfile.TemporaryDirectory() as tmp:
            return load_pool(self.write_endpoints(Path(tmp) / ENDPOINTS_FILE))

    def check(self) -> None:
        """Raise ServerError if a server stopped (naming it, with the tail of its log)."""
        for server in self.servers:
            if not server.running:
                label = getattr(server, "label", getattr(server, "fd_name", "server"))
                raise ServerError(
                    f"server {label!r} stopped unexpectedly; log: {server.log_path}",
                    name=getattr(server, "name", None) or getattr(server, "fd_name", None),
                    log_tail=server.log_tail(),
                )

    def stop(self) -> None:
        """Stop every server (in parallel: a vLLM server may take seconds to shut down)."""
        servers, self.servers = self.servers, []
        threads = [threading.Thread(target=_stop_quietly, args=(s,), daemon=True) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def _stop_quietly(server: Any) -> None:
    try:
        server.stop()
    except Exception:  # stopping the others matters more than this error
        logger.exception("could not stop %r", server)


def as_config(config: ServeConfig | str | os.PathLike[str] | list | Mapping[str, Any]) -> ServeConfig:
    """A :class:`ServeConfig` from a config object, a YAML path, or already-loaded YAML data."""
    if isinstance(config, ServeConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        return load_serve_config(config)
    if isinstance(config, (list, Mapping)):
        return parse_serve_config(config)
    raise ConfigurationError(f"serving configuration must be a path, a list or a mapping, got {type(config).__name__}")


def _resolve_ports(config: ServeConfig) -> dict[str, list[int]]:
    """Fixed ports must be free now; missing ones are picked. Checked before anything starts."""
    taken: set[int] = {p for m in config.models for p in m.ports if p is not None}
    resolved: dict[str, list[int]] = {}
    for m in config.models:
        if m.engine == "url":
            continue
        ports = []
        for port in m.ports:
            if port is None:
                port = free_port(config.host)
                while port in taken:
                    port = free_port(config.host)
                taken.add(port)
            elif not port_is_free(config.host, port):
                raise ConfigurationError(
                    f"{config.source}: model {m.name!r}: port {port} on {config.host} is already in use "
                    "(another server is running there); choose another port or omit it to get a free one"
                )
            ports.append(port)
        resolved[m.name] = ports
    return resolved


@contextlib.contextmanager
def launch(
    config: ServeConfig | str | os.PathLike[str] | list | Mapping[str, Any],
    *,
    stop: threading.Event | None = None,
    executable: str | None = None,
) -> Iterator[Deployment]:
    """Start every server of ``config``; yield the running :class:`Deployment`; stop them all on exit.

    Args:
        config: a :class:`ServeConfig`, a YAML path, or loaded YAML data.
        stop: when set during startup, startup is abandoned (servers stopped, :class:`Interrupted` raised).
        executable: the ``vllm`` executable (default ``$FUSION_DSPY_VLLM`` or ``vllm`` on PATH).

    Raises:
        ConfigurationError: invalid configuration, port in use, vllm missing (nothing started).
        ServerError: a server failed to start (named, with its log tail; the others are stopped).
    """
    cfg = as_config(config)
    vllm_models = [m for m in cfg.models if m.engine == "vllm"]
    vllm_exe = find_vllm(executable) if vllm_models else None
    ports = _resolve_ports(cfg)
    temporary = cfg.log_dir is None  # logs in a folder of ours: removed on exit, unless a server failed
    in_extra = [m.name for m in vllm_models if m.api_key is None and has_api_key(m)]
    if in_extra:
        logger.warning("%s: model(s) %s get --api-key in args.extra: it shows in the process list and is not written to "
                       "the endpoints file; use api_key: os.environ/NAME instead", cfg.source, ", ".join(in_extra))
    open_to_all = [m.name for m in vllm_models if not has_api_key(m)]
    if open_to_all and not is_loopback(cfg.host):
        logger.warning("%s: vLLM model(s) %s listen on %s without an api_key: anyone who can reach this machine can "
                       "use them; set api_key: os.environ/NAME for each, or host: 127.0.0.1",
                       cfg.source, ", ".join(open_to_all), cfg.host)
    log_dir = cfg.log_dir or Path(tempfile.mkdtemp(prefix="fusion-dspy-serve-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    deployment = Deployment(config=cfg, log_dir=log_dir)
    restore = _stop_on_sigterm()
    try:
        for m in cfg.models:
            if m.engine == "embedded":
                _start_embedded(deployment, m, ports[m.name], log_dir)
        vllm_servers = [
            VLLMServer(m, port=port, host=cfg.host, log_path=log_dir / _log_name(m, i), replica=i, executable=vllm_exe)
            for m in vllm_models
            for i, port in enumerate(ports[m.name])
        ]
        for server in vllm_servers:
            deployment.servers.append(server.start())
        _wait_ready(vllm_servers, timeout=cfg.startup_timeout, stop=stop)
        deployment.model_list = _model_list(cfg, deployment.servers)
        logger.info("serving %s (logs in %s)", ", ".join(m.name for m in cfg.models), log_dir)
        yield deployment
    except ServerError:
        if temporary:  # the error names log files: keep them to read
            logger.warning("server logs kept in %s (set log_dir to choose where)", log_dir)
            temporary = False
        raise
    finally:
        deployment.stop()
        restore()
        if temporary:
            shutil.rmtree(log_dir, ignore_errors=True)


def _log_name(spec: ModelSpec, replica: int) -> str:
    return f"{spec.name}.log" if replica == 0 else f"{spec.name}.{replica}.log"


def _start_embedded(deployment: Deployment, spec: ModelSpec, ports: list[int], log_dir: Path) -> None:
    from fusion_dspy.serving.embedded import EmbeddedServer

    for i, port in enumerate(ports):
        server = EmbeddedServer(spec.model, port=port, log_path=log_dir / _log_name(spec, i), **spec.args)
        server.fd_name = spec.name  # the configured name (the server's own alias is "embedded")
        server.label = spec.name if i == 0 else f"{spec.name}[{i}]"
        try:
            server.start()
        except ServerError as exc:
            raise ServerError(
                f"embedded model {server.label!r} failed to start: {str(exc).splitlines()[0]}",
                name=spec.name,
                log_tail=exc.log_tail,
            ) from None
        deployment.servers.append(server)


def _wait_ready(servers: list[VLLMServer], *, timeout: float, stop: threading.Event | None) -> None:
    """Wait until every server answers ``/health``; the first failure names its server."""
    pending = list(servers)
    deadline = time.monotonic() + timeout
    while pending:
        if stop is not None and stop.is_set():
            raise Interrupted("startup interrupted")
        for server in list(pending):
            if server.check_ready():  # raises ServerError if the process exited
                logger.info("%s is ready at %s", server.label, server.api_base)
                pending.remove(server)
        if not pending:
            return
        if time.monotonic() > deadline:
            first = pending[0]
            names = ", ".join(repr(s.label) for s in pending)
            raise ServerError(
                f"vLLM server(s) {names} not healthy within {timeout:.0f}s (startup_timeout); "
                f"log of {first.label!r}: {first.log_path}",
                name=first.name,
                log_tail=first.log_tail(),
            )
        time.sleep(0.25)


def _model_list(cfg: ServeConfig, servers: list[Any]) -> list[dict[str, Any]]:
    """Endpoints of the running servers, in configuration order, as a LiteLLM ``model_list``."""
    endpoints = []
    for m in cfg.models:
        if m.engine == "url":
            bases = m.api_bases
            model = m.model
            api_key = m.api_key
            context = None
        else:
            mine = [s for s in servers if getattr(s, "fd_name", None) == m.name or getattr(s, "name", None) == m.name]
            bases = tuple(s.api_base for s in mine)
            if m.engine == "vllm":
                model, api_key, context = f"hosted_vllm/{m.name}", m.api_key, m.args.get("max_model_len")
            else:
                model, api_key = "openai/embedded", "local"
                context = mine[0].n_ctx // mine[0].n_parallel
        assert model is not None
        endpoints.append(
            Endpoint(
                name=m.name,
                model=model,
                api_base=bases[0],
                api_key=api_key,
                context_window=context,
                replicas=tuple((model, b) for b in bases[1:]),
            )
        )
    return model_list_of(endpoints)


def _stop_on_sigterm() -> Callable[[], None]:
    """In the main thread, make SIGTERM unwind like Ctrl-C (so servers are stopped) unless handled already."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        return lambda: None  # the application handles SIGTERM itself (e.g. fusion-dspy serve)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous)


def serve_config(
    config: ServeConfig | str | os.PathLike[str],
    *,
    endpoints_out: str | os.PathLike[str] | None = None,
    stop: threading.Event,
    on_ready: Callable[[Deployment, Path], None] | None = None,
    executable: str | None = None,
) -> None:
    """Launch ``config``, write the endpoints file, and serve until ``stop`` is set.

    The endpoints file goes to ``endpoints_out`` (default: ``endpoints.yaml`` in the log directory).
    ``on_ready(deployment, endpoints_path)`` is called once everything is healthy. A server that
    dies while serving stops the others and raises ServerError.
    """
    try:
        with launch(config, stop=stop, executable=executable) as deployment:
            path = deployment.write_endpoints(endpoints_out or deployment.log_dir / ENDPOINTS_FILE)
            logger.info("endpoints written to %s", path)
            if on_ready is not None:
                on_ready(deployment, path)
            while not stop.wait(0.5):
                deployment.check()
    except Interrupted:
        logger.info("startup interrupted; every server stopped")
