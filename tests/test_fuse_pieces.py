"""The public pieces of one fusion (``Fusor.request / messages / sampling_params / parse / fused / fall_back``), which
``forward`` runs in-process and the Ray engine runs as pipeline passes: they must give what ``forward`` sends and records."""

from __future__ import annotations

import json

import dspy
import pytest

from fusion_dspy.errors import ConfigurationError, first_line
from fusion_dspy.fuse import FusionRequest, Fusor
from fusion_dspy.types import Candidate, CandidateSet, Usage
from tests.fakes.openai_server import FakeOpenAIServer
from tests.test_fuse import _in_turn, _lm

PLAIN = dspy.Signature("prompt -> response")
LOOP = "Subject. " * 60  # a loop with nothing before it worth keeping
GOOD = "Say what you need first, keep it short, and use a clear subject line."


def _texts(*texts, prompt="How do I write clear emails?"):
    return CandidateSet({"prompt": prompt}, tuple(Candidate(i, "m", i, {"response": t}, Usage(0, 40)) for i, t in enumerate(texts)),
                        ("response",))


CSET = _texts("Use a clear subject line and one request per email.", "Keep it short; say what you need first.",
              "Put the ask in the first sentence.")


def test_the_messages_and_sampling_are_what_forward_sends():
    """request + messages + sampling_params give, for each attempt, exactly the messages and parameters forward's calls carry."""
    with FakeOpenAIServer(reply=_in_turn(LOOP, GOOD)) as server:
        fusor = Fusor(PLAIN, lm=_lm(server, temperature=0.0), seed=3)
        fusion = fusor(candidates=CSET)
        sent = server.requests
    request = fusor.request(CSET)
    # the accepted answer is the retry's, written from the drafts rotated
    assert fusion.fallback is None and fusion.order == fusor.attempt_request(request, 1).order != request.order
    assert fusion.max_tokens == request.max_tokens
    assert len(sent) == 2
    for attempt, body in enumerate(sent):
        assert body["messages"] == fusor.messages(fusor.attempt_request(request, attempt))
        params = fusor.sampling_params(request, attempt, seed=7)
        assert (body["max_tokens"], body["temperature"]) == (params["max_tokens"], params["temperature"])
        assert params["seed"] == 7
    assert fusor.sampling_params(request, 0)["temperature"] == 0.0 and fusor.sampling_params(request, 1)["temperature"] == 0.3


def test_parse_accepts_what_forward_accepts_and_refuses_what_its_guard_refuses():
    with FakeOpenAIServer() as server:
        fusor = Fusor(PLAIN, lm=_lm(server))
        request = fusor.request(CSET)
    assert fusor.parse(request, GOOD) == ({"response": GOOD}, None, None)
    cut = fusor.parse(request, GOOD + "\n" + "Put the request in the first sentence of it. " * 20)
    assert cut.outputs == {"response": GOOD + "\nPut the request in the first sentence of it."} and cut.raw.startswith(GOOD)
    assert "where it began to loop" in cut.cut
    assert fusor.parse(request, f"<candidate id=\"1\">{GOOD}</candidate>")[0] == {"response": GOOD}  # copied fence tags dropped
    with pytest.raises(ValueError, match="loops"):
        fusor.parse(request, LOOP)
    with pytest.raises(ValueError, match="framing \\(placeholder"):
        fusor.parse(request, "{response}")
    with pytest.raises(ValueError, match="empty output fields"):
        fusor.parse(request, "")
    fused = fusor.fused(request, {"response": GOOD}, Usage(10, 5, 0.1, 1), truncated=True)
    assert (fused.outputs, fused.order, fused.truncated, fused.fallback) == ({"response": GOOD}, request.order, True, None)


def test_fall_back_gives_forwards_fallback_after_unusable_answers():
    with FakeOpenAIServer(reply=LOOP) as server:
        fusor = Fusor(PLAIN, lm=_lm(server))
        in_process = fusor(candidates=CSET, fallback_scores={0: 1.0, 1: 3.0, 2: 2.0})
        request = fusor.request(CSET)
    try:
        fusor.parse(request, LOOP)
    except ValueError as exc:
        error = first_line(exc)  # as forward and the engine's pass record it
    piece = fusor.fall_back(request, {0: 1.0, 1: 3.0, 2: 2.0}, error=error, attempts=2, usage=in_process.usage, raw=LOOP)
    assert piece.fallback == in_process.fallback
    assert piece.fallback.startswith("fusor output unusable after 2 attempts (ValueError: the fused answer loops")
    assert piece.fallback.endswith("returned the best-scored candidate") and piece.outputs == in_process.outputs == CSET.candidates[1].outputs
    assert piece.to_dict() == in_process.to_dict()


def test_a_context_overflow_is_a_request_without_a_call():
    long = _texts("word " * 4000, "other " * 4000)
    with FakeOpenAIServer() as server:
        fusor = Fusor(PLAIN, lm=_lm(server), context_window=600)
        request = fusor.request(long)
        in_process = fusor(candidates=long)
        calls = len(server.requests)
    assert request.overflow and calls == 0
    with pytest.raises(Exception, match="no fusor call"):
        fusor.messages(request)
    assert fusor.fall_back(request).to_dict() == in_process.to_dict()


def test_the_request_survives_json_and_only_plain_fusors_without_compare_give_messages():
    with FakeOpenAIServer() as server:
        fusor = Fusor(PLAIN, lm=_lm(server), seed=1)
        request = fusor.request(CSET, language="de")
        again = FusionRequest.from_dict(json.loads(json.dumps(request.to_dict())))
        assert again == request and fusor.messages(again) == fusor.messages(request)
        assert "Write the answer in the language with code 'de'." in fusor.messages(request)[0]["content"]
        for other in (Fusor(PLAIN, lm=_lm(server), compare=True), Fusor(PLAIN, lm=_lm(server), format="structured")):
            with pytest.raises(ConfigurationError, match="only a plain fusor without compare"):
                other.messages(other.request(CSET))
