"""The fusion endpoint: Fusion-of-N and Best-of-N behind the OpenAI chat API, with real streaming.

``fusion-dspy serve --fusion`` (or :class:`GatewayServer` in-process) answers
``POST /v1/chat/completions`` for the models ``fusion[-N]`` and ``best-of-n[-N]``, and passes a
request for a pool member on to that model. The layers, in the order a request meets them:

- :mod:`~fusion_dspy.gateway.app`: HTTP (Starlette on uvicorn), the key check, admission with 429,
  deadlines, disconnects, server-sent events;
- :mod:`~fusion_dspy.gateway.protocol`: the request checked and read (400 naming the parameter);
- :mod:`~fusion_dspy.gateway.methods`: the candidates drawn (:mod:`~fusion_dspy.gateway.drafts`),
  the majority tool call or the aggregation registry's method on the conversation
  (:mod:`~fusion_dspy.gateway.conversation`), the fusor streaming through
  :mod:`~fusion_dspy.gateway.answer_stream`;
- :mod:`~fusion_dspy.gateway.responses`: OpenAI's shapes, usage per stage, the ``fusion_dspy`` record.

See docs/endpoint.md.
"""

from __future__ import annotations

from fusion_dspy.gateway.app import GatewaySettings, create_app
from fusion_dspy.gateway.methods import Answer, Gateway
from fusion_dspy.gateway.protocol import BadRequest, ChatRequest, Options, parse_request
from fusion_dspy.gateway.server import GatewayServer, serve

__all__ = ["Answer", "BadRequest", "ChatRequest", "Gateway", "GatewayServer", "GatewaySettings", "Options", "create_app", "parse_request",
           "serve"]
