"""Does ``synth --engine ray`` scale with workers? Records/s of the in-process engine and of Ray with 1, 2, 4 workers.

A fake OpenAI server answers every call after a fixed latency (200 ms by default): the run is
latency-bound, as a GPU backend is from the client's side. Each engine runs ``synth`` over its own
``--prompts`` prompts (distinct texts per run, DSPy's cache off, so nothing is answered from a
cache), one teacher with ``--n`` samples (one ``n``-request) and fusion: two calls per prompt. The
in-process engine has ``--concurrency`` prompts in flight; each Ray worker (an actor per model
stage) has the same number, so one Ray worker and the in-process engine compare at equal
concurrency. Ray runs in one local instance (127.0.0.1, ``--num-cpus``), started once.

Rates: ``records/s`` is records over the run's wall time (actor start-up included, as a user
waits for it); ``steady records/s`` counts the records written between the first and the last
(start-up excluded). Memory: the largest RSS seen of each Ray worker process of the run
(psutil, sampled every 0.5 s), per kind of stage.

Usage:
    flock /tmp/fd-embedded.lock .venv/bin/python benchmarks/bench_ray.py --prompts 1000 --latency 0.2 --concurrency 8 --workers 1,2,4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _prompts(path: Path, label: str, count: int) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(count):
            fh.write(json.dumps({"prompt": f"[{label}] Prompt {i}: explain in two sentences why item {i} matters."}) + "\n")
    return path


class _Memory:
    """The largest RSS of each Ray worker process running a pipeline stage, sampled in a thread."""

    def __init__(self) -> None:
        self.peak: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Memory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for proc in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                if not cmd.startswith("ray::") or "MapBatches(" not in cmd or proc.info["memory_info"] is None:
                    continue
                kind = cmd.split("MapBatches(", 1)[1].split(")", 1)[0]
                rss = proc.info["memory_info"].rss
                if rss > self.peak.get(proc.info["pid"], ("", 0))[1]:
                    self.peak[proc.info["pid"]] = (kind, rss)
            self._stop.wait(0.5)

    def by_kind(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for kind, rss in self.peak.values():
            out.setdefault(kind, []).append(round(rss / 2**20))
        return {k: sorted(v) for k, v in out.items()}


class _Clock:
    """A progress object (``update(n)``) that notes when each record arrived at the driver."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def update(self, k: int) -> None:
        self.times.extend([time.perf_counter()] * k)

    def steady_rate(self) -> float:
        """Records per second between the first and the last record (start-up and the tail excluded)."""
        if len(self.times) < 2 or self.times[-1] == self.times[0]:
            return float("nan")
        return round((len(self.times) - 1) / (self.times[-1] - self.times[0]), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=1000, help="prompts per run")
    ap.add_argument("--latency", type=float, default=0.2, help="seconds the fake server waits before every answer")
    ap.add_argument("--n", type=int, default=2, help="samples of the one teacher (one n-request)")
    ap.add_argument("--concurrency", type=int, default=8, help="prompts in flight: in-process, and per Ray worker")
    ap.add_argument("--workers", default="1,2,4", help="Ray workers (actors per model stage) to try")
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--batch", type=int, default=None, help="rows per Ray block and actor call (default: --concurrency)")
    ap.add_argument("--inprocess", default=None,
                    help="in-process concurrencies to run (default: --concurrency, and twice it: a Ray worker has one actor per "
                         "stage, so up to twice --concurrency prompts in flight); 0: none")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import ray

    from fusion_dspy.lm.endpoints import Endpoint, Pool
    from fusion_dspy.records.ray_runner import RayOptions
    from fusion_dspy.synth import synthesize
    from tests.fakes.openai_server import FakeOpenAIServer

    results: dict = {"prompts": args.prompts, "latency": args.latency, "n": args.n, "concurrency": args.concurrency, "batch": args.batch,
                     "calls_per_prompt": 2, "runs": []}
    with FakeOpenAIServer(delay_rate=1.0, delay_seconds=args.latency) as srv, tempfile.TemporaryDirectory() as tmp:
        ep = Endpoint("teacher", "openai/teacher", api_base=srv.api_base, defaults={"cache": False})
        pool = Pool({ep.name: ep}, (ep.name,), samples_per_teacher=args.n)
        common = {"pool": pool, "methods": ("fusion",), "max_tokens": 64, "concurrency": args.concurrency}

        def record(label: str, workers: int | None, stats, seconds: float, clock: _Clock, memory: dict | None) -> None:
            steady = clock.steady_rate()
            row = {"engine": label, "workers": workers, "done": stats.done, "failed": stats.failed, "seconds": round(seconds, 2),
                   "records_per_s": round(stats.done / seconds, 2), "steady_records_per_s": steady, "calls": srv.calls,
                   "in_flight_max": srv.in_flight_max, "worker_rss_mb": memory}
            results["runs"].append(row)
            print(json.dumps(row), flush=True)

        inprocess = [args.concurrency, 2 * args.concurrency] if args.inprocess is None else [int(x) for x in args.inprocess.split(",") if int(x)]
        for c in inprocess:
            srv.reset()
            out = Path(tmp) / f"inprocess{c}"
            clock = _Clock()
            started = time.perf_counter()
            stats = synthesize(_prompts(Path(tmp) / f"p-in{c}.jsonl", f"inprocess{c}", args.prompts), out, progress=clock,
                               **{**common, "concurrency": c})
            record(f"inprocess c={c}", None, stats, time.perf_counter() - started, clock, None)

        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 object_store_memory=256 * 2**20, logging_level="WARNING")
        try:
            for w in [int(x) for x in args.workers.split(",")]:
                srv.reset()
                out = Path(tmp) / f"ray{w}"
                prompts = _prompts(Path(tmp) / f"p-ray{w}.jsonl", f"ray{w}", args.prompts)
                clock = _Clock()
                with _Memory() as mem:
                    started = time.perf_counter()
                    stats = synthesize(prompts, out, engine="ray", ray=RayOptions(workers=w, batch=args.batch), progress=clock, **common)
                    seconds = time.perf_counter() - started
                record("ray", w, stats, seconds, clock, mem.by_kind())
        finally:
            ray.shutdown()

    runs = results["runs"]
    ray_runs = {r["workers"]: r for r in runs if r["engine"] == "ray"}
    inproc = next((r for r in runs if r["engine"] == f"inprocess c={args.concurrency}"), None)
    if 1 in ray_runs and 4 in ray_runs:
        for key in ("records_per_s", "steady_records_per_s"):
            results[f"scaling_1_to_4_{key}"] = round(ray_runs[4][key] / ray_runs[1][key], 2)
    if inproc and 1 in ray_runs:
        for key in ("records_per_s", "steady_records_per_s"):
            results[f"one_worker_vs_inprocess_same_concurrency_{key}"] = round(ray_runs[1][key] / inproc[key], 3)
    twice = next((r for r in runs if r["engine"] == f"inprocess c={2 * args.concurrency}"), None)
    if twice and 1 in ray_runs:
        for key in ("records_per_s", "steady_records_per_s"):
            results[f"one_worker_vs_inprocess_same_in_flight_{key}"] = round(ray_runs[1][key] / twice[key], 3)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))



if __name__ == "__main__":
    main()
