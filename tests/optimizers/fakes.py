"""Scripted in-process LMs and a synthetic task whose best configuration is known.

The task asks for sums ("What is 3 plus 4?"). Teacher ``good`` answers sample ``s`` (its rollout id
plus the choice index) correctly when ``s % 4`` is 1 or 2, else one too high; teacher ``bad`` is
always two too high. So a majority vote over ``good`` alone is right only for n == 3 (n=1: wrong;
n=2 and n=4: a tie that the first, wrong, answer wins), and adding ``bad`` always loses.

The fusor answers correctly only when its instruction contains ``MAGIC``; the proposer suggests an
instruction with ``MAGIC`` in it (as any field a signature asks for, or as a fenced GEPA proposal).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from types import SimpleNamespace as NS
from typing import Any

import dspy

from fusion_dspy.task import Task
from tests.fakes.openai_server import output_fields

Reply = Callable[[str, str, dict, int], Any]
MAGIC_INSTRUCTION = "Compare the candidates with MAGIC care, then add the two numbers again yourself."
_QUESTION = re.compile(r"What is (\d+) plus (\d+)\?")


def _texts(messages: list[dict] | None, prompt: str | None) -> tuple[str, str]:
    system = "\n".join(str(m.get("content", "")) for m in messages or [] if m.get("role") == "system")
    user = "\n".join(str(m.get("content", "")) for m in messages or [] if m.get("role") != "system")
    return system, user + (prompt or "")


class ScriptedLM(dspy.BaseLM):
    """An LM whose reply is ``reply(system, user, kwargs, choice) -> dict | str``; honours ``n``.

    A dict becomes JSON when a ``response_format`` or JSON is asked for, DSPy chat-adapter fields
    when a DSPy system message lists output fields, else plain text.
    Usage is counted as one token per 4 characters, so token objectives are meaningful.
    """

    def __init__(self, name: str, reply: Reply, **kwargs: Any):
        kwargs.setdefault("temperature", 0.0)
        kwargs.setdefault("max_tokens", 256)
        super().__init__(model=f"scripted/{name}", model_type="chat", cache=False, **kwargs)
        self.reply = reply
        self.fd_name = name
        self._calls = [0]  # shared with copies (sampling copies the LM per rollout)

    @property
    def calls(self) -> int:
        """Requests answered by this LM and its copies."""
        return self._calls[0]

    def forward(self, prompt=None, messages=None, **kwargs):
        merged = {**self.kwargs, **kwargs}
        system, user = _texts(messages, prompt)
        n = int(merged.get("n") or 1)
        texts = []
        for i in range(n):
            value = self.reply(system, user, merged, i)
            if isinstance(value, dict):
                if merged.get("response_format") is not None or "json" in system.lower():
                    value = json.dumps(value)
                elif "Your output fields are" in system:
                    value = "".join(f"[[ ## {k} ## ]]\n{v}\n\n" for k, v in value.items()) + "[[ ## completed ## ]]"
                else:  # a plain request (fusion-dspy's PlainAdapter): the first field, then "Label: value" lines
                    fields = [k for k in value if k != "comparison"]
                    value = "\n\n".join([str(value[fields[0]]), *(f"{k.capitalize()}: {value[k]}" for k in fields[1:])])
            texts.append(value)
        self._calls[0] += 1
        choices = [NS(message=NS(content=t, tool_calls=None, reasoning_content=None), finish_reason="stop", index=i) for i, t in enumerate(texts)]
        prompt_tokens = (len(system) + len(user)) // 4
        completion = sum(len(t) for t in texts) // 4
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}
        return NS(choices=choices, usage=usage, model=self.model, cache_hit=False, _hidden_params={})

    def copy(self, **kwargs):
        import copy

        new = copy.copy(self)
        new.kwargs = {**self.kwargs, **kwargs}
        new.history = []
        return new


def question_sum(text: str) -> int:
    found = _QUESTION.findall(text)
    a, b = found[-1]
    return int(a) + int(b)


def teacher(kind: str) -> ScriptedLM:
    def reply(system: str, user: str, kwargs: dict, choice: int) -> dict:
        gold = question_sum(user)
        s = int(kwargs.get("rollout_id") or 0) + choice
        if kind == "good":
            answer = gold if s % 4 in (1, 2) else gold + 1
        else:
            answer = gold + 2
        return {"answer": str(answer)}

    return ScriptedLM(kind, reply)


def magic_fusor() -> ScriptedLM:
    """Right only when the instruction (in the system message) contains MAGIC."""

    def reply(system: str, user: str, kwargs: dict, choice: int) -> dict:
        gold = question_sum(user)
        answer = gold if "MAGIC" in system else gold + 5
        return {"comparison": "they differ", "answer": str(answer)}

    return ScriptedLM("fusor", reply)


def proposer() -> ScriptedLM:
    """Suggests MAGIC_INSTRUCTION in whatever fields are asked for (or fenced, for GEPA)."""

    def reply(system: str, user: str, kwargs: dict, choice: int) -> Any:
        fields = output_fields(system)
        if not fields:
            return f"```\n{MAGIC_INSTRUCTION}\n```"
        return {name: MAGIC_INSTRUCTION for name, _ in fields}

    return ScriptedLM("proposer", reply, temperature=1.0)


def _metric(example: Any, prediction: Any, trace: Any = None) -> float:
    got = prediction.get("answer") if hasattr(prediction, "get") else getattr(prediction, "answer", None)
    try:
        return float(int(str(got).strip()) == int(example.answer))
    except (TypeError, ValueError):
        return 0.0


def _normalize(answer: Any) -> str | None:
    value = answer.get("answer") if hasattr(answer, "get") else getattr(answer, "answer", answer)
    try:
        return str(int(str(value).strip()))
    except (TypeError, ValueError):
        return None


def examples(count: int, start: int = 0) -> list[dspy.Example]:
    out = []
    for i in range(start, start + count):
        a, b = 3 + i, 10 + 2 * i
        out.append(dspy.Example(id=f"q{i}", language="en", question=f"What is {a} plus {b}?", answer=a + b).with_inputs("question"))
    return out


def sums_task() -> Task:
    return Task(
        name="sums",
        load=lambda path, **_: examples(6),
        program=lambda: dspy.Predict("question -> answer"),
        metric=_metric,
        answer_field="answer",
        normalize=_normalize,
    )


TASK = sums_task()
