"""Token counts from the server's tokenizer: a server without /tokenize is not asked on every call, but not forever."""

from __future__ import annotations

from fusion_dspy.lm import token_count
from fusion_dspy.lm.endpoints import Endpoint
from tests.fakes.openai_server import FakeOpenAIServer


def test_a_server_without_tokenize_is_asked_again_after_a_while(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(token_count.time, "monotonic", lambda: clock[0])
    with FakeOpenAIServer() as server:  # no /tokenize route
        lm = Endpoint("f", "openai/f", api_base=server.api_base, api_key="x").lm(cache=False)
        assert token_count.count_tokens(lm, "some words here") is None
        server.tokenize_chars = 4.0  # the same address now has a tokenizer (a restarted or replaced server)
        assert token_count.count_tokens(lm, "some words here") is None  # remembered: not asked again at once
        clock[0] += token_count._RECHECK_SECONDS + 1
        assert token_count.count_tokens(lm, "some words here") == 4
