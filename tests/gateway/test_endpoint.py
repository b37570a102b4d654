"""The fusion endpoint on a fake server, through the official openai client: answers, streams, usage, Best-of-N, members."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from fusion_dspy.gateway import GatewaySettings
from tests.gateway._endpoint import FUSED, QUESTION, endpoint, requests_of, scripted, sse_events

MESSAGES = [{"role": "user", "content": QUESTION}]


def _client(server, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_base, api_key=key, max_retries=0, timeout=30)


def test_fusion_answers_with_the_fused_text_and_bills_every_stage():
    with endpoint(scripted()) as (fake, server):
        resp = _client(server).chat.completions.create(model="fusion-4", messages=MESSAGES)
        assert resp.choices[0].message.content == FUSED
        assert resp.choices[0].finish_reason == "stop" and resp.model == "fusion-4"
        candidates, fusor = requests_of(fake, "candidate"), requests_of(fake, "fusor")
        assert len(candidates) == 1 and candidates[0]["n"] == 4 and candidates[0]["messages"] == MESSAGES
        assert len(fusor) == 1 and QUESTION in fusor[0]["messages"][-1]["content"]
        assert all(f"Paris, answer {i}." in fusor[0]["messages"][-1]["content"] for i in range(4))
        usage = resp.usage.model_dump()
        stages = usage["stages"]
        assert set(stages) == {"sampling", "fusion"} and usage["candidates"] == 4
        assert usage["prompt_tokens"] == stages["sampling"]["prompt_tokens"] + stages["fusion"]["prompt_tokens"]
        assert usage["completion_tokens"] == stages["sampling"]["completion_tokens"] + stages["fusion"]["completion_tokens"]
        assert stages["sampling"]["completion_tokens"] == 4 * 3  # the fake counts words: "Paris, draft i." x 4
        assert stages["fusion"]["completion_tokens"] == len(FUSED.split())
        record = resp.model_extra["fusion_dspy"]
        assert record["method"] == "fusion" and record["n"] == 4 and record["fallback"] is None and sorted(record["order"]) == [0, 1, 2, 3]


def test_a_fused_answer_ending_in_a_loop_comes_without_the_loop_and_says_so():
    looped = FUSED + "\n" + "Paris has many bridges over the river Seine. " * 20
    with endpoint(scripted(fusor=looped)) as (_, server):
        resp = _client(server).chat.completions.create(model="fusion-4", messages=MESSAGES)
    record = resp.model_extra["fusion_dspy"]
    assert resp.choices[0].message.content == FUSED + "\nParis has many bridges over the river Seine."
    assert record["fallback"] is None and "where it began to loop" in record["cut"]


def test_usage_counts_every_choice_where_the_server_reports_one():
    """llama.cpp reports one choice's completion tokens for n=4; the bill counts each draft with /tokenize."""
    drafts = ["Paris." * 20, "Paris, the capital.", "Paris", "It is Paris, on the Seine."]
    with endpoint(scripted(candidate=lambda body, i: drafts[i]), usage_first_choice=True, tokenize_chars=4) as (_, server):
        resp = _client(server).chat.completions.create(model="fusion-4", messages=MESSAGES)
    sampling = resp.usage.model_dump()["stages"]["sampling"]
    assert sampling["completion_tokens"] == sum(-(-len(d) // 4) for d in drafts) == 44  # the fake reported 30


def test_the_streamed_answer_is_the_whole_answer_in_several_chunks():
    with endpoint(scripted(), token_delay=0.002) as (_, server):
        whole = _client(server).chat.completions.create(model="fusion-3", messages=MESSAGES)
        chunks = list(_client(server).chat.completions.create(model="fusion-3", messages=MESSAGES, stream=True,
                                                               stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3 and "".join(pieces) == whole.choices[0].message.content == FUSED
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    assert finish[0].model_extra["fusion_dspy"]["fallback"] is None
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert set(chunks[-1].usage.model_extra["stages"]) == {"sampling", "fusion"}
    assert len({c.id for c in chunks}) == 1


def test_a_fusor_with_replicas_streams_through_the_router_in_several_chunks():
    from fusion_dspy.lm.router import RoutedLM

    with endpoint(scripted(), token_delay=0.002, replicas=1) as (fake, server):
        assert all(isinstance(lm, RoutedLM) for lm in server.gateway.lms.values())
        chunks = list(_client(server).chat.completions.create(model="fusion-2", messages=MESSAGES, stream=True))
        fusor_requests = requests_of(fake, "fusor")
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3 and "".join(pieces) == FUSED
    assert fusor_requests and all(r.get("stream") for r in fusor_requests)


def test_the_stream_opens_while_candidates_are_drawn_and_content_arrives_while_the_fusor_decodes():
    """The role chunk comes at once; the first content comes while the fusor's request is still decoding."""
    with endpoint(scripted(candidate="Paris is the answer, draft {i}."), token_delay=0.04) as (fake, server):
        started = time.perf_counter()
        first_role = first_content = None
        fusor_running = None
        body = {"model": "fusion-2", "messages": MESSAGES, "stream": True}
        with httpx.stream("POST", server.api_base + "/chat/completions", json=body, timeout=30) as resp:
            for event in sse_events(resp.iter_lines()):
                if event == "[DONE]":
                    break
                delta = event["choices"][0]["delta"] if event["choices"] else {}
                if delta.get("role") and first_role is None:
                    first_role = time.perf_counter() - started
                if delta.get("content") and first_content is None:
                    first_content = time.perf_counter() - started
                    fusor_running = fake.in_flight == 1 and len(requests_of(fake, "fusor")) == 1
        total = time.perf_counter() - started
    sampling = 2 * 6 * 0.04  # two candidates of 6 words each, one request
    assert first_role < sampling / 2, (first_role, sampling)
    assert fusor_running, "the first content delta must arrive before the fusor's request has finished"
    assert first_content < total - 0.3, (first_content, total)


def test_best_of_n_returns_the_candidate_the_rater_scores_highest():
    def rater(body):
        return 5 if "answer 2" in body["messages"][-1]["content"] else 2

    with endpoint(scripted(candidate="Paris, answer {i}.", rater=rater)) as (fake, server):
        resp = _client(server).chat.completions.create(model="best-of-n-3", messages=MESSAGES)
        assert resp.choices[0].message.content == "Paris, answer 2."
        assert len(requests_of(fake, "rater")) == 3 and not requests_of(fake, "fusor")
        stages = resp.usage.model_dump()["stages"]
        assert set(stages) == {"sampling", "rating"} and stages["rating"]["calls"] == 3
        assert resp.model_extra["fusion_dspy"]["scores"] == {"0": 2.0, "1": 2.0, "2": 5.0}
        streamed = list(_client(server).chat.completions.create(model="best-of-n-3", messages=MESSAGES, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "Paris, answer 2."


def test_a_pool_member_by_name_is_passed_through():
    with endpoint(scripted(candidate="Member says Paris."), members=("small", "big")) as (fake, server):
        client = _client(server)
        resp = client.chat.completions.create(model="big", messages=MESSAGES, temperature=0.2, max_tokens=20)
        assert resp.choices[0].message.content == "Member says Paris." and resp.model == "big"
        sent = fake.requests[-1]
        assert sent["messages"] == MESSAGES and sent["temperature"] == 0.2 and sent["max_tokens"] == 20 and "n" not in sent
        chunks = list(client.chat.completions.create(model="small", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Member says Paris."
        assert chunks[-1].usage.completion_tokens == 3
        two = client.chat.completions.create(model="small", messages=MESSAGES, n=2)
        assert [c.message.content for c in two.choices] == ["Member says Paris."] * 2 and fake.requests[-1]["n"] == 2
        with pytest.raises(openai.BadRequestError, match="n > 1"):
            client.chat.completions.create(model="small", messages=MESSAGES, n=2, stream=True)
        assert [m.id for m in client.models.list().data] == ["fusion-5", "best-of-n-5", "fusion", "best-of-n", "small", "big"]


def test_the_fusor_compares_first_when_asked_and_the_comparison_streams_as_reasoning():
    with endpoint(scripted(), token_delay=0.001) as (fake, server):
        options = {"fusion_dspy": {"compare": True}}
        resp = _client(server).chat.completions.create(model="fusion-2", messages=MESSAGES, extra_body=options)
        message = resp.choices[0].message
        assert message.content == FUSED and message.model_extra["reasoning_content"] == "Draft 1 is short; draft 2 names the river."
        chunks = list(_client(server).chat.completions.create(model="fusion-2", messages=MESSAGES, stream=True, extra_body=options))
        reasoning = "".join(c.choices[0].delta.model_extra.get("reasoning_content") or "" for c in chunks if c.choices)
        assert reasoning == "Draft 1 is short; draft 2 names the river."
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == FUSED
        assert resp.usage.model_dump()["stages"]["fusion"]["calls"] == 2


def test_request_options_choose_n_teachers_and_the_candidates_temperature():
    with endpoint(scripted(), members=("a", "b")) as (fake, server):
        options = {"fusion_dspy": {"n": 5, "teachers": ["a", "b"], "fusor": "b", "temperature": 0.9, "seed": 3}}
        resp = _client(server).chat.completions.create(model="fusion", messages=MESSAGES, temperature=0.1, extra_body=options)
        assert resp.choices[0].message.content == FUSED
        candidates = requests_of(fake, "candidate")
        assert sorted(r["n"] for r in candidates) == [2, 3] and {r["temperature"] for r in candidates} == {0.9}
        assert requests_of(fake, "fusor")[0]["temperature"] == 0.1
        assert resp.model_extra["fusion_dspy"]["n"] == 5 and resp.usage.model_dump()["candidates"] == 5


@pytest.mark.parametrize(
    ("change", "param", "status"),
    [
        ({"foo": 1}, "foo", 400),
        ({"n": 2}, "n", 400),
        ({"response_format": {"type": "json_object"}}, "response_format", 400),
        ({"logprobs": True}, "logprobs", 400),
        ({"temperature": 3}, "temperature", 400),
        ({"max_tokens": 0}, "max_tokens", 400),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", 400),
        ({"messages": []}, "messages", 400),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages[0].content[0]", 400),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", 400),
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}},
         "tool_choice", 400),
        ({"stream_options": {"include_usage": True}}, "stream_options", 400),
        ({"fusion_dspy": {"bogus": 1}}, "fusion_dspy.bogus", 400),
        ({"fusion_dspy": {"teachers": ["nobody"]}}, "fusion_dspy.teachers", 400),
        ({"fusion_dspy": {"n": 0}}, "fusion_dspy.n", 400),
        ({"model": "fusion-99"}, "model", 400),
        ({"model": "gpt-9"}, "model", 404),
    ],
)
def test_a_bad_request_is_refused_naming_the_parameter(change, param, status):
    with endpoint(scripted()) as (fake, server):
        body = {"model": "fusion-2", "messages": MESSAGES, **change}
        resp = httpx.post(server.api_base + "/chat/completions", json=body, timeout=10)
        assert resp.status_code == status, resp.text
        assert resp.json()["error"]["param"] == param and param.split(".")[0].split("[")[0] in resp.json()["error"]["message"]
        assert fake.calls == 0


def test_invalid_json_and_metadata_parameters():
    with endpoint(scripted()) as (fake, server):
        resp = httpx.post(server.api_base + "/chat/completions", content=b"{not json", timeout=10)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"
        ok = _client(server).chat.completions.create(model="fusion-2", messages=MESSAGES, user="u1", metadata={"k": "v"}, seed=7,
                                                     stop=["\n\n\n"], top_p=0.9, n=1, max_completion_tokens=64)
        assert ok.choices[0].message.content == FUSED
        sent = requests_of(fake, "candidate")[0]
        assert sent["seed"] == 7 and sent["top_p"] == 0.9 and sent["max_tokens"] == 64 and "user" not in sent and "metadata" not in sent


def test_a_body_over_the_limit_gets_413_without_reaching_a_model():
    settings = GatewaySettings(max_body_bytes=2_000)
    big = {"model": "fusion-2", "messages": [{"role": "user", "content": "x" * 5_000}]}
    with endpoint(scripted(), settings=settings) as (fake, server):
        resp = httpx.post(server.api_base + "/chat/completions", json=big, timeout=10)  # declared Content-Length
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large" and "2,000" in resp.json()["error"]["message"]

        def chunks():  # no Content-Length: a chunked body is cut off as it arrives
            data = json.dumps(big).encode()
            for i in range(0, len(data), 500):
                yield data[i : i + 500]

        resp = httpx.post(server.api_base + "/chat/completions", content=chunks(), timeout=10)
        assert resp.status_code == 413
        assert fake.calls == 0
        small = _client(server).chat.completions.create(model="fusion-2", messages=MESSAGES)
        assert small.choices[0].message.content == FUSED


def test_the_key_is_checked_and_never_logged(caplog):
    from fusion_dspy.lm.secrets import Secret

    caplog.set_level("DEBUG")
    key, wrong = "sk-gateway-5ecret-42", "sk-wrong-guess-777"
    with endpoint(scripted(), settings=GatewaySettings(api_key=Secret(key))) as (_, server):
        assert httpx.get(server.url + "/health", timeout=5).status_code == 200
        for headers in ({}, {"Authorization": f"Bearer {wrong}"}, {"Authorization": key}):
            resp = httpx.post(server.api_base + "/chat/completions", json={"model": "fusion-2", "messages": MESSAGES}, headers=headers)
            assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
            assert key not in resp.text and wrong not in resp.text
        assert httpx.get(server.api_base + "/models", timeout=5).status_code == 401
        with pytest.raises(openai.AuthenticationError):
            _client(server, wrong).chat.completions.create(model="fusion-2", messages=MESSAGES)
        assert _client(server, key).chat.completions.create(model="fusion-2", messages=MESSAGES).choices[0].message.content == FUSED
    assert key not in caplog.text and wrong not in caplog.text
    assert "fusion-2 fusion n=2" in caplog.text  # the endpoint did log the requests


def test_a_full_endpoint_answers_429_with_retry_after():
    """One slot: a second request waits in the queue (then gets the slot) or, with the queue full, gets 429 at once."""
    import concurrent.futures

    body = {"model": "fusion-2", "messages": MESSAGES}
    settings = GatewaySettings(max_in_flight=1, max_queue=1, queue_timeout=0.3)
    with endpoint(scripted(), settings=settings, token_delay=0.03) as (fake, server):
        url = server.api_base + "/chat/completions"
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            first = pool.submit(httpx.post, url, json=body, timeout=30)
            time.sleep(0.3)  # the first holds the slot (its candidates and fusor take > 1 s)
            queued = pool.submit(httpx.post, url, json=body, timeout=30)
            time.sleep(0.05)
            refused = httpx.post(url, json=body, timeout=30)  # the slot is taken and the queue is full
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["type"] == "rate_limit_error"
            late = queued.result()  # waited 0.3 s for the slot, in vain
            assert late.status_code == 429 and "0.3 s" in late.json()["error"]["message"]
            assert first.result().status_code == 200
        assert fake.in_flight_max == 1  # never two answers upstream at once
    with endpoint(scripted(), settings=GatewaySettings(max_in_flight=1, max_queue=4, queue_timeout=20), token_delay=0.01) as (fake, server):
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: httpx.post(server.api_base + "/chat/completions", json=body, timeout=30), range(3)))
        assert [a.status_code for a in answers] == [200, 200, 200]  # queued, not refused
        assert fake.in_flight_max == 1


def test_n_above_the_server_s_slots_is_drawn_in_requests_it_accepts():
    """llama.cpp refuses n beyond its parallel slots (4 on the embedded model): fusion-5 is drawn as 4 + 1, the limit remembered."""
    with endpoint(scripted(), max_n=4) as (fake, server):
        client = _client(server)
        first = client.chat.completions.create(model="fusion-5", messages=MESSAGES)
        assert first.choices[0].message.content == FUSED and first.usage.model_dump()["candidates"] == 5
        sent = [r.get("n") for r in requests_of(fake, "candidate")]
        assert sent[0] == 5 and sorted(sent[1:]) == [1, 4]  # refused once, then concurrent requests of the limit
        fusor_prompt = requests_of(fake, "fusor")[0]["messages"][-1]["content"]
        assert fusor_prompt.count("Paris, answer 0.") == 2  # both requests' first choice (each its own sample upstream)
        fake.reset()
        client.chat.completions.create(model="fusion-5", messages=MESSAGES)
        assert sorted(r.get("n") for r in requests_of(fake, "candidate")) == [1, 4]  # no second refusal
