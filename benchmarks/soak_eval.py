"""Soak: many examples through ``fusion-dspy eval`` against a flaky stand-in server; nothing lost, memory flat.

Run: .venv/bin/python benchmarks/soak_eval.py [--examples 500] [--concurrency 8] [--fail-rate 0.1] [--delay-rate 0.05]

A FakeOpenAIServer fails ``fail_rate`` of all requests (HTTP 500) and delays ``delay_rate`` of them
by ``delay_seconds``. The server runs in its own process (it keeps every request body); the
eval command runs in this one, through Typer's CliRunner, so that its memory alone is sampled.
It runs the tiny QA task of ``tests/reliability/_tiny_task.py`` with N=2 and the methods bon,
fusion and majority. Reported: examples done and failed (with reasons) and lost
(neither), requests, wall time, and RSS (psutil) over the run: the median while the first
10-30% of the examples were being written against the last 70-100%, the median per tenth of the
run, and the growth over the second half (tenth 6 to tenth 10): a plateau shows as ~0 there.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402
from tests.reliability._tiny_task import SPEC, count_records, write_data  # noqa: E402


def _serve(settings: dict, queue, stop) -> None:
    """The flaky server, in its own process: it keeps every request body, which must not count as eval's memory."""
    with FakeOpenAIServer(**settings) as srv:
        queue.put(srv.api_base)
        stop.wait()
        queue.put((srv.calls, srv.in_flight_max))


def _lines(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def soak(
    examples: int,
    work_dir: str | Path,
    *,
    concurrency: int = 8,
    fail_rate: float = 0.1,
    delay_rate: float = 0.05,
    delay_seconds: float = 0.5,
    seed: int = 0,
    methods: str = "bon,fusion,majority",
    n: int = 2,
) -> dict:
    """Run the soak once; return the figures (see the module docstring)."""
    import psutil
    from typer.testing import CliRunner

    from fusion_dspy.cli.main import app

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    # a fresh salt per run: DSPy's response cache must not answer for the flaky server
    data = write_data(work / "data.jsonl", examples, salt=uuid.uuid4().hex[:8])
    out = work / "out"
    records = out / "records.jsonl"
    proc = psutil.Process()
    samples: list[tuple[int, int]] = []  # (records written, rss bytes)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((_lines(records), proc.memory_info().rss))
            stop.wait(0.2)

    mp = multiprocessing.get_context("spawn")
    queue, server_stop = mp.Queue(), mp.Event()
    settings = {"fail_rate": fail_rate, "delay_rate": delay_rate, "delay_seconds": delay_seconds, "seed": seed}
    server = mp.Process(target=_serve, args=(settings, queue, server_stop), daemon=True)
    server.start()
    try:
        api_base = queue.get(timeout=60)
        sampler = threading.Thread(target=sample, daemon=True)
        started = time.perf_counter()
        sampler.start()
        result = CliRunner().invoke(app, ["eval", "--task", SPEC, "--data", str(data), "--out", str(out), "--n", str(n),
                                          "--methods", methods, "--max-tokens", "32", "--concurrency", str(concurrency),
                                          "--no-progress", "--model", "openai/fake", "--api-base", api_base])
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join(2)
        server_stop.set()
        requests, in_flight_max = queue.get(timeout=30)
    finally:
        server_stop.set()
        server.join(10)
        if server.is_alive():
            server.terminate()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    done, distinct, failed_ids = count_records(out)
    failures = []
    failed_log = out / "records.failed.jsonl"
    if failed_log.exists():
        failures = [json.loads(line) for line in failed_log.read_text(encoding="utf-8").splitlines() if line.strip()]
    first = [rss for k, rss in samples if 0.1 * examples <= k <= 0.3 * examples]
    last = [rss for k, rss in samples if k >= 0.7 * examples]
    mb = 1024 * 1024
    deciles = []  # median RSS while each tenth of the examples was being written: a plateau, or a slope
    for d in range(10):
        window = [rss for k, rss in samples if d * examples / 10 <= k < (d + 1) * examples / 10 or (d == 9 and k >= examples)]
        deciles.append(round(statistics.median(window) / mb, 1) if window else None)
    return {
        "examples": examples,
        "done": done,
        "distinct": distinct,
        "failed": len(failed_ids),
        "lost": examples - done - len(failed_ids),
        "failure_reasons": sorted({f["error"][:160] for f in failures if f["id"] in set(failed_ids)}),
        "exit_code": result.exit_code,
        "requests": requests,
        "in_flight_max": in_flight_max,
        "seconds": round(seconds, 1),
        "rss_first_mb": round(statistics.median(first) / mb, 1) if first else None,
        "rss_last_mb": round(statistics.median(last) / mb, 1) if last else None,
        "rss_growth_mb": round((statistics.median(last) - statistics.median(first)) / mb, 1) if first and last else None,
        "rss_by_decile_mb": deciles,
        "rss_growth_second_half_mb": round(deciles[9] - deciles[5], 1) if deciles[9] and deciles[5] else None,
        "rss_samples": len(samples),
    }


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--fail-rate", type=float, default=0.1)
    parser.add_argument("--delay-rate", type=float, default=0.05)
    parser.add_argument("--delay-seconds", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="soak_eval_")
    figures = soak(args.examples, work, concurrency=args.concurrency, fail_rate=args.fail_rate, delay_rate=args.delay_rate,
                   delay_seconds=args.delay_seconds, seed=args.seed)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
