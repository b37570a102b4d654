"""Issue 15, item 2: servers started by ``serve --config`` are keyed, keys stay out of logs and files."""

from __future__ import annotations

import logging

import pytest

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.lm.endpoints import Endpoint, endpoints_from_model_list, load_pool, model_list_of
from fusion_dspy.lm.preflight import check_pool
from fusion_dspy.serving.config import parse_serve_config
from fusion_dspy.serving.launch import launch
from fusion_dspy.serving.vllm import vllm_command
from tests.fakes.openai_server import FakeOpenAIServer
from tests.serving.test_launch import _config, _starts

SENTINEL = "sk-SERVE-SENTINEL-4d2e9b7a"


def _everything_written(tmp_path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".jsonl")


def test_a_vllm_api_key_reaches_vllm_by_environment_and_the_endpoints_file_as_a_reference(fake_vllm, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FD_VLLM_KEY", SENTINEL)
    cfg = _config(tmp_path, [{"name": "qwen", "engine": "vllm", "model": "Qwen/Qwen2.5-0.5B-Instruct",
                              "api_key": "os.environ/FD_VLLM_KEY"}])
    with caplog.at_level(logging.DEBUG), launch(cfg) as deployment:
        (start,) = _starts(fake_vllm)
        assert start["vllm_api_key"] == SENTINEL  # vLLM reads VLLM_API_KEY: the key is not on the command line
        assert SENTINEL not in " ".join(start["argv"])
        out = deployment.write_endpoints(tmp_path / "endpoints.yaml")
        assert "os.environ/FD_VLLM_KEY" in out.read_text()
        pool = load_pool(out)
        check_pool(pool)  # the server requires the key, and the pool sends it
        reply = pool.endpoints["qwen"].lm(cache=False)("hello")
        assert reply and reply[0].startswith("qwen@")
        assert SENTINEL not in _everything_written(tmp_path)
    assert SENTINEL not in caplog.text


def test_a_literal_key_in_a_serving_configuration_is_refused():
    with pytest.raises(ConfigurationError, match="os.environ/NAME"):
        parse_serve_config([{"name": "q", "engine": "vllm", "model": "m", "api_key": SENTINEL}])
    with pytest.raises(ConfigurationError, match="os.environ/NAME"):
        parse_serve_config([{"name": "u", "engine": "url", "model": "openai/x", "api_base": "https://h/v1", "api_key": SENTINEL}])


def test_a_key_in_extra_flags_is_redacted_from_the_logged_command(fake_vllm, tmp_path, caplog):
    cfg = _config(tmp_path, [{"name": "qwen", "engine": "vllm", "model": "Qwen/Qwen2.5-0.5B-Instruct",
                              "args": {"extra": f"--api-key {SENTINEL} --seed 0"}}])
    with caplog.at_level(logging.DEBUG), launch(cfg):
        pass
    assert "--api-key" in caplog.text and SENTINEL not in caplog.text
    from fusion_dspy.serving.vllm import redacted_command

    assert redacted_command(["vllm", "serve", "m", f"--api-key={SENTINEL}", "--hf-token", SENTINEL]).count(SENTINEL) == 0


def test_string_extra_is_split_with_shell_rules():
    cfg = parse_serve_config([{"name": "q", "engine": "vllm", "model": "m",
                               "args": {"extra": "--chat-template '{{ a b }}' --seed 0"}}])
    assert cfg.models[0].extra == ("--chat-template", "{{ a b }}", "--seed", "0")
    assert vllm_command(cfg.models[0], port=8000)[-4:] == ["--chat-template", "{{ a b }}", "--seed", "0"]


def test_binding_beyond_loopback_without_a_key_warns(fake_vllm, tmp_path, caplog, monkeypatch):
    model = {"name": "qwen", "engine": "vllm", "model": "Qwen/Qwen2.5-0.5B-Instruct"}
    with caplog.at_level(logging.WARNING), launch(_config(tmp_path, [model], host="0.0.0.0")):
        pass
    assert "0.0.0.0" in caplog.text and "api_key" in caplog.text
    caplog.clear()
    monkeypatch.setenv("FD_VLLM_KEY", SENTINEL)
    with caplog.at_level(logging.WARNING), launch(_config(tmp_path, [{**model, "api_key": "os.environ/FD_VLLM_KEY"}])):
        pass
    assert "api_key" not in caplog.text


@pytest.mark.parametrize("base", ["file:///etc/passwd", "http://", "ftp://h/v1", "https:///v1", "gopher://h:70"])
def test_api_base_must_be_an_http_url_with_a_host_for_every_replica(base):
    with pytest.raises(ConfigurationError, match="api_base"):
        Endpoint("m", "openai/m", api_base=base)
    with pytest.raises(ConfigurationError, match="api_base"):
        Endpoint("m", "openai/m", api_base="http://127.0.0.1:1/v1", replicas=(("openai/m", base),))
    with pytest.raises(ConfigurationError, match="api_base"):
        parse_serve_config([{"name": "u", "engine": "url", "model": "openai/x", "api_base": base}])


def test_each_replica_keeps_its_own_key(monkeypatch):
    monkeypatch.setenv("FD_KEY_ONE", "sk-replica-one-111")
    monkeypatch.setenv("FD_KEY_TWO", "sk-replica-two-222")
    with FakeOpenAIServer(api_key="sk-replica-one-111") as one, FakeOpenAIServer(api_key="sk-replica-two-222") as two:
        model_list = [{"model_name": "m", "litellm_params": {"model": "openai/m", "api_base": s.api_base, "api_key": f"os.environ/{k}"}}
                      for s, k in ((one, "FD_KEY_ONE"), (two, "FD_KEY_TWO"))]
        ep = endpoints_from_model_list(model_list)["m"]
        written = model_list_of([ep])
        assert [e["litellm_params"]["api_key"] for e in written] == ["os.environ/FD_KEY_ONE", "os.environ/FD_KEY_TWO"]
        from fusion_dspy.lm.endpoints import Pool

        check_pool(Pool({"m": ep}, ("m",)))  # each replica is probed with its own key
        lm = ep.lm(cache=False)
        for i in range(8):
            assert lm(f"hello {i}")
        assert one.calls and two.calls  # both replicas answered, each with its own key
