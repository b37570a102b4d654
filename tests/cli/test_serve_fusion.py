"""``fusion-dspy serve --fusion --pool FILE``: the endpoint as a command, with a key from the environment, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import yaml

from fusion_dspy.serving.ports import free_port
from tests.fakes.openai_server import FakeOpenAIServer
from tests.gateway._endpoint import FUSED, scripted


def test_serve_fusion_over_a_pool_file(tmp_path):
    key = "sk-served-by-test-123"
    with FakeOpenAIServer(scripted()) as fake:
        pool = tmp_path / "pool.yaml"
        entry = {"model_name": "fake", "litellm_params": {"model": "openai/fake", "api_base": fake.api_base}}
        pool.write_text(yaml.safe_dump({"model_list": [entry]}))
        port = free_port()
        env = {**os.environ, "GATEWAY_TEST_KEY": key}
        cmd = [sys.executable, "-m", "fusion_dspy.cli.main", "serve", "--fusion", "--pool", str(pool), "--port", str(port),
               "--api-key", "os.environ/GATEWAY_TEST_KEY", "--n", "3"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.1)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            body = {"model": "fusion", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
            assert httpx.post(url, json=body, timeout=30).status_code == 401
            resp = httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == FUSED
            assert resp.json()["fusion_dspy"]["n"] == 3
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/v1" in out and "fusion-3" in out and "stopped" in err
    assert key not in out + err


def test_serve_needs_exactly_one_mode():
    from typer.testing import CliRunner

    from fusion_dspy.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--fusion", "--embedded"])
    assert result.exit_code != 0 and "exactly one of" in result.output
