"""examples/endpoint_agent.py on the fake server: the majority's tool call is run, its result goes back, the answer is fused."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import openai

from tests.gateway._endpoint import endpoint, requests_of, scripted

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_agent_runs_the_majority_tool_call_then_streams_the_fused_answer(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    agent = importlib.import_module("endpoint_agent")

    def candidate(body, i):
        if any(m.get("role") == "tool" for m in body["messages"]):
            return f"Tokyo is the capital of Japan ({i})."
        if i == 3:
            return "I think it is Tokyo."
        return {"content": None, "tool_calls": [{"name": "capital_of", "arguments": {"country": "Japan"}}]}

    fused = "The capital of Japan is Tokyo, a city of about fourteen million people."
    with endpoint(scripted(candidate=candidate, fusor=fused), token_delay=0.001) as (fake, server):
        client = openai.OpenAI(base_url=server.api_base, api_key="none", max_retries=0)
        answer = agent.run_agent(client, "What is the capital of Japan?", model="fusion-4")
        second_turn = requests_of(fake, "candidate")[-1]["messages"]
    assert answer == fused
    assert second_turn[-1] == {"role": "tool", "tool_call_id": second_turn[-2]["tool_calls"][0]["id"],
                               "content": "The capital of Japan is Tokyo."}
    out = capsys.readouterr().out
    assert "the majority called capital_of({'country': 'Japan'})" in out and fused in out and "fusion of 4 candidates" in out
    sys.modules.pop("endpoint_agent", None)
