"""Issue 15, item 10: two runs pointed at the same --out: the second fails at once, naming the process that holds it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.eval import evaluate
from fusion_dspy.lm.endpoints import Endpoint, Pool
from tests.fakes.fake_vllm import REPO
from tests.fakes.openai_server import FakeOpenAIServer
from tests.reliability._tiny_task import SPEC, TASK, count_records, write_data, write_pool, write_prompts


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "fusion_dspy.cli.main", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_a_second_eval_on_the_same_out_fails_at_once_naming_the_first(tmp_path):
    data = write_data(tmp_path / "d.jsonl", 6, salt=f"lock {uuid.uuid4()}")  # new text: DSPy's disk cache cannot answer
    out = tmp_path / "out"
    with FakeOpenAIServer(delay_rate=1.0, delay_seconds=0.4) as server:
        pool_file = write_pool(tmp_path / "pool.yaml", {"m": server.api_base})
        first = _cli("eval", "--task", SPEC, "--data", str(data), "--pool", str(pool_file), "--out", str(out),
                     "--n", "1", "--methods", "greedy", "--concurrency", "1", "--max-tokens", "16")
        try:
            _wait(lambda: server.calls >= 1 or first.poll() is not None)
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            pool = Pool({"m": Endpoint("m", "openai/m", api_base=server.api_base, api_key="x", num_retries=0)}, ("m",))
            pool.teacher_lms()  # the imports (LiteLLM) are done, so what is timed is the run itself
            started = time.monotonic()
            with pytest.raises(ConfigurationError, match=rf"in use by .*pid {first.pid}"):
                evaluate(TASK, data, pool=pool, out_dir=out, n=1, methods="greedy", progress=False, cache=False)
            assert time.monotonic() - started < 5  # at once, not after the first run
            assert first.wait(120) == 0, first.stderr.read() if first.stderr else ""
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
    records, distinct, lost = count_records(out)
    assert records == distinct == 6 and lost == []
    # the lock goes with its run: the same command now resumes normally (nothing left to do)
    with FakeOpenAIServer() as server:
        pool = Pool({"m": Endpoint("m", "openai/m", api_base=server.api_base, api_key="x", num_retries=0)}, ("m",))
        again = evaluate(TASK, data, pool=pool, out_dir=out, n=1, methods="greedy", max_tokens=16, progress=False, cache=False)
    assert again["run"]["skipped"] == 6


def test_a_second_synth_on_the_same_out_fails_at_once(tmp_path):
    from fusion_dspy.synth import synthesize

    prompts = write_prompts(tmp_path / "p.jsonl", 6, salt=f"lock {uuid.uuid4()}")
    out = tmp_path / "out"
    with FakeOpenAIServer(delay_rate=1.0, delay_seconds=0.4) as server:
        pool_file = write_pool(tmp_path / "pool.yaml", {"m": server.api_base})
        first = _cli("synth", "--prompts", str(prompts), "--pool", str(pool_file), "--out", str(out),
                     "--concurrency", "1", "--max-tokens", "16")
        try:
            _wait(lambda: server.calls >= 1 or first.poll() is not None)
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            pool = Pool({"m": Endpoint("m", "openai/m", api_base=server.api_base, api_key="x", num_retries=0)}, ("m",))
            with pytest.raises(ConfigurationError, match=rf"in use by .*pid {first.pid}"):
                synthesize(prompts, out, pool=pool, max_tokens=16)
            assert first.wait(120) == 0, first.stderr.read() if first.stderr else ""
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
