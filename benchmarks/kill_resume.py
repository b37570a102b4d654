"""Runs killed mid-way and resumed: counts of examples done, failed and lost after each round.

Run: .venv/bin/python benchmarks/kill_resume.py [--examples 100] [--kills 3] [--signal KILL|INT]

A flaky stand-in server (10% failures, 5% delays of 0.3 s) serves ``fusion-dspy eval`` (a
subprocess, tiny QA task of ``tests/reliability/_tiny_task.py``, N=2, fusion and majority,
concurrency 4). The run is killed with SIGKILL (or interrupted with SIGINT) ``--kills`` times,
each after a few more records, then run to completion; reruns continue until no example is left
failed. Per round: records, distinct ids, failed-not-done, and lost = examples - done - failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402
from tests.reliability._tiny_task import SPEC, count_records, write_data  # noqa: E402


def _default_sigint() -> None:
    """A child started from a background shell inherits SIGINT ignored; Ctrl-C must reach it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _eval(data: Path, out: Path, api_base: str, work: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DSPY_CACHEDIR": str(work / "dspy_cache")}
    cmd = [sys.executable, "-m", "fusion_dspy.cli.main", "eval", "--task", SPEC, "--data", str(data), "--out", str(out),
           "--n", "2", "--methods", "fusion,majority", "--max-tokens", "32", "--concurrency", "4", "--no-progress",
           "--model", "openai/fake", "--api-base", api_base]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_default_sigint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--signal", choices=["KILL", "INT"], default="KILL")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    data = write_data(work / "d.jsonl", args.examples, salt=uuid.uuid4().hex[:8])
    out = work / "out"
    sig = signal.SIGKILL if args.signal == "KILL" else signal.SIGINT
    rounds = []
    with FakeOpenAIServer(fail_rate=0.1, delay_rate=0.05, delay_seconds=0.3, seed=0) as srv:
        for k in range(args.kills):
            target = (k + 1) * args.examples // (args.kills + 2)
            proc = _eval(data, out, srv.api_base, work)
            while proc.poll() is None and count_records(out)[0] < target:
                time.sleep(0.05)
            proc.send_signal(sig)
            proc.wait(60)
            done, distinct, failed = count_records(out)
            rounds.append({"round": f"{args.signal} {k + 1}", "done": done, "distinct": distinct, "failed": len(failed),
                           "exit": proc.returncode})
        for k in range(5):  # complete; rerun while failures remain
            proc = _eval(data, out, srv.api_base, work)
            proc.wait(600)
            done, distinct, failed = count_records(out)
            rounds.append({"round": f"complete {k + 1}", "done": done, "distinct": distinct, "failed": len(failed),
                           "lost": args.examples - done - len(failed), "exit": proc.returncode})
            if not failed:
                break
    for r in rounds:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
