"""One ``vllm serve`` process: its command line, its log, its health, and a clean stop.

The server runs in its own process group (vLLM starts engine and worker processes of its own), so
stopping it signals the whole group: SIGTERM, then SIGKILL for anything still alive after the grace
period. Nothing is left running, also when the launching process exits.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

from fusion_dspy.errors import ConfigurationError, ServerError
from fusion_dspy.serving.config import SECRET_FLAG_WORDS, VLLM_ARGS, ModelSpec

logger = logging.getLogger(__name__)

VLLM_EXECUTABLE_ENV = "FUSION_DSPY_VLLM"
INSTALL_HINT = "install vLLM on a machine with a GPU: `pip install 'fusion-dspy[vllm]'` (or `pip install vllm`)"


def find_vllm(executable: str | None = None) -> str:
    """The ``vllm`` executable: ``executable``, ``$FUSION_DSPY_VLLM``, or ``vllm`` on ``PATH``."""
    name = executable or os.environ.get(VLLM_EXECUTABLE_ENV) or "vllm"
    found = shutil.which(name)
    if not found:
        raise ConfigurationError(f"the vllm executable {name!r} was not found on PATH; {INSTALL_HINT}")
    return found


def vllm_args(spec: ModelSpec) -> list[str]:
    """The engine flags of a model: its ``args`` as vLLM flags, reward-model flags, then ``extra``."""
    flags: list[str] = []
    for key, value in spec.args.items():
        flag = VLLM_ARGS[key][0]
        if isinstance(value, bool):
            if key == "trust_remote_code":
                flags += [flag] if value else []
            else:
                flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    extra = list(spec.extra)
    # A reward model is a pooling model; vLLM >= 0.10 takes --runner pooling (older: --task reward,
    # which users of old versions put in args.extra). An explicit choice is never overridden.
    chosen = {"--runner", "--task"} & {x.split("=", 1)[0] for x in flags + extra}
    if spec.is_reward and not chosen:
        flags += ["--runner", "pooling"]
    return flags + extra


def vllm_command(spec: ModelSpec, *, port: int, host: str = "127.0.0.1", executable: str = "vllm") -> list[str]:
    """``vllm serve MODEL --host H --port P --served-model-name NAME [engine flags]``."""
    if spec.engine != "vllm" or not spec.model:
        raise ConfigurationError(f"model {spec.name!r} is not a vllm model")
    return [
        executable, "serve", spec.model, "--host", host, "--port", str(port), "--served-model-name", spec.name,
        *vllm_args(spec),
    ]


def _is_secret_flag(flag: str) -> bool:
    """Flags whose value is a secret (``--api-key``, ``--hf-token``, ...); their values never reach a log line."""
    return flag.startswith("--") and any(word in flag.lower() for word in SECRET_FLAG_WORDS)


def redacted_command(command: list[str]) -> str:
    """``command`` as one line for a log, with the value of any ``--*key*``/``--*token*`` flag replaced by ``***``."""
    out: list[str] = []
    hide_next = False
    for arg in command:
        if hide_next:
            out.append("***")
            hide_next = False
        elif "=" in arg and _is_secret_flag(arg.split("=", 1)[0]):
            out.append(arg.split("=", 1)[0] + "=***")
        else:
            out.append(arg)
            hide_next = _is_secret_flag(arg)
    return " ".join(out)


def has_api_key(spec: ModelSpec) -> bool:
    """Whether the server will require a key: the ``api_key`` setting, or ``--api-key`` in ``extra``."""
    return spec.api_key is not None or any(x.split("=", 1)[0] == "--api-key" for x in spec.extra)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM if the launching thread dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux, or no libc: the server just lacks the safety net
        pass


class VLLMServer:
    """One replica of a vLLM model, as a subprocess in its own process group.

    Args:
        spec: the model (engine ``vllm``).
        port: the port to serve on.
        host: interface to listen on.
        log_path: the server's stdout and stderr go here.
        replica: replica index (selects ``cuda_devices[replica]``).
        executable: the ``vllm`` executable (see :func:`find_vllm`).
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        port: int,
        host: str = "127.0.0.1",
        log_path: str | os.PathLike[str],
        replica: int = 0,
        executable: str | None = None,
    ):
        self.spec = spec
        self.name = spec.name
        self.port = port
        self.host = host
        self.replica = replica
        self.log_path = Path(log_path)
        self.command = vllm_command(spec, port=port, host=host, executable=executable or "vllm")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    @property
    def label(self) -> str:
        """``name`` or ``name[replica]`` for messages."""
        return self.name if self.replica == 0 else f"{self.name}[{self.replica}]"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        return self.url + "/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> VLLMServer:
        """Start the process (does not wait; see :meth:`check_ready`)."""
        if self._proc is not None:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        env = {**os.environ, **self.spec.env}
        if self.spec.cuda_devices:
            env["CUDA_VISIBLE_DEVICES"] = self.spec.cuda_devices[self.replica]
        if self.spec.api_key is not None:  # vLLM reads it; on the command line any local user could see it
            env["VLLM_API_KEY"] = self.spec.api_key.reveal()
        logger.info("starting %s: %s (log %s)", self.label, redacted_command(self.command), self.log_path)
        main_thread = threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # own process group: stop() signals vLLM's workers too
            preexec_fn=_die_with_parent if main_thread else None,
        )
        atexit.register(self.stop)
        return self

    def check_ready(self) -> bool:
        """True once ``GET /health`` answers 200; raises ServerError if the process has exited."""
        if self._proc is None:
            raise ServerError(f"vLLM server {self.label} is not started", name=self.name)
        code = self._proc.poll()
        if code is not None:
            raise ServerError(
                f"vLLM server {self.label!r} (model {self.spec.model}, port {self.port}) exited with code {code} "
                f"before it was ready; log: {self.log_path}",
                name=self.name,
                log_tail=self.log_tail(),
            )
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after ``timeout`` seconds. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            pgid = proc.pid  # start_new_session: the group id is the leader's pid
            _signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0fs; killing it", self.label, timeout)
            deadline = time.monotonic() + min(timeout, 5.0)
            while _group_alive(pgid) and time.monotonic() < deadline:  # workers finishing their SIGTERM
                time.sleep(0.05)
            _signal_group(pgid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(5)
            logger.info("stopped %s", self.label)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        atexit.unregister(self.stop)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return "".join(deque(fh, maxlen=lines)).rstrip()
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"VLLMServer({self.label!r}, port={self.port}, running={self.running})"


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
