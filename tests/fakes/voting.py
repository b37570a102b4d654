"""An in-process LM whose samples agree or disagree on cue, for adaptive sampling and its benchmark.

``VotingLM(answer)``: sample ``s`` of a question (its rollout id plus the choice index) answers
``answer(question, s)``, padded with filler words to ``length`` tokens (one word is one token) and cut
at the request's ``max_tokens``; usage counts words, so token budgets are exact. The plain fusor
(its "draft answers" instruction) answers ``FUSED``. Every request is recorded: ``n``, ``rollout_id``,
``max_tokens``, and whether it was the fusor's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import SimpleNamespace as NS
from typing import Any

import dspy

FUSOR = "draft answers"  # the plain fusor's instruction
_QUESTION = re.compile(r"(Q\d+)")


class VotingLM(dspy.BaseLM):
    def __init__(self, answer: Callable[[str, int], str], *, length: int = 20, prompt_tokens: int = 30, **kwargs: Any):
        kwargs.setdefault("temperature", 0.7)
        kwargs.setdefault("max_tokens", 64)
        super().__init__(model="scripted/voting", model_type="chat", cache=False, **kwargs)
        self.answer = answer
        self.length = length
        self.prompt_tokens = prompt_tokens
        self.requests: list[dict[str, Any]] = []  # shared with copies: sampling copies the LM per rollout

    def copy(self, **kwargs: Any) -> VotingLM:
        new = super().copy(**kwargs)
        new.requests = self.requests
        return new

    @property
    def fusor_calls(self) -> int:
        return sum(r["fusor"] for r in self.requests)

    @property
    def sample_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if not r["fusor"]]

    def forward(self, prompt=None, messages=None, **kwargs):
        merged = {**self.kwargs, **kwargs}
        text = "\n".join(str(m.get("content", "")) for m in messages or []) + (prompt or "")
        fusor = FUSOR in text
        n = int(merged.get("n") or 1)
        rollout = int(merged.get("rollout_id") or 0)
        cap = int(merged.get("max_tokens") or 10**6)
        self.requests.append({"n": n, "rollout_id": merged.get("rollout_id"), "max_tokens": cap, "fusor": fusor})
        question = (_QUESTION.search(text) or [""])[0] if not fusor else ""
        texts = []
        for i in range(n):
            words = ["FUSED"] if fusor else [self.answer(question, rollout + i)]
            words += ["filler"] * max(0, self.length - len(words))
            texts.append(" ".join(words[:cap]))
        completion = sum(len(t.split()) for t in texts)
        choices = [NS(message=NS(content=t, tool_calls=None, reasoning_content=None), finish_reason="stop", index=i) for i, t in enumerate(texts)]
        usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion, "total_tokens": self.prompt_tokens + completion}
        return NS(choices=choices, usage=usage, model=self.model, cache_hit=False, _hidden_params={})


def first_word(value: Any) -> str | None:
    """The closed-form key of a VotingLM answer: its first word."""
    words = str(value or "").split()
    return words[0] if words else None


def agreeing_task(name: str, answers: dict[str, str | None], *, gold_when_split: str) -> tuple[Any, Callable[[str, int], str]]:
    """A closed-form task over questions ``Q1, Q2, ...`` and the VotingLM script that answers it.

    ``answers[q]`` is what every sample of ``q`` says; None: sample ``s`` says ``str(s)`` (no two
    agree), and the gold answer is ``gold_when_split``. The metric compares first words.
    """
    from fusion_dspy.task import Task

    def answer(question: str, s: int) -> str:
        return answers.get(question) or str(s)

    def load(path, *, limit=None, skip_bad_rows=False, bad_rows=None):
        return [dspy.Example(id=q, question=f"What is {q}?", answer=a or gold_when_split).with_inputs("question") for q, a in answers.items()]

    task = Task(name, load, lambda: dspy.Predict("question -> answer"),
                lambda ex, pred, trace=None: float(first_word(pred.answer) == ex.answer), "answer", normalize=first_word)
    return task, answer
