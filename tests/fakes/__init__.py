"""Test doubles shared by the test suite: a fake OpenAI-compatible (and vLLM-like) HTTP server."""

from .openai_server import FakeOpenAIServer, chat_adapter_reply

__all__ = ["FakeOpenAIServer", "chat_adapter_reply"]
