"""Child process that hosts xllamacpp's in-process llama.cpp server.

Run by :class:`fusion_dspy.serving.embedded.EmbeddedServer`; not a public entry point. Living in its
own process keeps llama.cpp's log in a file we can show on failure, and guarantees nothing is left
running: the worker exits on SIGTERM/SIGINT and when its parent closes our stdin (parent death).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fusion_dspy.serving._embedded_worker")
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--alias", default="embedded")
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--n-parallel", type=int, default=4)
    parser.add_argument("--n-threads", type=int, default=0)
    args = parser.parse_args(argv)

    stop = threading.Event()

    def _on_signal(signum, frame):  # noqa: ARG001
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    def _watch_parent():
        try:
            while sys.stdin.buffer.read(1024):
                pass
        except (OSError, ValueError):
            pass
        stop.set()

    parent = os.getppid()

    def _poll_parent():
        # stdin EOF misses a parent whose pipe end was inherited by another process: also watch its pid
        while not stop.wait(1.0):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=_watch_parent, daemon=True).start()
    threading.Thread(target=_poll_parent, daemon=True).start()

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = [args.host]
    params.port = args.port
    params.model_alias = {args.alias}
    params.n_ctx = args.n_ctx
    params.n_parallel = args.n_parallel
    if args.n_threads > 0:
        params.cpuparams.n_threads = args.n_threads
        params.cpuparams_batch.n_threads = args.n_threads
    server = xllamacpp.Server(params)
    print(f"fusion-dspy embedded worker: serving on {server.listening_address}", file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        pass
    del server
    print("fusion-dspy embedded worker: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
