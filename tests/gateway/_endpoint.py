"""The fusion endpoint on a fake OpenAI server: helpers to script who says what (candidates, fusor, rater)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from fusion_dspy.gateway import Gateway, GatewayServer, GatewaySettings
from fusion_dspy.lm.endpoints import Endpoint, Pool
from fusion_dspy.signatures import COMPARE_INSTRUCTION, PLAIN_FUSION_INSTRUCTION, RATING_INSTRUCTION
from tests.fakes.openai_server import FakeOpenAIServer

QUESTION = "What is the capital of France?"
FUSED = ("Paris is the capital of France. It lies on the Seine, and it is known for the Eiffel Tower, the Louvre "
         "museum and its cafes; about two million people live in the city itself.")


def role(body: dict) -> str:
    """Who a request to the fake is from: ``fusor``, ``compare``, ``rater`` or ``candidate``."""
    messages = body.get("messages") or []
    system = str(messages[0].get("content") or "") if messages and messages[0].get("role") == "system" else ""
    for name, instruction in (("fusor", PLAIN_FUSION_INSTRUCTION), ("compare", COMPARE_INSTRUCTION), ("rater", RATING_INSTRUCTION)):
        if instruction.split("\n")[0][:60] in system:
            return name
    return "candidate"


def last_user(body: dict) -> str:
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    return str(users[-1].get("content") or "") if users else ""


def scripted(candidate: Callable[[dict, int], Any] | str = "Paris, answer {i}.", fusor: Callable[[dict], str] | str = FUSED,
             rater: Callable[[dict], int] | None = None, compare: str = "Draft 1 is short; draft 2 names the river.") -> Callable:
    """A reply function for the fake: each role answers with its script (``{i}``: the choice index)."""

    def reply(body: dict, i: int) -> Any:
        who = role(body)
        if who == "fusor":
            return fusor(body) if callable(fusor) else fusor
        if who == "compare":
            return compare
        if who == "rater":
            return json.dumps({"analysis": "fine", "score": rater(body) if rater else 3})
        return candidate(body, i) if callable(candidate) else candidate.format(i=i)

    return reply


def requests_of(fake: FakeOpenAIServer, who: str) -> list[dict]:
    return [r for r in fake.requests if r["_path"].endswith("/chat/completions") and role(r) == who]


@contextlib.contextmanager
def endpoint(reply: Callable, *, settings: GatewaySettings | None = None, members: tuple[str, ...] = ("fake",),
             token_delay: float = 0.0, max_tokens: int = 256, replicas: int = 0,
             **fake_options: Any) -> Iterator[tuple[FakeOpenAIServer, GatewayServer]]:
    """A fake model server and the fusion endpoint over it (every member is the same fake server;
    ``replicas``: each member also names it that many more times, so it is served through a LiteLLM Router)."""
    with FakeOpenAIServer(reply, token_delay=token_delay, **fake_options) as fake:
        more = tuple(("openai/fake", fake.api_base) for _ in range(replicas))
        endpoints = {name: Endpoint(name=name, model="openai/fake", api_base=fake.api_base, num_retries=0, timeout=30, replicas=more)
                     for name in members}
        pool = Pool(endpoints, tuple(members))
        with GatewayServer(Gateway(pool, default_max_tokens=max_tokens), settings or GatewaySettings()) as server:
            yield fake, server


def sse_events(lines: Iterator[str]) -> Iterator[dict | str]:
    """The JSON events (or ``[DONE]``) of a server-sent event stream."""
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: "):]
            yield data if data == "[DONE]" else json.loads(data)
