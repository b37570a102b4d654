"""Conversations and tools: multi-turn messages are the task; the majority tool call wins; text answers are fused."""

from __future__ import annotations

import json

import openai

from fusion_dspy.gateway.drafts import call_key
from tests.gateway._endpoint import FUSED, endpoint, requests_of, scripted

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}},
]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def _client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_base, api_key="none", max_retries=0, timeout=30)


def _calls(*per_choice):
    """A candidate script: choice i answers with ``per_choice[i]`` (a tool call ``(name, arguments)`` or text)."""

    def candidate(body, i):
        what = per_choice[i]
        if isinstance(what, tuple):
            return {"content": None, "tool_calls": [{"name": what[0], "arguments": what[1]}]}
        return what

    return candidate


def test_most_candidates_call_a_tool_so_the_answer_is_the_majority_call():
    candidate = _calls(("get_weather", '{"city": "Paris"}'), ("get_weather", '{ "city":"Paris" }'), ("get_time", '{"zone": "CET"}'),
                       ("get_weather", {"city": "Paris"}))
    with endpoint(scripted(candidate=candidate)) as (fake, server):
        resp = _client(server).chat.completions.create(model="fusion-4", messages=ASK, tools=TOOLS)
        choice = resp.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        [call] = choice.message.tool_calls
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
        assert call.id and call.type == "function"
        assert not requests_of(fake, "fusor")  # a tool call is chosen, not fused
        assert requests_of(fake, "candidate")[0]["tools"] == TOOLS
        record = resp.model_extra["fusion_dspy"]
        assert sorted(record["votes"].values()) == [1, 3] and record["chosen"] in (0, 1, 3)
        assert set(resp.usage.model_dump()["stages"]) == {"sampling"}
        chunks = list(_client(server).chat.completions.create(model="fusion-4", messages=ASK, tools=TOOLS, stream=True))
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert [(tc.index, tc.function.name) for tc in calls] == [(0, "get_weather")]
        assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_a_minority_calls_a_tool_so_the_text_answers_are_fused():
    candidate = _calls(("get_weather", '{"city": "Paris"}'), "It is sunny in Paris.", "Paris is sunny today.", "Sunny, 25 degrees.")
    with endpoint(scripted(candidate=candidate)) as (fake, server):
        resp = _client(server).chat.completions.create(model="fusion-4", messages=ASK, tools=TOOLS)
        assert resp.choices[0].message.content == FUSED and resp.choices[0].finish_reason == "stop"
        [fusor] = requests_of(fake, "fusor")
        drafts = fusor["messages"][-1]["content"]
        assert "Sunny, 25 degrees." in drafts and "get_weather" not in drafts  # the fusor sees the three text answers
        assert "tools" not in fusor
        assert resp.usage.model_dump()["candidates"] == 4 and len(resp.model_extra["fusion_dspy"]["order"]) == 3


def test_tool_choice_required_takes_the_calls_of_whoever_called():
    candidate = _calls(("get_time", '{"zone": "CET"}'), "No tool needed.", "Just text.")
    with endpoint(scripted(candidate=candidate)) as (_, server):
        resp = _client(server).chat.completions.create(model="fusion-3", messages=ASK, tools=TOOLS, tool_choice="required")
        assert resp.choices[0].message.tool_calls[0].function.name == "get_time"
        none = _client(server).chat.completions.create(model="fusion-3", messages=ASK, tools=TOOLS, tool_choice="none")
        assert none.choices[0].message.content == FUSED


def test_call_keys_ignore_argument_order_and_spacing_and_call_order():
    a = [{"function": {"name": "f", "arguments": '{"x": 1, "y": [1, 2]}'}}, {"function": {"name": "g", "arguments": "{}"}}]
    b = [{"function": {"name": "g", "arguments": "{ }"}}, {"function": {"name": "f", "arguments": '{"y":[1,2],"x":1}'}}]
    assert call_key(a) == call_key(b) and call_key(a) != call_key(a[:1]) and call_key([]) is None


def test_a_conversation_is_the_task_the_candidates_see_it_as_sent_and_the_fusor_as_turns():
    messages = [
        {"role": "system", "content": "You are a terse travel guide. Answer in one sentence."},
        {"role": "user", "content": "I am going to France."},
        {"role": "assistant", "content": "Lovely! Which city?"},
        {"role": "user", "content": [{"type": "text", "text": "The capital. What should I see there?"}]},
    ]
    with endpoint(scripted(candidate="See the Louvre ({i}).")) as (fake, server):
        resp = _client(server).chat.completions.create(model="fusion-2", messages=messages)
        assert resp.choices[0].message.content == FUSED
        [sampled] = requests_of(fake, "candidate")
        assert sampled["messages"] == messages
        [fusor] = requests_of(fake, "fusor")
        system, user = fusor["messages"][0]["content"], fusor["messages"][-1]["content"]
        assert "You are a terse travel guide. Answer in one sentence." in system  # the task's own instruction reaches the fusor
        assert "User: I am going to France.\n\nAssistant: Lovely! Which city?\n\nUser: The capital. What should I see there?" in user
        assert "See the Louvre (0)." in user and "See the Louvre (1)." in user


def test_tool_results_in_the_conversation_reach_candidates_and_fusor():
    messages = [
        *ASK,
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "clear", "celsius": 24}'},
    ]
    with endpoint(scripted(candidate="Clear sky, 24 degrees ({i}).")) as (fake, server):
        resp = _client(server).chat.completions.create(model="fusion-2", messages=messages, tools=TOOLS)
        assert resp.choices[0].message.content == FUSED
        sent = requests_of(fake, "candidate")[0]["messages"]
        assert [{k: v for k, v in m.items() if v is not None} for m in sent] == [{k: v for k, v in m.items() if v is not None} for m in messages]
        user = requests_of(fake, "fusor")[0]["messages"][-1]["content"]
        assert 'Assistant: Called get_weather({"city": "Paris"})' in user
        assert 'Tool result (call_1): {"sky": "clear", "celsius": 24}' in user
