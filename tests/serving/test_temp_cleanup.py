"""Issue 15, item 11: temporary logs the project creates are removed on normal exit and on Ctrl-C; asked-for logs stay."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fusion_dspy.serving import embedded as embedded_module
from fusion_dspy.serving.embedded import EmbeddedServer
from fusion_dspy.serving.launch import launch
from tests.fakes.fake_vllm import REPO

VLLM_MODEL = {"name": "qwen", "engine": "vllm", "model": "Qwen/Qwen2.5-0.5B-Instruct"}


@pytest.mark.parametrize("ctrl_c", [False, True])
def test_launch_removes_its_temporary_log_folder(fake_vllm, ctrl_c):
    seen = []
    with pytest.raises(KeyboardInterrupt) if ctrl_c else _nothing():
        with launch({"startup_timeout": 30, "models": [VLLM_MODEL]}) as deployment:
            seen.append(deployment.log_dir)
            assert deployment.log_dir.is_dir() and any(deployment.log_dir.iterdir())
            if ctrl_c:
                raise KeyboardInterrupt
    assert not seen[0].exists()


def test_launch_keeps_the_logs_where_the_user_asked(fake_vllm, tmp_path):
    with launch({"startup_timeout": 30, "log_dir": str(tmp_path / "logs"), "models": [VLLM_MODEL]}):
        pass
    assert (tmp_path / "logs" / "qwen.log").is_file()


@pytest.fixture()
def fake_embedded(tmp_path, monkeypatch):
    """EmbeddedServer with a stand-in worker (the fake OpenAI server) and a stand-in GGUF file."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 64)
    real_popen = subprocess.Popen
    monkeypatch.delenv("FAKE_VLLM_CHILD", raising=False)
    monkeypatch.delenv("FAKE_VLLM_RECORD", raising=False)

    def popen(cmd, **kwargs):
        port = cmd[cmd.index("--port") + 1]
        code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from tests.fakes.fake_vllm import main; "
                f"sys.exit(main(['serve', 'm', '--port', {port!r}]))")
        return real_popen([sys.executable, "-c", code], **kwargs)

    monkeypatch.setattr(embedded_module.subprocess, "Popen", popen)
    return model


@pytest.mark.parametrize("ctrl_c", [False, True])
def test_the_embedded_server_removes_its_temporary_log(fake_embedded, ctrl_c):
    seen = []
    with pytest.raises(KeyboardInterrupt) if ctrl_c else _nothing():
        with EmbeddedServer(fake_embedded, startup_timeout=30) as server:
            seen.append(server.log_path)
            assert server.log_path.is_file()
            if ctrl_c:
                raise KeyboardInterrupt
    assert not seen[0].exists()


def test_the_embedded_server_keeps_an_asked_for_log(fake_embedded, tmp_path):
    with EmbeddedServer(fake_embedded, startup_timeout=30, log_path=tmp_path / "embedded.log"):
        pass
    assert (tmp_path / "embedded.log").is_file()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
