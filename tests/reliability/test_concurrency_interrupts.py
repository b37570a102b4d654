"""Bounded concurrency; Ctrl-C stops promptly; SIGINT or SIGKILL mid-run, then a rerun: nothing lost or duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fusion_dspy.cli.main import app
from tests.fakes.openai_server import FakeOpenAIServer
from tests.reliability._tiny_task import SPEC, count_records, write_data, write_prompts

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("concurrency", "methods", "per_example"), [(1, "fusion", 1), (3, "fusion,majority", 1), (2, "bon,fusion", 4)])
def test_eval_never_exceeds_the_request_bound(tmp_path, concurrency, methods, per_example):
    """Examples in flight x the per-example fan-out (the rater rates up to 4 candidates at once)."""
    data = write_data(tmp_path / "d.jsonl", 12, salt=str(time.time_ns()))
    with FakeOpenAIServer(delay_rate=1.0, delay_seconds=0.05) as srv:
        result = CliRunner().invoke(app, ["eval", "--task", SPEC, "--data", str(data), "--out", str(tmp_path / "out"), "--n", "4",
                                          "--methods", methods, "--max-tokens", "32", "--concurrency", str(concurrency),
                                          "--no-progress", "--model", "openai/fake", "--api-base", srv.api_base])
        assert result.exit_code == 0, result.output + repr(result.exception)
        bound = concurrency * per_example
        assert srv.in_flight_max <= bound, (srv.in_flight_max, bound)
        if bound > 1:
            assert srv.in_flight_max >= 2  # the run did overlap requests: the bound is what stopped it going higher


def test_synth_never_exceeds_its_concurrency(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 10, salt=str(time.time_ns()))
    with FakeOpenAIServer(delay_rate=1.0, delay_seconds=0.05) as srv:
        result = CliRunner().invoke(app, ["synth", "--prompts", str(prompts), "--out", str(tmp_path / "out"), "--n", "3",
                                          "--max-tokens", "32", "--concurrency", "2", "--model", "openai/fake",
                                          "--api-base", srv.api_base])
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert 2 <= srv.in_flight_max <= 2


def _default_sigint() -> None:
    """A child started from a background shell inherits SIGINT ignored; Ctrl-C must reach it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_eval(data: Path, out: Path, srv: FakeOpenAIServer, tmp_path: Path, concurrency: int = 2) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DSPY_CACHEDIR": str(tmp_path / "dspy_cache"), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    cmd = [sys.executable, "-m", "fusion_dspy.cli.main", "eval", "--task", SPEC, "--data", str(data), "--out", str(out),
           "--n", "2", "--methods", "fusion,majority", "--max-tokens", "32", "--concurrency", str(concurrency), "--no-progress",
           "--model", "openai/fake", "--api-base", srv.api_base]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_default_sigint)


def _wait_for_records(out: Path, count: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    path = out / "records.jsonl"
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        if proc.poll() is not None:
            raise AssertionError("the run ended before it was interrupted:\n" + proc.stdout.read())
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"fewer than {count} records after {timeout} s")


def _rerun(data: Path, out: Path) -> dict:
    with FakeOpenAIServer() as srv:
        result = CliRunner().invoke(app, ["eval", "--task", SPEC, "--data", str(data), "--out", str(out), "--n", "2",
                                          "--methods", "fusion,majority", "--max-tokens", "32", "--concurrency", "2",
                                          "--no-progress", "--model", "openai/fake", "--api-base", srv.api_base])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


TOTAL = 30


@pytest.mark.slow
def test_ctrl_c_stops_promptly_and_a_rerun_completes(tmp_path):
    data = write_data(tmp_path / "d.jsonl", TOTAL)
    out = tmp_path / "out"
    with FakeOpenAIServer(delay_rate=1.0, delay_seconds=0.3) as srv:
        proc = _start_eval(data, out, srv, tmp_path)
        _wait_for_records(out, 3, proc)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
        stopped_after = time.monotonic() - sent
    assert proc.returncode == 130, output
    assert "run the same command again" in output
    assert stopped_after < 10, stopped_after  # in-flight examples (2 x ~1 s) finish; nothing new starts
    done, distinct, _ = count_records(out)
    assert 3 <= done < TOTAL and distinct == done
    _rerun(data, out)
    records, distinct, lost = count_records(out)
    assert records == distinct == TOTAL and lost == []


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_loses_nothing(tmp_path):
    data = write_data(tmp_path / "d.jsonl", TOTAL)
    out = tmp_path / "out"
    with FakeOpenAIServer(delay_rate=1.0, delay_seconds=0.3, fail_rate=0.2, seed=1) as srv:
        proc = _start_eval(data, out, srv, tmp_path)
        _wait_for_records(out, 4, proc)
        proc.kill()
        proc.communicate(timeout=30)
    done_before, distinct_before, _ = count_records(out)
    assert distinct_before == done_before < TOTAL
    with (out / "records.jsonl").open("ab") as fh:  # as if the kill had landed inside a write
        fh.write(b'{"id": "torn", "task": "reltin')
    _rerun(data, out)
    records, distinct, lost = count_records(out)
    assert records == distinct == TOTAL and lost == []
