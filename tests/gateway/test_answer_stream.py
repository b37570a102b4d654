"""What a streamed fused answer may contain: the Fusor's own answer, checked before each piece leaves."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from fusion_dspy.gateway.answer_stream import HOLDBACK, AnswerStream, AttemptRejected, StopAnswer
from fusion_dspy.types import Candidate
from tests.gateway._endpoint import FUSED, QUESTION, endpoint, requests_of, scripted

MESSAGES = [{"role": "user", "content": QUESTION}]


def _both(server, model: str = "fusion-3"):
    client = openai.OpenAI(base_url=server.api_base, api_key="none", max_retries=0, timeout=30)
    whole = client.chat.completions.create(model=model, messages=MESSAGES)
    chunks = list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    return whole, streamed, final


def test_copied_fence_tags_are_removed_in_the_stream_as_in_the_answer():
    text = 'Paris is the capital of France. <candidate id="2"> It lies on the Seine river, and the Louvre is there. </candidate> Done.'
    with endpoint(scripted(fusor=text), token_delay=0.001) as (_, server):
        whole, streamed, _ = _both(server)
    assert "candidate" not in whole.choices[0].message.content
    assert streamed == whole.choices[0].message.content


def test_an_attempt_that_fails_before_anything_was_sent_is_retried_as_without_a_stream():
    """The fusor's first (greedy) attempt opens with framing: abandoned at once, retried, and the retry streams."""
    framed = "Candidate 1: " + FUSED

    def fusor(body):
        return framed if not body.get("temperature") else FUSED

    with endpoint(scripted(fusor=fusor), token_delay=0.001) as (fake, server):
        whole, streamed, final = _both(server)
        attempts = requests_of(fake, "fusor")
    assert whole.choices[0].message.content == streamed == FUSED
    assert final.model_extra["fusion_dspy"]["cut"] is None and final.model_extra["fusion_dspy"]["fallback"] is None
    assert len(attempts) == 4 and [bool(a.get("temperature")) for a in attempts] == [False, True, False, True]


def test_both_attempts_unusable_falls_back_to_a_candidate_in_both_modes():
    with endpoint(scripted(fusor="Candidate 2 says: " + FUSED), token_delay=0.001) as (_, server):
        whole, streamed, final = _both(server)
    assert whole.choices[0].message.content == streamed and streamed.startswith("Paris, answer")
    assert "returned the first candidate" in final.model_extra["fusion_dspy"]["fallback"]
    assert "returned the first candidate" in whole.model_extra["fusion_dspy"]["fallback"]


def test_a_check_that_fails_after_text_was_sent_cuts_the_answer_there():
    """Framing appears late: what was sent stays, the answer ends before it, nothing is retried."""
    late = FUSED + " As candidate 3 explains, the river matters. " + "More words follow here. " * 8
    with endpoint(scripted(fusor=late), token_delay=0.005) as (fake, server):
        client = openai.OpenAI(base_url=server.api_base, api_key="none", max_retries=0)
        chunks = list(client.chat.completions.create(model="fusion-2", messages=MESSAGES, stream=True,
                                                     stream_options={"include_usage": True}))
        fusor_calls = len(requests_of(fake, "fusor"))
        deadline = time.monotonic() + 3
        while not fake.cancelled and time.monotonic() < deadline:  # the fake notices at its next word
            time.sleep(0.01)
        cancelled = fake.cancelled
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    record = next(c for c in chunks if c.choices and c.choices[0].finish_reason).model_extra["fusion_dspy"]
    assert streamed and FUSED.startswith(streamed[: len(FUSED) - HOLDBACK])
    assert "candidate 3" not in streamed.lower()
    assert "draft reference" in record["cut"] and record["fallback"] is None
    assert fusor_calls == 1 and cancelled == 1  # the fusor's stream was closed, not decoded to the end, and not retried
    assert chunks[-1].usage.model_extra["stages"]["fusion"]["completion_tokens"] > 0


class _Chunk:
    def __init__(self, text: str, predict_id: int, attempt: str = "a1"):
        self.id = attempt
        self.predict_id = predict_id
        self.choices = [{"delta": {"content": text}}]


def _run(stream: AnswerStream, pieces: list[str], predict_id: int = 1, attempt: str = "a1") -> None:
    async def go():
        for piece in pieces:
            await stream.send(_Chunk(piece, predict_id, attempt))

    asyncio.run(go())


def test_the_tail_waits_and_the_rater_s_chunks_are_not_the_answer():
    sent: list[tuple[str, str]] = []

    async def emit(kind, text):
        sent.append((kind, text))

    stream = AnswerStream(emit, fuse_id=1, compare_id=2, sources=[Candidate(0, "m", 0, {"response": "x"})])
    _run(stream, ["  Paris ", "is the capital ", "of France, on the Seine river."])
    _run(stream, ["score 5"], predict_id=99)
    text = "Paris is the capital of France, on the Seine river."
    assert "".join(t for _, t in sent) == text[: len(text) - HOLDBACK] == stream.sent
    assert asyncio.run(stream.finish({"response": text}, None)) == text and "".join(t for _, t in sent) == text


def test_framing_before_the_first_piece_rejects_the_attempt_and_a_retry_after_sending_stops():
    async def emit(kind, text):
        pass

    stream = AnswerStream(emit, fuse_id=1, sources=[Candidate(0, "m", 0, {"response": "x"})])
    with pytest.raises(AttemptRejected):
        _run(stream, ["[[ ## response ## ]] Paris is the capital of France and so on and on."])
    _run(stream, ["Paris is the capital of France, on the Seine river, since long ago."], attempt="a2")
    assert stream.committed
    with pytest.raises(StopAnswer) as info:
        _run(stream, ["Another attempt"], attempt="a3")
    assert info.value.cut and stream.cut


def test_a_cancelled_stream_stops_at_the_next_chunk():
    stream = AnswerStream(None, fuse_id=1)
    _run(stream, ["anything"])  # not live: nothing is checked or sent
    stream.cancel("client disconnected")
    with pytest.raises(StopAnswer, match="client disconnected"):
        _run(stream, ["more"])
