"""``fusion-dspy synth``: the command end to end against a fake server, and SIGKILL then rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fusion_dspy.cli.main import app
from fusion_dspy.errors import ConfigurationError, DataError
from fusion_dspy.records import iter_records
from tests.fakes.openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[2]


def _prompts(path: Path, n: int) -> Path:
    rows = [
        {"prompt": f"prompt number {i}: explain item {i}"} if i % 2 else {"prompt": [{"role": "user", "content": f"chat prompt {i}"}]}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "DSPY_CACHEDIR": str(tmp_path / "dspy-cache"), "PYTHONPATH": str(REPO)}


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def test_synth_command_writes_rows_and_parquet(tmp_path, server, monkeypatch):
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy-cache"))
    prompts = _prompts(tmp_path / "p.jsonl", 3)
    out = tmp_path / "out"
    args = ["synth", "--prompts", str(prompts), "--out", str(out), "--model", "openai/fake", "--api-base", server.api_base,
            "--n", "2", "--methods", "fusion,bon", "--max-tokens", "64", "--min-length", "3", "--parquet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["done"], summary["failed"]) == (3, 0) and Path(summary["parquet"]).is_file()
    rows = list(iter_records(out / "synth.jsonl"))
    assert len(rows) == 3 and all(r["messages"][-1]["role"] == "assistant" for r in rows)
    assert rows[0]["config"]["samples_per_teacher"] == 2 and rows[0]["config"]["max_tokens"] == 64
    assert rows[0]["config"]["filters"] == {"languages": None, "min_length": 3}
    again = CliRunner().invoke(app, args[:-1] + ["--limit", "2"])
    assert again.exit_code == 0 and json.loads(again.stdout.strip().splitlines()[-1])["skipped"] == 2


def test_synth_with_pool_file(tmp_path, server, monkeypatch):
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy-cache"))
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "model_list:\n"
        f"  - model_name: small\n    litellm_params: {{model: openai/small, api_base: '{server.api_base}'}}\n"
        f"  - model_name: large\n    litellm_params: {{model: openai/large, api_base: '{server.api_base}'}}\n"
        "fusion_dspy:\n  teachers: [small, large]\n  fusor: large\n  samples_per_teacher: 2\n  temperature: 0.5\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["synth", "--prompts", str(_prompts(tmp_path / "p.jsonl", 2)), "--out", str(out), "--pool", str(pool)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = list(iter_records(out / "synth.jsonl"))
    assert len(rows) == 2
    assert sorted(c["model"] for c in rows[0]["candidates"]["candidates"]) == ["large", "large", "small", "small"]
    assert rows[0]["config"]["temperature"] == 0.5 and rows[0]["config"]["fusor"]["name"] == "large"


def test_synth_bad_input(tmp_path, server):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": ""}\n')
    base = ["synth", "--out", str(tmp_path / "out"), "--model", "openai/fake", "--api-base", server.api_base]
    result = CliRunner().invoke(app, base + ["--prompts", str(bad), "--limit", "5"])
    assert isinstance(result.exception, DataError) and f"{bad}:2:" in str(result.exception)
    result = CliRunner().invoke(app, base + ["--prompts", str(bad), "--methods", "fusion,vote"])
    assert isinstance(result.exception, ConfigurationError) and "unknown synth method" in str(result.exception)
    result = CliRunner().invoke(app, base + ["--prompts", str(bad), "--language", "zz"])
    assert isinstance(result.exception, ConfigurationError) and "unknown language code" in str(result.exception)
    result = CliRunner().invoke(app, base + ["--prompts", str(bad), "--skip-bad-rows"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["bad_rows"] == 1
    assert len(list(iter_records(tmp_path / "out" / "synth.jsonl"))) == 1  # the good row (its calls may be cached)


def test_synth_bad_input_exit_code(tmp_path):
    """Through the real entry point a data error is one line on stderr and exit code 2."""
    missing = tmp_path / "missing.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "fusion_dspy.cli.main", "synth", "--prompts", str(missing), "--out", str(tmp_path / "o"),
         "--model", "openai/fake", "--api-base", "http://127.0.0.1:9/v1"],
        capture_output=True, text=True, env=_env(tmp_path), timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"error: {missing}: prompts file does not exist" in proc.stderr


def test_sigkill_then_rerun_finishes_without_loss_or_duplicates(tmp_path):
    n = 8
    prompts = _prompts(tmp_path / "p.jsonl", n)
    out = tmp_path / "out"
    records = out / "synth.jsonl"
    with FakeOpenAIServer(delay_rate=1.0, delay_seconds=0.15) as srv:
        cmd = [sys.executable, "-m", "fusion_dspy.cli.main", "synth", "--prompts", str(prompts), "--out", str(out),
               "--model", "openai/fake", "--api-base", srv.api_base, "--n", "2", "--concurrency", "2", "--max-tokens", "64"]
        proc = subprocess.Popen(cmd, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if records.exists() and records.read_bytes().count(b"\n") >= 3:
                    break
                if proc.poll() is not None:
                    pytest.fail(f"synth ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.05)
            else:
                pytest.fail("synth wrote no rows in 120 s")
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        killed_rows = records.read_bytes().count(b"\n")
        assert 3 <= killed_rows < n, "the kill came in the middle of the run"
        with records.open("ab") as fh:  # as if the kill had landed inside a write
            fh.write(b'{"id": "torn", "messages": [{"role": "us')
        rerun = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["skipped"] == killed_rows and summary["done"] == n - killed_rows
    data = records.read_bytes()
    assert data.endswith(b"\n")
    rows = [json.loads(line) for line in data.decode().splitlines()]
    assert len(rows) == n and len({r["id"] for r in rows}) == n
    assert all(r["messages"][-1]["role"] == "assistant" and r["messages"][-1]["content"] for r in rows)
