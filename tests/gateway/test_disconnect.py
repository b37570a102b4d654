"""A client that leaves (or a request past its deadline) cancels its upstream calls: counted on the fake server."""

from __future__ import annotations

import time

import httpx
import pytest

from fusion_dspy.gateway import GatewaySettings
from tests.gateway._endpoint import QUESTION, endpoint, requests_of, scripted, sse_events

BODY = {"model": "fusion-4", "messages": [{"role": "user", "content": QUESTION}]}
LONG = "word " * 30


def _eventually(check, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def _idle(server) -> bool:
    health = httpx.get(server.url + "/health", timeout=5).json()
    return health["in_flight"] == 0 and health["queued"] == 0


def test_leaving_while_candidates_are_drawn_cancels_them_and_no_fusor_is_asked():
    with endpoint(scripted(candidate=LONG), token_delay=0.05) as (fake, server):  # 4 x 30 words: 6 s of sampling
        with httpx.stream("POST", server.api_base + "/chat/completions", json={**BODY, "stream": True}, timeout=30) as resp:
            events = sse_events(resp.iter_lines())  # kept: a dropped line iterator would close the connection now
            first = next(events)
            assert first["choices"][0]["delta"]["role"] == "assistant"
            assert _eventually(lambda: fake.in_flight == 1)  # the candidates' request is being answered
        assert _eventually(lambda: fake.cancelled == 1), fake.cancelled
        time.sleep(0.3)
        assert len(requests_of(fake, "candidate")) == 1 and not requests_of(fake, "fusor")
        assert fake.in_flight == 0 and _eventually(lambda: _idle(server))


def test_leaving_while_the_fusor_decodes_stops_it_without_a_retry():
    fused = "Paris is the capital of France. " + LONG
    with endpoint(scripted(fusor=fused), token_delay=0.05) as (fake, server):  # fusor: 36 words, 1.8 s
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.api_base + "/chat/completions", json=BODY, timeout=httpx.Timeout(30, read=1.2))
        assert _eventually(lambda: fake.cancelled == 1), fake.cancelled
        time.sleep(0.3)
        assert len(requests_of(fake, "fusor")) == 1  # stopped, not retried
        assert fake.in_flight == 0 and _eventually(lambda: _idle(server))


def test_leaving_a_stream_after_its_first_words_stops_the_fusor():
    fused = "Paris is the capital of France, on the Seine. " + LONG
    with endpoint(scripted(fusor=fused), token_delay=0.03) as (fake, server):
        with httpx.stream("POST", server.api_base + "/chat/completions", json={**BODY, "stream": True}, timeout=30) as resp:
            for event in sse_events(resp.iter_lines()):
                if event != "[DONE]" and event["choices"] and event["choices"][0]["delta"].get("content"):
                    break
        assert _eventually(lambda: fake.cancelled == 1), fake.cancelled
        time.sleep(0.3)
        assert len(requests_of(fake, "fusor")) == 1 and fake.in_flight == 0
        assert _eventually(lambda: _idle(server))


def test_a_request_past_its_deadline_gets_504_and_its_upstream_calls_stop():
    settings = GatewaySettings(request_timeout=0.6)
    with endpoint(scripted(candidate=LONG), token_delay=0.05, settings=settings) as (fake, server):
        started = time.perf_counter()
        resp = httpx.post(server.api_base + "/chat/completions", json=BODY, timeout=30)  # the candidates alone take 6 s
        assert resp.status_code == 504 and resp.json()["error"]["code"] == "timeout"
        assert time.perf_counter() - started < 3
        assert _eventually(lambda: fake.cancelled == 1)
        with httpx.stream("POST", server.api_base + "/chat/completions", json={**BODY, "stream": True}, timeout=30) as streamed:
            events = list(sse_events(streamed.iter_lines()))
        assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "timeout"
        assert _eventually(lambda: fake.cancelled == 2) and _eventually(lambda: _idle(server))
