"""Answers in OpenAI's shapes: chat completions, stream chunks, usage you can bill, errors.

Besides OpenAI's fields, a response carries:

- ``usage.stages``: tokens (prompt, completion, total), seconds and calls per stage (``sampling``
  for the candidates, ``fusion`` for the fusor's calls, ``rating`` for Best-of-N's rater), and
  ``usage.candidates``, the number of candidates that answered; ``prompt_tokens`` and
  ``completion_tokens`` are the sums over every stage, so the top-level counts bill every token spent;
- ``fusion_dspy``: the method, N, the candidates, ``fallback`` (why the answer is a candidate's
  rather than the fused one), ``cut`` (why the answer ends early: a stream cut, or a loop cut off), and the method's record
  (shown order, fusor budget, truncation; scores; tool votes). Non-streamed responses also say the
  method and the fallback in the headers ``X-Fusion-Method`` and ``X-Fusion-Fallback``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from fusion_dspy.gateway.methods import Answer
from fusion_dspy.gateway.protocol import OPTIONS_KEY, ChatRequest

_RECORD_KEYS = ("order", "truncated", "max_tokens", "trimmed", "scores", "index", "votes", "chosen", "usage_estimated")


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def usage_json(answer: Answer) -> dict[str, Any]:
    total = answer.usage
    return {
        "prompt_tokens": total.prompt_tokens,
        "completion_tokens": total.completion_tokens,
        "total_tokens": total.total_tokens,
        "stages": {name: usage.to_dict() for name, usage in answer.stages.items()},
        "candidates": answer.candidates_ok,
    }


def extension(request: ChatRequest, answer: Answer) -> dict[str, Any]:
    """The ``fusion_dspy`` object: what the method did."""
    record = {k: v for k, v in answer.details.items() if k in _RECORD_KEYS and v not in (None, {}, [])}
    return {
        "method": request.method, "n": request.n, "candidates": answer.candidates_ok, "fallback": answer.fallback,
        "cut": answer.cut, **record, "usage": usage_json(answer),
    }


def message_json(answer: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content if not answer.tool_calls else answer.content or None}
    if answer.tool_calls:
        message["tool_calls"] = [dict(call) for call in answer.tool_calls]
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning
    return message


def completion_json(cid: str, request: ChatRequest, answer: Answer, created: int | None = None) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": request.model,
        "choices": [{"index": 0, "message": message_json(answer), "finish_reason": answer.finish_reason, "logprobs": None}],
        "usage": usage_json(answer),
        OPTIONS_KEY: extension(request, answer),
    }


def chunk_json(cid: str, model: str, created: int, delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices, **extra}


def tool_call_deltas(answer: Answer) -> dict[str, Any]:
    return {"tool_calls": [{"index": i, **call} for i, call in enumerate(answer.tool_calls)]}


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return b"data: " + data.encode("utf-8") + b"\n\n"


def error_json(message: str, *, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def header_value(text: str, limit: int = 300) -> str:
    """``text`` as a header value: one line of Latin-1, at most ``limit`` characters."""
    line = " ".join(str(text).split())[:limit]
    return line.encode("latin-1", "replace").decode("latin-1")
