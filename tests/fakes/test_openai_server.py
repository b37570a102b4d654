"""The fake OpenAI server behaves like the real APIs the library calls (through LiteLLM and dspy.LM)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import dspy
import pytest

from fusion_dspy.lm.endpoints import Endpoint
from tests.fakes.openai_server import FakeOpenAIServer, chat_adapter_reply, output_fields


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _lm(server: FakeOpenAIServer, **kwargs):
    return Endpoint(name="fake", model="openai/fake", api_base=server.api_base, num_retries=0).lm(cache=False, **kwargs)


def test_health_and_models():
    with FakeOpenAIServer(model_name="m1") as server:
        with urllib.request.urlopen(server.url + "/health", timeout=5) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(server.api_base + "/models", timeout=5) as resp:
            assert [m["id"] for m in json.loads(resp.read())["data"]] == ["m1"]


def test_litellm_chat_honours_n_and_reports_usage():
    import litellm

    with FakeOpenAIServer(reply="four words of reply") as server:
        resp = litellm.completion(
            model="openai/fake",
            api_base=server.api_base,
            api_key="x",
            messages=[{"role": "user", "content": "one two three"}],
            n=3,
        )
        assert [c.message.content for c in resp.choices] == ["four words of reply"] * 3
        assert resp.usage.prompt_tokens == 3
        assert resp.usage.completion_tokens == 12
        assert server.calls == 1 and server.requests[0]["n"] == 3


def test_dspy_predict_with_default_reply_fills_every_output_field():
    with FakeOpenAIServer() as server:
        lm = _lm(server)
        with dspy.context(lm=lm):
            pred = dspy.Predict("question -> answer, confidence: float")(question="What is the capital of France?")
        assert pred.answer.startswith("echo: What is the capital of France?")
        assert pred.confidence == 0.5
        assert lm.fd_name == "fake"
        assert lm.history[-1]["usage"]["completion_tokens"] > 0


def test_scripted_reply_and_n_choices_through_dspy():
    def reply(body: dict, i: int) -> str:
        return f"[[ ## answer ## ]]\ncandidate {i}\n\n[[ ## completed ## ]]"

    with FakeOpenAIServer(reply) as server:
        with dspy.context(lm=_lm(server)):
            pred = dspy.Predict("question -> answer", n=3)(question="q")
        assert pred.completions.answer == ["candidate 0", "candidate 1", "candidate 2"]
        assert server.calls == 1  # one request with n=3, not three requests


def test_output_fields_parses_chat_adapter_system_message():
    messages = dspy.ChatAdapter().format(dspy.Signature("question -> answer, ok: bool"), [], {"question": "x"})
    assert output_fields(messages[0]["content"]) == [("answer", "str"), ("ok", "bool")]
    text = chat_adapter_reply({"messages": messages}, 0)
    assert "[[ ## answer ## ]]" in text and "[[ ## ok ## ]]\nTrue" in text and text.endswith("[[ ## completed ## ]]")


def test_completions_endpoint():
    with FakeOpenAIServer(reply="done") as server:
        status, body = _post(server.api_base + "/completions", {"model": "fake", "prompt": "a b", "n": 2})
        assert status == 200
        assert [c["text"] for c in body["choices"]] == ["done", "done"]
        assert body["usage"]["prompt_tokens"] == 2


def test_reward_endpoints_use_the_reward_function():
    with FakeOpenAIServer(reward=lambda text: float(len(text))) as server:
        status, body = _post(server.url + "/pooling", {"model": "rm", "input": ["ab", "abcd"]})
        assert status == 200
        assert [d["data"] for d in body["data"]] == [[[2.0]], [[4.0]]]
        status, body = _post(server.url + "/classify", {"model": "rm", "input": "abc"})
        assert status == 200
        item = body["data"][0]
        assert item["num_classes"] == 2 and item["probs"][1] > 0.9 and abs(sum(item["probs"]) - 1) < 1e-9
        status, body = _post(server.url + "/score", {"model": "rm", "text_1": "q", "text_2": ["a", "bbb"]})
        assert status == 200
        assert [d["score"] for d in body["data"]] == [3.0, 5.0]  # len("q\na"), len("q\nbbb")
        status, body = _post(server.url + "/pooling", {"model": "rm", "messages": [{"role": "user", "content": "xy"}]})
        assert body["data"][0]["data"] == [[2.0]]


def test_fail_rate_is_seeded_and_returns_openai_errors():
    def outcomes(seed: int) -> list[int]:
        with FakeOpenAIServer(fail_rate=0.5, fail_status=503, seed=seed) as server:
            return [_post(server.api_base + "/chat/completions", {"messages": []})[0] for _ in range(12)]

    first = outcomes(1)
    assert first == outcomes(1)
    assert set(first) == {200, 503}
    with FakeOpenAIServer(fail_rate=1.0, fail_status=429) as server:
        status, body = _post(server.api_base + "/chat/completions", {"messages": []})
        assert status == 429 and body["error"]["message"] == "injected failure"


def test_litellm_raises_on_injected_failure():
    import litellm

    with FakeOpenAIServer(fail_rate=1.0) as server:
        with pytest.raises(litellm.exceptions.InternalServerError, match="injected failure"):
            litellm.completion(
                model="openai/fake",
                api_base=server.api_base,
                api_key="x",
                messages=[{"role": "user", "content": "hi"}],
                max_retries=0,
            )


def test_delay_and_in_flight_max():
    with FakeOpenAIServer(reply="ok", delay_rate=1.0, delay_seconds=0.3) as server:
        threads = [
            threading.Thread(target=_post, args=(server.api_base + "/chat/completions", {"messages": []}))
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert server.calls == 3
        assert server.in_flight_max >= 2


def test_unknown_route_and_bad_json():
    with FakeOpenAIServer() as server:
        assert _post(server.url + "/nope", {})[0] == 404
        req = urllib.request.Request(server.api_base + "/chat/completions", data=b"{not json")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=5)
        assert info.value.code == 400


def test_rejects_bad_rates():
    with pytest.raises(ValueError, match="fail_rate"):
        FakeOpenAIServer(fail_rate=1.5)
