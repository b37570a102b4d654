"""A chat conversation as the task the fusor (and the rater) sees.

Candidates are chat completions of the client's own messages; the fusor, though, needs the task as
a DSPy signature so that its prompt is the library's (:class:`~fusion_dspy.fuse.Fusor` with plain
prompts). The task of a chat request is ``conversation -> response``:

- the system (and developer) messages are the task's own instruction, which the Fusor passes on
  ("The task's own instructions, which your answer must follow: ...");
- one user message is the conversation itself, as a plain prompt would be;
- several turns are written out one per paragraph (``User:``, ``Assistant:``, tool calls and their
  results), so the fusor sees what the candidates answered.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import dspy

INPUT_FIELD = "conversation"
OUTPUT_FIELD = "response"
_LABELS = {"user": "User", "assistant": "Assistant", "tool": "Tool result"}


class ChatTurn(dspy.Signature):
    """Given the fields `conversation`, produce the fields `response`."""

    conversation: str = dspy.InputField(desc="the conversation so far; the answer is the assistant's next message")
    response: str = dspy.OutputField(desc="the assistant's next message")


def chat_task(messages: Sequence[dict[str, Any]]) -> tuple[type[dspy.Signature], dict[str, str]]:
    """The task signature (with the system messages as its instruction) and its inputs."""
    system = "\n\n".join(text_of(m) for m in messages if m["role"] in ("system", "developer") and text_of(m))
    turns = [m for m in messages if m["role"] not in ("system", "developer")]
    if len(turns) == 1 and turns[0]["role"] == "user":
        conversation = text_of(turns[0])
    else:
        conversation = "\n\n".join(render_turn(m) for m in turns)
    signature = ChatTurn.with_instructions(system) if system else ChatTurn
    return signature, {INPUT_FIELD: conversation}


def text_of(message: dict[str, Any]) -> str:
    """A message's text: its content string, or its text parts joined."""
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def render_turn(message: dict[str, Any]) -> str:
    """One turn as a paragraph: ``User: ...``; an assistant's tool calls as ``name({...})``."""
    role = message["role"]
    text = text_of(message)
    if role == "tool":
        name = message.get("name") or message.get("tool_call_id")
        return f"{_LABELS[role]} ({name}): {text}"
    calls = [format_call(call) for call in message.get("tool_calls") or []]
    if calls:
        text = "\n".join(p for p in (text, "Called " + "; ".join(calls)) if p)
    return f"{_LABELS.get(role, role.title())}: {text}"


def format_call(call: dict[str, Any]) -> str:
    """``get_weather({"city": "Paris"})`` from an OpenAI tool call."""
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return f"{function.get('name', '?')}({arguments})"
