"""RoutedLM: one name over several replicas, through a LiteLLM Router (fake servers, offline)."""

from __future__ import annotations

import asyncio
import copy
import uuid

import dspy
import pytest

from fusion_dspy.errors import ConfigurationError, EndpointError
from fusion_dspy.lm.endpoints import Endpoint
from fusion_dspy.lm.router import RoutedLM
from tests.fakes.openai_server import FakeOpenAIServer


@pytest.fixture()
def two_servers():
    with FakeOpenAIServer(model_name="a") as a, FakeOpenAIServer(model_name="b") as b:
        yield a, b


def _endpoint(*servers: FakeOpenAIServer, num_retries: int = 3) -> Endpoint:
    first, *rest = servers
    return Endpoint(
        name="m",
        model="hosted_vllm/m",
        api_base=first.api_base,
        num_retries=num_retries,
        timeout=10,
        replicas=tuple(("hosted_vllm/m", s.api_base) for s in rest),
    )


def test_endpoint_with_replicas_gives_a_routed_dspy_lm(two_servers):
    lm = _endpoint(*two_servers).lm(max_tokens=32, cache=False)
    assert isinstance(lm, RoutedLM) and isinstance(lm, dspy.LM)
    assert lm.fd_name == "m" and lm.engine == "litellm"


def test_requests_are_spread_over_both_replicas(two_servers):
    a, b = two_servers
    lm = _endpoint(a, b).lm(max_tokens=32, cache=False)
    with dspy.context(lm=lm):
        predict = dspy.Predict("question -> answer")
        answers = [predict(question=f"q{i}").answer for i in range(16)]
    assert answers[3] == "echo: q3"
    assert a.calls + b.calls == 16
    assert a.calls >= 2 and b.calls >= 2
    assert len(lm.history) == 16 and lm.history[-1]["usage"]["prompt_tokens"] > 0
    assert {r["model"] for r in a.requests + b.requests} == {"m"}  # the served model name


def test_n_choices_are_one_request(two_servers):
    a, b = two_servers
    lm = _endpoint(a, b).lm(max_tokens=32, cache=False)
    with dspy.context(lm=lm):
        pred = dspy.Predict("question -> answer", n=4)(question="x")
    assert len(pred.completions.answer) == 4
    assert a.calls + b.calls == 1
    assert (a.requests + b.requests)[0]["n"] == 4


def test_dead_replica_is_cooled_down_and_requests_still_succeed(two_servers):
    a, b = two_servers
    lm = _endpoint(a, b).lm(max_tokens=32, cache=False)
    b.stop()  # connection refused from now on
    with dspy.context(lm=lm):
        predict = dspy.Predict("question -> answer")
        answers = [predict(question=f"q{i}").answer for i in range(12)]
    assert answers == [f"echo: q{i}" for i in range(12)]
    assert a.calls == 12
    cooled = lm.router.cooldown_cache.get_active_cooldowns(
        model_ids=[d["model_info"]["id"] for d in lm.router.model_list], parent_otel_span=None
    )
    assert len(cooled) == 1  # the dead replica, not the live one


def test_failing_replica_is_retried_on_the_other(two_servers):
    a, _ = two_servers
    with FakeOpenAIServer(fail_rate=1.0, fail_status=503) as broken:
        lm = _endpoint(a, broken).lm(max_tokens=32, cache=False)
        with dspy.context(lm=lm):
            predict = dspy.Predict("question -> answer")
            for i in range(8):
                assert predict(question=f"q{i}").answer == f"echo: q{i}"
        assert a.calls == 8
        assert broken.calls <= 2  # cooled down after its first failures


def test_every_replica_dead_raises_endpoint_error():
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        ep = _endpoint(a, b, num_retries=1)
    lm = ep.lm(max_tokens=32, cache=False)
    with pytest.raises(EndpointError, match="every replica failed") as info:
        lm("hello")
    assert info.value.endpoint == "m"


def test_responses_are_cached_without_server_addresses(two_servers):
    a, b = two_servers
    lm = _endpoint(a, b).lm(max_tokens=32, temperature=0.7)
    prompt = f"cache me please {uuid.uuid4().hex}"  # dspy.cache persists on disk across test runs
    first = lm(prompt, rollout_id=1)
    assert a.calls + b.calls == 1
    again = lm(prompt, rollout_id=1)
    assert again == first and a.calls + b.calls == 1
    other = lm.copy(rollout_id=2)(prompt)
    assert other == first and a.calls + b.calls == 2  # another rollout is another request


def test_async_calls_go_through_the_router(two_servers):
    a, b = two_servers
    lm = _endpoint(a, b).lm(max_tokens=32, cache=False)

    async def run():
        with dspy.context(lm=lm):
            predict = dspy.Predict("question -> answer")
            return await asyncio.gather(*(predict.acall(question=f"q{i}") for i in range(6)))

    preds = asyncio.run(run())
    assert [p.answer for p in preds] == [f"echo: q{i}" for i in range(6)]
    assert a.calls + b.calls == 6


def test_copies_share_the_router(two_servers):
    lm = _endpoint(*two_servers).lm(cache=False)
    assert lm.copy(temperature=0.9).router is lm.router
    clone = copy.deepcopy(lm)
    assert clone.router is lm.router and clone.kwargs == lm.kwargs and clone.kwargs is not lm.kwargs


def test_bad_settings_are_rejected(two_servers):
    a, b = two_servers
    ep = _endpoint(a, b)
    with pytest.raises(ConfigurationError, match="routing_strategy"):
        RoutedLM(ep, routing_strategy="round-robin")
    with pytest.raises(ConfigurationError, match="api_base"):
        RoutedLM(ep, api_base="http://x")
    with pytest.raises(ConfigurationError, match="no replicas"):
        RoutedLM(_endpoint(a))


def test_under_dspys_send_stream_the_router_streams_every_chunk_and_returns_the_whole_answer():
    import anyio

    text = "Paris is the capital of France and it lies on the Seine river"
    with FakeOpenAIServer(reply=text, model_name="a") as a, FakeOpenAIServer(reply=text, model_name="b") as b:
        lm = _endpoint(a, b).lm(max_tokens=64, cache=False)
        messages = [{"role": "user", "content": "What is the capital of France?"}]

        class Collect:
            def __init__(self):
                self.chunks = []

            async def send(self, chunk):
                self.chunks.append(chunk)

        async def run():
            sync_stream, async_stream = Collect(), Collect()

            def in_worker():  # as the endpoint and dspy.streamify run a synchronous program
                with dspy.context(send_stream=sync_stream, track_usage=True):
                    return lm.forward(messages=messages)

            whole = await anyio.to_thread.run_sync(in_worker)
            with dspy.context(send_stream=async_stream):
                awhole = await lm.aforward(messages=messages)
            return whole, awhole, sync_stream.chunks, async_stream.chunks

        whole, awhole, chunks, achunks = anyio.run(run)
    for response, parts in ((whole, chunks), (awhole, achunks)):
        streamed = "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
        assert len(parts) > 5 and streamed == text == response.choices[0].message.content
    assert whole.usage.completion_tokens > 0  # track_usage asked the stream for its usage chunk
    assert a.calls + b.calls == 2 and all(r.get("stream") for r in a.requests + b.requests)
