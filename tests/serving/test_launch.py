"""launch() and ``fusion-dspy serve --config`` with a stand-in ``vllm`` executable first on PATH."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from fusion_dspy.errors import ConfigurationError, ServerError
from fusion_dspy.lm.endpoints import load_pool
from fusion_dspy.serving.config import parse_serve_config
from fusion_dspy.serving.launch import Interrupted, launch, serve_config
from fusion_dspy.serving.ports import free_port
from tests.fakes.fake_vllm import REPO


def _starts(record: Path) -> list[dict]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


def _pids(record: Path) -> list[int]:
    return [p for s in _starts(record) for p in (s["pid"], s["child_pid"]) if p]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _config(tmp_path: Path, models: list[dict], **top) -> dict:
    return {"log_dir": str(tmp_path / "logs"), "startup_timeout": 30, "models": models, **top}


def _chat(api_base: str, model: str, text: str = "hello") -> str:
    import litellm

    resp = litellm.completion(
        model=model, api_base=api_base, api_key="x", messages=[{"role": "user", "content": text}], max_retries=0
    )
    return resp.choices[0].message.content


def test_launch_starts_every_server_writes_endpoints_and_stops_all(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setenv("SOME_KEY", "sk-some-key-value")  # a missing variable is a ConfigurationError (test_secrets)
    ports = [free_port(), free_port()]
    cfg = _config(
        tmp_path,
        [
            {"name": "qwen", "engine": "vllm", "model": "Qwen/Qwen2.5-0.5B-Instruct", "replicas": ports,
             "cuda_devices": ["0", "1"], "args": {"max_model_len": 2048, "enable_prefix_caching": True, "max_num_seqs": 8}},
            {"name": "rm", "engine": "vllm", "model": "Skywork/reward", "role": "reward"},
            {"name": "remote", "engine": "url", "model": "openai/gpt-x", "api_base": "https://example.invalid/v1",
             "api_key": "os.environ/SOME_KEY"},
        ],
    )
    with launch(cfg) as deployment:
        starts = _starts(fake_vllm)
        assert len(starts) == 3
        by_port = {s["argv"][s["argv"].index("--port") + 1]: s for s in starts}
        q0 = by_port[str(ports[0])]
        assert q0["argv"] == [
            "vllm", "serve", "Qwen/Qwen2.5-0.5B-Instruct", "--host", "127.0.0.1", "--port", str(ports[0]),
            "--served-model-name", "qwen", "--max-model-len", "2048", "--enable-prefix-caching", "--max-num-seqs", "8",
        ]
        assert q0["cuda_visible_devices"] == "0" and by_port[str(ports[1])]["cuda_visible_devices"] == "1"
        rm = next(s for s in starts if "rm" in s["argv"])
        assert rm["argv"][-2:] == ["--runner", "pooling"]
        assert all(_alive(p) for p in _pids(fake_vllm))

        # the endpoints file: replicas share a model_name; vLLM models are hosted_vllm/NAME
        out = deployment.write_endpoints(tmp_path / "endpoints.yaml")
        pool = load_pool(out)
        assert pool.reward_model == "rm"
        assert set(pool.teachers) == {"qwen", "remote"}
        qwen = pool.endpoints["qwen"]
        assert qwen.model == "hosted_vllm/qwen" and qwen.context_window == 2048
        assert {qwen.api_base, *(b for _, b in qwen.replicas)} == {f"http://127.0.0.1:{p}/v1" for p in ports}
        assert "os.environ/SOME_KEY" in out.read_text() and "sk-some-key-value" not in out.read_text()  # secrets stay references
        # a chat request through the endpoints file reaches the right server
        for ep_model, api_base in [(qwen.model, qwen.api_base), *qwen.replicas]:
            port = api_base.split(":")[-1].split("/")[0]
            assert _chat(api_base, ep_model).startswith(f"qwen@{port}: echo: hello")
        rm_ep = pool.endpoints["rm"]
        assert _chat(rm_ep.api_base, rm_ep.model).startswith("rm@")
        assert (tmp_path / "logs" / "qwen.log").exists() and (tmp_path / "logs" / "qwen.1.log").exists()
        pids = _pids(fake_vllm)
    assert not [p for p in pids if _alive(p)], "a server or its worker outlived launch()"


def test_replicas_through_the_endpoints_file_are_routed_and_survive_a_dead_one(fake_vllm, tmp_path):
    import dspy

    cfg = _config(tmp_path, [{"name": "m", "engine": "vllm", "model": "org/m", "replicas": 2}])
    with launch(cfg) as deployment:
        pool = deployment.pool()
        lm = pool.endpoints["m"].lm(cache=False, max_tokens=16)
        assert type(lm).__name__ == "RoutedLM" and lm.fd_name == "m"
        answered = {lm(f"q{i}")[0].split(":")[0] for i in range(16)}
        assert answered == {f"m@{p}" for p in _ports(deployment)}  # both replicas got requests
        with dspy.context(lm=lm):
            assert dspy.Predict("question -> answer")(question="hi").answer == "echo: hi"

        dead = deployment.servers[1]
        os.killpg(dead.pid, signal.SIGKILL)
        dead._proc.wait(5)
        survivors = {lm(f"after {i}")[0].split(":")[0] for i in range(8)}
        assert survivors == {f"m@{deployment.servers[0].port}"}
        with pytest.raises(ServerError, match=r"'m\[1\]' stopped unexpectedly"):
            deployment.check()


def _ports(deployment) -> list[int]:
    return [s.port for s in deployment.servers]


def test_one_server_failing_names_it_with_its_log_and_stops_the_others(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_FAIL", "broken")
    cfg = _config(
        tmp_path,
        [
            {"name": "good", "engine": "vllm", "model": "org/good"},
            {"name": "broken", "engine": "vllm", "model": "org/broken"},
        ],
    )
    with pytest.raises(ServerError) as info:
        with launch(cfg):
            pytest.fail("launch() must not yield when a server fails")
    err = info.value
    assert err.name == "broken"
    assert "'broken'" in str(err) and "exited with code 1" in str(err)
    assert "CUDA out of memory while loading broken" in err.log_tail
    assert "CUDA out of memory" in str(err)  # the tail is in the message the user sees
    pids = _pids(fake_vllm)
    assert len(_starts(fake_vllm)) == 2
    assert not [p for p in pids if _alive(p)], "the healthy server (or a worker) was left running"


def test_a_server_that_never_gets_healthy_times_out(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_HANG", "slow")
    cfg = _config(tmp_path, [{"name": "slow", "engine": "vllm", "model": "org/slow"}], startup_timeout=1.5)
    with pytest.raises(ServerError, match=r"'slow' not healthy within 2s") as info:
        with launch(cfg):
            pass
    assert "loading org/slow" in info.value.log_tail
    assert not [p for p in _pids(fake_vllm) if _alive(p)]


def test_a_port_in_use_is_refused_before_anything_starts(fake_vllm, tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = _config(
            tmp_path,
            [
                {"name": "a", "engine": "vllm", "model": "org/a"},
                {"name": "b", "engine": "vllm", "model": "org/b", "port": port},
            ],
        )
        with pytest.raises(ConfigurationError, match=rf"model 'b': port {port} .* already in use"):
            with launch(cfg):
                pass
    assert _starts(fake_vllm) == []


def test_missing_vllm_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("FUSION_DSPY_VLLM", raising=False)
    with pytest.raises(ConfigurationError, match=r"vllm executable 'vllm' was not found .*pip install"):
        with launch([{"name": "a", "engine": "vllm", "model": "org/a"}]):
            pass


def test_serve_config_stops_on_the_stop_event(fake_vllm, tmp_path):
    stop = threading.Event()
    ready: list = []
    cfg = parse_serve_config(_config(tmp_path, [{"name": "a", "engine": "vllm", "model": "org/a"}]))

    def on_ready(deployment, path):
        ready.append(path)
        stop.set()

    serve_config(cfg, endpoints_out=tmp_path / "ep.yaml", stop=stop, on_ready=on_ready)
    assert ready == [tmp_path / "ep.yaml"] and load_pool(ready[0]).teachers == ("a",)
    assert not [p for p in _pids(fake_vllm) if _alive(p)]


def test_stop_event_interrupts_startup(fake_vllm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_HANG", "a")
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    cfg = _config(tmp_path, [{"name": "a", "engine": "vllm", "model": "org/a"}])
    with pytest.raises(Interrupted):
        with launch(cfg, stop=stop):
            pass
    assert not [p for p in _pids(fake_vllm) if _alive(p)]


def test_cli_serve_config_two_models_then_sigterm_leaves_nothing(fake_vllm, tmp_path):
    import yaml

    config = tmp_path / "serve.yaml"
    config.write_text(
        yaml.safe_dump(
            _config(
                tmp_path,
                [
                    {"name": "alpha", "engine": "vllm", "model": "org/alpha", "role": ["teacher", "fusor"]},
                    {"name": "beta", "engine": "vllm", "model": "org/beta", "role": "teacher"},
                ],
            )
        )
    )
    endpoints = tmp_path / "endpoints.yaml"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fusion_dspy.cli.main",
            "serve",
            "--config",
            str(config),
            "--endpoints-out",
            str(endpoints),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not endpoints.exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "serve --config did not write the endpoints file"
            time.sleep(0.1)
        pool = load_pool(endpoints)
        assert pool.teachers == ("alpha", "beta") and pool.fusor == "alpha"
        for name in ("alpha", "beta"):
            ep = pool.endpoints[name]
            assert _chat(ep.api_base, ep.model).startswith(f"{name}@")
        pids = _pids(fake_vllm)
        assert len(pids) == 4 and all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "endpoints:" in out and "alpha\thttp://127.0.0.1:" in out and "stopped" in out
    assert not [p for p in pids if _alive(p)], "SIGTERM left a server or worker running"


def test_cli_reports_a_failing_server(fake_vllm, tmp_path, monkeypatch):
    import yaml

    monkeypatch.setenv("FAKE_VLLM_FAIL", "beta")
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path, [
        {"name": "alpha", "engine": "vllm", "model": "org/alpha"},
        {"name": "beta", "engine": "vllm", "model": "org/beta"},
    ])))
    result = subprocess.run(
        [sys.executable, "-m", "fusion_dspy.cli.main", "serve", "--config", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "error: vLLM server 'beta'" in result.stderr and "CUDA out of memory" in result.stderr
    assert not [p for p in _pids(fake_vllm) if _alive(p)]


@pytest.mark.integration
def test_embedded_engine_in_a_configuration(tmp_path):
    cfg = _config(tmp_path, [{"name": "small", "engine": "embedded", "args": {"n_ctx": 2048, "n_parallel": 1}}])
    with launch(cfg) as deployment:
        ep = deployment.endpoints["small"]
        assert ep.model == "openai/embedded" and ep.context_window == 2048
        out = ep.lm(max_tokens=4, cache=False)("Say hi")
        assert isinstance(out[0], str)
        server = deployment.servers[0]
    assert not server.running
