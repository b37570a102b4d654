"""A stand-in for the ``vllm`` executable, for tests of the launcher on machines without a GPU.

``write_fake_vllm(directory)`` writes an executable ``vllm`` there (shebang: this interpreter) that
runs :func:`main`. ``vllm serve MODEL --port P --served-model-name NAME ...`` then:

- appends ``{"argv", "pid", "child_pid", "cuda_visible_devices", "vllm_api_key"}`` as a JSON line to ``$FAKE_VLLM_RECORD``;
- like vLLM, requires ``Authorization: Bearer KEY`` (except on /health) when ``$VLLM_API_KEY`` or ``--api-key`` is set;
- exits with an error at start if NAME is in ``$FAKE_VLLM_FAIL`` (comma-separated);
- never becomes healthy if NAME is in ``$FAKE_VLLM_HANG``;
- with ``$FAKE_VLLM_CHILD=1`` starts a child process, as vLLM starts engine workers, and leaves
  it running on exit (only a process-group kill stops it);
- otherwise serves the fake OpenAI API (plus /health, /pooling, /classify, /score) on P until SIGTERM.
  Plain chat replies say who answered: ``"NAME@PORT: echo: ..."``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def write_fake_vllm(directory: str | os.PathLike[str]) -> Path:
    """Write an executable ``vllm`` into ``directory`` and return its path."""
    path = Path(directory) / "vllm"
    path.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from tests.fakes.fake_vllm import main\n"
        "sys.exit(main(sys.argv[1:]))\n",
        encoding="utf-8",
    )
    path.chmod(0o755)
    return path


def _names(var: str) -> set[str]:
    return {n.strip() for n in os.environ.get(var, "").split(",") if n.strip()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vllm")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("model")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--served-model-name", default=None)
    serve.add_argument("--api-key", default=None)
    args, _unknown = parser.parse_known_args(argv)
    name = args.served_model_name or args.model

    child = None
    if os.environ.get("FAKE_VLLM_CHILD") == "1":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    record = os.environ.get("FAKE_VLLM_RECORD")
    if record:
        line = {
            "argv": ["vllm", *argv],
            "pid": os.getpid(),
            "child_pid": child.pid if child else None,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "vllm_api_key": os.environ.get("VLLM_API_KEY"),
        }
        with open(record, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
    print(f"INFO fake vllm: loading {args.model} as {name!r} on port {args.port}", flush=True)
    if name in _names("FAKE_VLLM_FAIL"):
        time.sleep(0.3)
        print(
            f"ERROR fake vllm: torch.OutOfMemoryError: CUDA out of memory while loading {name}",
            file=sys.stderr,
            flush=True,
        )
        return 1  # a started child (worker) is left to the launcher's process-group kill
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if name in _names("FAKE_VLLM_HANG"):
        stop.wait()
        return 0

    from tests.fakes.openai_server import FakeOpenAIServer, chat_adapter_reply

    def reply(body: dict, index: int) -> str:
        text = chat_adapter_reply(body, index)
        return text if text.startswith("[[ ##") else f"{name}@{args.port}: {text}"

    delay = float(os.environ.get("FAKE_VLLM_DELAY", "0"))
    time.sleep(delay)
    with FakeOpenAIServer(reply, port=args.port, model_name=name, api_key=args.api_key or os.environ.get("VLLM_API_KEY")):
        print(f"INFO fake vllm: Application startup complete on port {args.port}", flush=True)
        stop.wait()
    print("INFO fake vllm: shutting down", flush=True)
    return 0  # the child (worker) is not stopped here: the launcher must signal the whole group


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
