"""Fusor context overflow: the policy applies before the call, is recorded, and no request overflows."""

from __future__ import annotations

import math

import dspy
import pytest

from fusion_dspy.fuse import Fusor
from fusion_dspy.lm.endpoints import Endpoint
from fusion_dspy.types import Candidate, CandidateSet
from tests.fakes.openai_server import FakeOpenAIServer, _message_text, chat_adapter_reply

WINDOW = 2048
MAX_TOKENS = 64


class QA(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


class ContextLimitedServer(FakeOpenAIServer):
    """Rejects (HTTP 500 with a reason) any chat request whose prompt + max_tokens exceeds ``window``.

    Tokens are counted as characters / 3, the same conservative rate the fusor assumes, over every
    message; real tokenizers give fewer tokens for English, so this is stricter than a real server.
    """

    def __init__(self, window: int, **kwargs):
        self.window = window
        self.sizes: list[int] = []
        self.overflows: list[int] = []
        super().__init__(reply=self._reply, **kwargs)

    def _reply(self, body: dict, index: int) -> str:
        tokens = math.ceil(len(_message_text(body.get("messages") or [])) / 3.0) + int(body.get("max_tokens") or 0)
        if index == 0:
            self.sizes.append(tokens)
        if tokens > self.window:
            self.overflows.append(tokens)
            raise ValueError(f"context length exceeded: {tokens} > {self.window} tokens")
        return chat_adapter_reply(body, index)


def _cset(lengths: list[int], question: str = "What is the capital of France?") -> CandidateSet:
    cands = tuple(Candidate(i, f"t{i}", 0, {"answer": (f"candidate {i} says Paris because " + "blah " * (n // 5))[:n]})
                  for i, n in enumerate(lengths))
    return CandidateSet({"question": question}, cands, ("answer",))


@pytest.fixture
def server():
    with ContextLimitedServer(WINDOW) as srv:
        yield srv


def _fusor(server, policy: str, window: int | None = WINDOW) -> Fusor:
    lm = Endpoint("f", "openai/f", api_base=server.api_base, api_key="x", num_retries=0, context_window=window).lm(
        max_tokens=MAX_TOKENS, temperature=0.0, cache=False
    )
    # min_copied_share=0: the fake's reply takes nothing from the drafts, which is not what these tests are about
    return Fusor(QA, lm=lm, context_policy=policy, retries=0, min_copied_share=0)


def test_the_fake_rejects_an_overflowing_prompt(server):
    """Without a known window the candidates go out whole, and this server rejects them."""
    with pytest.raises(Exception, match="context length exceeded"):
        _fusor(server, "trim", window=None)(candidates=_cset([4000] * 4))
    assert server.overflows


@pytest.mark.parametrize("policy", ["trim", "drop_longest"])
def test_policy_fits_before_the_call_and_is_recorded(server, policy):
    fusion = _fusor(server, policy)(candidates=_cset([6000, 300, 2500, 900]))
    assert server.overflows == [] and len(server.sizes) == 1 and server.sizes[0] <= WINDOW
    assert fusion.fallback is None
    t = fusion.trimmed
    assert t["policy"] == policy and t["window"] == WINDOW
    assert t["tokens_before"] > t["budget_tokens"] >= t["tokens_after"]
    if policy == "drop_longest":
        assert 0 in t["dropped"] and 0 not in fusion.order  # the 6000-character candidate went first
    else:
        assert t["dropped"] == [] and sorted(fusion.order) == [0, 1, 2, 3]


def test_candidates_that_fit_are_not_touched(server):
    fusion = _fusor(server, "trim")(candidates=_cset([200, 300]))
    assert fusion.trimmed is None and server.overflows == []


def test_many_candidates_past_the_per_candidate_floor_still_never_overflow(server):
    """60 candidates: even 16 tokens each exceed the budget, so the last shown are dropped (recorded)."""
    fusion = _fusor(server, "trim")(candidates=_cset([400] * 60))
    assert server.overflows == [] and server.sizes and max(server.sizes) <= WINDOW
    assert fusion.trimmed["dropped"] and len(fusion.order) + len(fusion.trimmed["dropped"]) == 60


def test_a_window_too_small_for_the_task_falls_back_without_a_call(server):
    """A task that cannot fit at all: no request is sent; the fusion falls back, saying why."""
    fusion = _fusor(server, "trim", window=700)(candidates=_cset([300, 300]))
    assert server.calls == 0
    assert "context overflow" in fusion.fallback and "context window" in fusion.trimmed["overflow"]


@pytest.mark.integration
def test_embedded_fusor_accepts_trimmed_candidates(embedded_server):
    """The real llama.cpp server (window n_ctx / n_parallel) takes the trimmed prompt without a context error."""
    window = embedded_server.endpoint.context_window
    lm = embedded_server.endpoint.lm(max_tokens=32, temperature=0.0, cache=False)
    huge = [window * 3 // 2 * 3, window * 3]  # about 1.5x and 1x the window, at 3 characters per token
    fusion = Fusor(QA, lm=lm, retries=0)(candidates=_cset(huge))
    assert fusion.trimmed is not None and fusion.trimmed["window"] == window
    assert fusion.fallback is None or "context" not in fusion.fallback.lower()


def test_a_replicated_endpoint_trims_candidates_to_its_context_window():
    """An endpoint with replicas (a LiteLLM Router behind one LM) keeps the context policy."""
    with ContextLimitedServer(WINDOW) as one, ContextLimitedServer(WINDOW) as two:
        ep = Endpoint("f", "openai/f", api_base=one.api_base, api_key="x", num_retries=0, context_window=WINDOW,
                      replicas=(("openai/f", two.api_base),))
        lm = ep.lm(max_tokens=MAX_TOKENS, temperature=0.0, cache=False)
        assert type(lm).__name__ == "RoutedLM" and lm.fd_context_window == WINDOW
        fusion = Fusor(QA, lm=lm, retries=0, min_copied_share=0)(candidates=_cset([6000, 300, 2500, 900]))
        assert one.overflows == [] and two.overflows == [] and len(one.sizes) + len(two.sizes) == 1
    assert fusion.fallback is None and fusion.trimmed["policy"] == "trim" and fusion.trimmed["window"] == WINDOW
