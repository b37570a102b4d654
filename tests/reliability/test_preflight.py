"""Backend down at start: a clear error within a timeout, naming the endpoint, before any work."""

from __future__ import annotations

import socket
import time

import pytest
from typer.testing import CliRunner

from fusion_dspy.cli._models import open_pool
from fusion_dspy.cli.main import app
from fusion_dspy.errors import ConfigurationError, EndpointError
from fusion_dspy.lm.endpoints import Endpoint, Pool
from fusion_dspy.lm.preflight import check_endpoint, check_pool
from tests.fakes.openai_server import FakeOpenAIServer
from tests.reliability._tiny_task import SPEC, write_data, write_pool, write_prompts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _black_hole() -> socket.socket:
    """A socket that accepts connections (backlog) but never answers: a hung server."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


def test_a_live_server_passes():
    with FakeOpenAIServer() as srv:
        check_endpoint(Endpoint("live", "openai/fake", api_base=srv.api_base), timeout=5)


def test_refused_connection_names_endpoint_and_url():
    base = f"http://127.0.0.1:{_free_port()}/v1"
    started = time.perf_counter()
    with pytest.raises(EndpointError) as info:
        check_endpoint(Endpoint("qwen", "hosted_vllm/qwen", api_base=base), timeout=5)
    assert time.perf_counter() - started < 5
    assert "'qwen'" in str(info.value) and base in str(info.value) and "not reachable" in str(info.value)
    assert info.value.endpoint == "qwen" and info.value.api_base == base


def test_a_hung_server_fails_within_the_timeout():
    hole = _black_hole()
    try:
        base = f"http://127.0.0.1:{hole.getsockname()[1]}/v1"
        started = time.perf_counter()
        with pytest.raises(EndpointError, match="within 1 s"):
            check_endpoint(Endpoint("slow", "openai/slow", api_base=base), timeout=1.0)
        assert time.perf_counter() - started < 3.5  # /models times out; /health is not tried after a timeout
    finally:
        hole.close()


def test_a_server_without_those_routes_counts_as_up():
    with FakeOpenAIServer() as srv:
        ep = Endpoint("k", "openai/k", api_base=srv.url + "/nope/v1")  # 404 on both routes: up, but unknown routes
        check_endpoint(ep, timeout=5)


def test_pool_check_reports_every_dead_endpoint():
    dead1, dead2 = (f"http://127.0.0.1:{_free_port()}/v1" for _ in range(2))
    with FakeOpenAIServer() as srv:
        eps = {n: Endpoint(n, f"openai/{n}", api_base=b) for n, b in (("ok", srv.api_base), ("a", dead1), ("b", dead2))}
        with pytest.raises(EndpointError) as info:
            check_pool(Pool(eps, ("ok", "a", "b")), timeout=5)
    assert "2 endpoints are not usable" in str(info.value) and dead1 in str(info.value) and dead2 in str(info.value)


def test_a_dead_replica_is_named():
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    with FakeOpenAIServer() as srv:
        ep = Endpoint("r", "openai/r", api_base=srv.api_base, replicas=(("openai/r", dead),))
        with pytest.raises(EndpointError, match=dead.replace(".", r"\.")):
            check_endpoint(ep, timeout=5)


def test_unknown_provider_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="does not know the provider 'hosted_vlm'"):
        check_endpoint(Endpoint("x", "hosted_vlm/x", api_base="http://127.0.0.1:1/v1"), timeout=1)


def test_open_pool_checks_before_yielding(tmp_path):
    pool = write_pool(tmp_path / "pool.yaml", {"a": f"http://127.0.0.1:{_free_port()}/v1"})
    with pytest.raises(EndpointError, match="'a'"):
        with open_pool(pool, check_timeout=2):
            raise AssertionError("the pool was yielded although its server is down")
    with pytest.raises(ConfigurationError, match="--api-base and --api-key need --model"):
        with open_pool(api_base="http://127.0.0.1:1/v1"):
            pass


@pytest.mark.parametrize("command", ["eval", "synth"])
def test_cli_fails_fast_when_the_backend_is_down(tmp_path, command):
    base = f"http://127.0.0.1:{_free_port()}/v1"
    if command == "eval":
        args = ["eval", "--task", SPEC, "--data", write_data(tmp_path / "d.jsonl", 3), "--out", tmp_path / "out", "--no-progress"]
    else:
        args = ["synth", "--prompts", write_prompts(tmp_path / "p.jsonl", 3), "--out", tmp_path / "out"]
    started = time.perf_counter()
    result = CliRunner().invoke(app, [*map(str, args), "--model", "openai/fake", "--api-base", base])
    assert time.perf_counter() - started < 15
    assert isinstance(result.exception, EndpointError), result.output
    assert "'fake'" in str(result.exception) and base in str(result.exception)
    out = tmp_path / "out"
    assert not any(p.stat().st_size for p in out.rglob("*.jsonl")) if out.exists() else True  # no record, no failure logged
