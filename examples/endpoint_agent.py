"""An agent whose model is the fusion endpoint: the OpenAI SDK's tool loop, with a streamed fused answer.

The agent is the ordinary loop of the ``openai`` SDK: send the conversation with the tools; when
the answer is a tool call, run it and send the result back; when it is text, that is the answer,
printed as it streams. Only the model name says ``fusion-4``: four candidates answer each turn, a
tool call that most of them make is the one the agent runs, and the final text is fused from the
drafts, token by token as the fusor writes it. The tools are those of ``examples/react_agent.py``.

Run (the endpoint over the embedded model, started here in-process):
    .venv/bin/python examples/endpoint_agent.py ["your question"] [--n 4]
or against a running endpoint (``fusion-dspy serve --fusion [--pool pool.yaml]``):
    .venv/bin/python examples/endpoint_agent.py --base-url http://127.0.0.1:8000/v1 [--api-key KEY]

SmolLM2-135M (the embedded model) rarely calls a tool; with a pool of capable models the same
loop runs the majority's tool calls.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator

import openai
from react_agent import capital_of, population_millions  # the same tools as the DSPy agent beside this file

TOOLS: dict[str, Callable[[str], str]] = {"capital_of": capital_of, "population_millions": population_millions}
SCHEMAS = [
    {"type": "function", "function": {"name": "capital_of", "description": capital_of.__doc__,
                                      "parameters": {"type": "object", "properties": {"country": {"type": "string"}}, "required": ["country"]}}},
    {"type": "function", "function": {"name": "population_millions", "description": population_millions.__doc__,
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
]
SYSTEM = "You answer questions about countries and cities. Use the tools for facts; answer in one or two sentences."


def run_agent(client: openai.OpenAI, question: str, *, model: str = "fusion-4", max_steps: int = 4) -> str:
    """The tool loop: tool calls are run and answered until the model writes text, which is streamed to stdout."""
    messages: list[dict] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    for step in range(max_steps):
        text, calls, record = _stream_turn(client, model, messages)
        if not calls:
            print(f"\n[{record.get('method')} of {record.get('candidates')} candidates; fallback: {record.get('fallback')}; "
                  f"tokens: {record.get('usage', {}).get('total_tokens')}]")
            return text
        messages.append({"role": "assistant", "content": text or None, "tool_calls": calls})
        for call in calls:
            name, arguments = call["function"]["name"], json.loads(call["function"]["arguments"] or "{}")
            result = TOOLS[name](**arguments) if name in TOOLS else f"unknown tool {name!r}"
            print(f"[step {step + 1}: the majority called {name}({arguments}) -> {result}]")
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    return ""


def _stream_turn(client: openai.OpenAI, model: str, messages: list[dict]) -> tuple[str, list[dict], dict]:
    """One streamed turn: the text (printed as it comes), the tool calls, the endpoint's ``fusion_dspy`` record."""
    text: list[str] = []
    calls: dict[int, dict] = {}
    record: dict = {}
    for chunk in client.chat.completions.create(model=model, messages=messages, tools=SCHEMAS, stream=True, max_tokens=128):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if delta.content:
            text.append(delta.content)
            print(delta.content, end="", flush=True)
        for tc in delta.tool_calls or []:
            call = calls.setdefault(tc.index, {"id": tc.id, "type": "function", "function": {"name": "", "arguments": ""}})
            call["function"]["name"] += tc.function.name or ""
            call["function"]["arguments"] += tc.function.arguments or ""
        if chunk.choices[0].finish_reason:
            record = (chunk.model_extra or {}).get("fusion_dspy", {})
    return "".join(text), [calls[i] for i in sorted(calls)], record


@contextlib.contextmanager
def local_endpoint(n: int) -> Iterator[str]:
    """The fusion endpoint over the embedded model, in this process; yields its base URL."""
    import fusion_dspy as fd
    from fusion_dspy.gateway import Gateway, GatewayServer, GatewaySettings
    from fusion_dspy.lm.endpoints import Pool

    with fd.embedded() as model:
        pool = Pool({model.endpoint.name: model.endpoint}, (model.endpoint.name,))
        with GatewayServer(Gateway(pool), GatewaySettings(default_n=n)) as server:
            yield server.api_base


def main() -> None:
    ap = argparse.ArgumentParser(description="A tool-using agent whose model is the fusion endpoint.")
    ap.add_argument("question", nargs="?", default="What is the capital of Japan, and how many people live there?")
    ap.add_argument("--n", type=int, default=4, help="candidates per turn")
    ap.add_argument("--base-url", default=None, help="a running endpoint (default: start one over the embedded model)")
    ap.add_argument("--api-key", default="none")
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        base_url = args.base_url or stack.enter_context(local_endpoint(args.n))
        client = openai.OpenAI(base_url=base_url, api_key=args.api_key, timeout=600)
        print(f"Q: {args.question}\nA: ", end="", flush=True)
        run_agent(client, args.question, model=f"fusion-{args.n}")


if __name__ == "__main__":
    main()
