"""The fusion endpoint on the embedded model, through the official openai client (integration: needs the model)."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from fusion_dspy.gateway import Gateway, GatewayServer
from fusion_dspy.lm.endpoints import Pool

PROMPT = [{"role": "user", "content": "Give three short tips for sleeping well."}]


@pytest.fixture(scope="module")
def endpoint_client(embedded_server):
    pool = Pool({embedded_server.endpoint.name: embedded_server.endpoint}, (embedded_server.endpoint.name,))
    with GatewayServer(Gateway(pool, default_max_tokens=96)) as server:
        client = openai.OpenAI(base_url=server.api_base, api_key="none", timeout=600, max_retries=0)
        yield client, embedded_server.url + "/slots"  # llama.cpp's /slots: which slots are decoding now


@pytest.mark.integration
def test_a_fused_answer_with_usage_per_stage(endpoint_client):
    client, _ = endpoint_client
    resp = client.chat.completions.create(model="fusion-4", messages=PROMPT, max_tokens=96)
    assert resp.choices[0].message.content.strip()
    assert resp.choices[0].finish_reason in ("stop", "length")
    usage = resp.usage.model_dump()
    stages = usage["stages"]
    assert set(stages) == {"sampling", "fusion"} and usage["candidates"] == 4
    assert stages["sampling"]["completion_tokens"] > 0 and stages["fusion"]["prompt_tokens"] > stages["sampling"]["prompt_tokens"]
    assert usage["total_tokens"] == sum(s["total_tokens"] for s in stages.values())


def _stream(client, slots_url: str) -> tuple[float | None, list[float], float | None, dict, bool]:
    started = time.perf_counter()
    role_at = finish_at = None
    content_at: list[float] = []
    record: dict = {}
    decoding_at_first_content = False
    for chunk in client.chat.completions.create(model="fusion-4", messages=PROMPT, max_tokens=96, stream=True,
                                                stream_options={"include_usage": True}):
        now = time.perf_counter() - started
        if chunk.choices and chunk.choices[0].delta.role and role_at is None:
            role_at = now
        if chunk.choices and chunk.choices[0].delta.content:
            if not content_at:  # the only request the model serves now is the fusor's: is it still decoding?
                decoding_at_first_content = any(slot["is_processing"] for slot in httpx.get(slots_url, timeout=5).json())
            content_at.append(now)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish_at = now
            record = chunk.model_extra["fusion_dspy"]
        if chunk.usage is not None:
            assert chunk.usage.model_extra["stages"]["fusion"]["completion_tokens"] > 0
    return role_at, content_at, finish_at, record, decoding_at_first_content


@pytest.mark.integration
def test_the_stream_carries_the_fusor_s_tokens_while_it_decodes(endpoint_client):
    """Content arrives in many chunks, and the first arrives well before the fusor's call has finished.

    llama.cpp's ``/slots`` says whether a request is being decoded when the first content arrives
    (the fusor's is the only one then); and the finish chunk is sent once the fusor's call has
    returned, so a stream that only replayed a finished answer would send its content within
    milliseconds of it. (When the 135M fusor's answer is unusable twice, the answer is a candidate,
    sent whole: the request is made again.)
    """
    for _ in range(2):
        role_at, content_at, finish_at, record, decoding = _stream(*endpoint_client)
        if not record.get("fallback"):
            break
    else:
        pytest.skip(f"the fusor's answer was unusable twice ({record['fallback']}): nothing of it was streamed")
    assert role_at is not None and role_at < content_at[0] / 2  # the stream opened while the candidates were drawn
    assert len(content_at) > 3, content_at
    assert decoding, "the first content delta arrived after the fusor's request had finished"
    assert finish_at - content_at[0] > 0.3, (content_at[0], finish_at)  # the rest was still being decoded
