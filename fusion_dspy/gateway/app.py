"""The HTTP side of the fusion endpoint: routes, the key check, admission, deadlines, disconnects, events.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models`` (also without ``/v1``) and ``GET /health``
(open, for probes). A Starlette application, served by uvicorn (:mod:`fusion_dspy.gateway.server`).

Every chat request is one :class:`_Exchange`, an ASGI callable that owns the whole exchange:

- it listens for the client's disconnect from the first moment (also while queued), and a
  disconnect cancels the work: the candidates' requests are cancelled, the fusor's stream stops at
  its next chunk (:class:`~fusion_dspy.gateway.answer_stream.AnswerStream`), so the model servers
  stop decoding;
- it takes a slot (:class:`~fusion_dspy.gateway.admission.Admission`) before it answers anything,
  so a full endpoint answers 429 with ``Retry-After`` as an HTTP status, not inside a stream;
- a streamed answer opens at once (the role chunk) while the candidates are drawn, keeps the
  connection alive with SSE comments, sends the fusor's tokens as they come, and ends with the
  finish reason, the ``fusion_dspy`` record and, when asked for, the usage chunk;
- the request's deadline (``request_timeout``) ends it with 504 (or an error event once streaming).

Keys: ``Authorization: Bearer KEY`` is compared in constant time; neither the key nor any header
is logged.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fusion_dspy.errors import AggregationError, ConfigurationError, EndpointError, FusionError, SamplingError, first_line
from fusion_dspy.gateway.admission import Admission, Busy
from fusion_dspy.gateway.answer_stream import AnswerStream, StopAnswer
from fusion_dspy.gateway.methods import Gateway
from fusion_dspy.gateway.protocol import METHOD_MODELS, PASS_THROUGH, BadRequest, ChatRequest, is_method_model, parse_request
from fusion_dspy.gateway.responses import (
    chunk_json,
    completion_json,
    error_json,
    extension,
    header_value,
    new_id,
    sse,
    tool_call_deltas,
    usage_json,
)
from fusion_dspy.lm.secrets import Secret
from fusion_dspy.sampling import DEFAULT_N

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewaySettings:
    """How the endpoint serves (the models are the :class:`~fusion_dspy.gateway.methods.Gateway`'s).

    Attributes:
        api_key: clients must send ``Authorization: Bearer <key>`` (None: no check).
        default_n: candidates for ``fusion`` / ``best-of-n`` without ``-N`` (the library's N, the paper's 5).
        max_n: the largest N a request may ask for.
        max_in_flight / max_queue / queue_timeout: the admission bound (:class:`Admission`).
        request_timeout: seconds one request may take, queueing excluded.
        keepalive: seconds of silence after which a stream sends an SSE comment.
        max_body_bytes: the largest request body read; a larger one gets 413 before it is read whole
            (a declared Content-Length is checked first, a chunked body as it arrives).
    """

    api_key: Secret | None = None
    default_n: int = DEFAULT_N
    max_n: int = 16
    max_in_flight: int = 4
    max_queue: int = 16
    queue_timeout: float = 30.0
    request_timeout: float = 600.0
    keepalive: float = 15.0
    max_body_bytes: int = 8 * 1024 * 1024


def create_app(gateway: Gateway, settings: GatewaySettings | None = None) -> Starlette:
    """The ASGI application of the fusion endpoint."""
    settings = settings or GatewaySettings()
    admission = Admission(settings.max_in_flight, settings.max_queue, settings.queue_timeout)
    clash = sorted(name for name in gateway.members if is_method_model(name))
    if clash:
        raise ConfigurationError(f"pool members may not be named like a method model ({', '.join(clash)}): rename them in the pool file")

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "in_flight": admission.in_flight, "queued": admission.queued})

    async def models(request: Request) -> JSONResponse:
        if not _authorized(request, settings.api_key):
            return _unauthorized()
        names = [*(f"{m}-{settings.default_n}" for m in METHOD_MODELS), *METHOD_MODELS, *gateway.members]
        created = int(time.time())
        return JSONResponse({"object": "list", "data": [{"id": n, "object": "model", "created": created, "owned_by": "fusion-dspy"} for n in names]})

    async def chat(request: Request) -> Any:
        if not _authorized(request, settings.api_key):
            return _unauthorized()
        raw = await _read_body(request, settings.max_body_bytes)
        if raw is None:
            message = f"the request body exceeds {settings.max_body_bytes:,} bytes (the endpoint's max_body_bytes)"
            return JSONResponse(error_json(message, code="request_too_large"), status_code=413)
        try:
            body = json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return JSONResponse(error_json(f"the body is not valid JSON: {exc}", code="invalid_json"), status_code=400)
        try:
            chat_request = parse_request(body, members=gateway.members, default_n=settings.default_n, max_n=settings.max_n)
        except BadRequest as exc:
            return JSONResponse(error_json(str(exc), param=exc.param, code=exc.code), status_code=exc.status)
        return _Exchange(gateway, admission, settings, chat_request)

    routes = [
        Route("/health", health),
        Route("/v1/models", models), Route("/models", models),
        Route("/v1/chat/completions", chat, methods=["POST"]), Route("/chat/completions", chat, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.admission = admission
    app.state.gateway = gateway
    return app


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it exceeds ``limit`` bytes (never buffering more than ``limit`` plus one chunk)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _authorized(request: Request, key: Secret | None) -> bool:
    if key is None:
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.reveal().encode())


def _unauthorized() -> JSONResponse:
    body = error_json("Incorrect or missing API key: send the header 'Authorization: Bearer <key>'", code="invalid_api_key")
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})


class _Writer:
    """Serialises what one exchange sends (the fusor's chunks arrive on other tasks than the exchange's)."""

    def __init__(self, send: Any, stream: AnswerStream):
        self._send = send
        self._stream = stream
        self._lock = anyio.Lock()
        self.started = False
        self.closed = False
        self.last = time.monotonic()

    async def _out(self, message: dict[str, Any], *, ping: bool = False) -> None:
        async with self._lock:
            if self.closed or (ping and time.monotonic() - self.last < ping):
                return
            try:
                await self._send(message)
            except OSError as exc:  # uvicorn's ClientDisconnected: stop the work like a disconnect does
                self._stream.cancel("client disconnected")
                raise StopAnswer("client disconnected") from exc
            self.last = time.monotonic()
            self.closed = message["type"] == "http.response.body" and not message.get("more_body")

    async def ping(self, idle: float) -> None:
        """An SSE comment, when nothing was sent for ``idle`` seconds (keeps proxies and clients from timing out)."""
        await self._out({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True}, ping=idle)

    async def start(self, status: int, headers: dict[str, str]) -> None:
        self.started = True
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        await self._out({"type": "http.response.start", "status": status, "headers": raw})

    async def body(self, data: bytes, *, more: bool = True) -> None:
        await self._out({"type": "http.response.body", "body": data, "more_body": more})

    async def json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        await self.start(status, {"content-type": "application/json", "content-length": str(len(data)), **(headers or {})})
        await self.body(data, more=False)


class _Exchange:
    """One chat request from admission to the last byte (see the module docstring)."""

    def __init__(self, gateway: Gateway, admission: Admission, settings: GatewaySettings, request: ChatRequest):
        self.gateway = gateway
        self.admission = admission
        self.settings = settings
        self.request = request
        self.cid = new_id()
        self.created = int(time.time())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        stream = AnswerStream(self._emit if self.request.stream and self.request.method != PASS_THROUGH else None)
        self.writer = _Writer(send, stream)
        status = "?"
        async with anyio.create_task_group() as group:
            group.start_soon(self._listen, receive, stream, group.cancel_scope)
            try:
                async with self.admission.slot():
                    status = await (self._streamed(stream, group) if self.request.stream else self._whole(stream))
            except Busy as busy:
                status = "429"
                body = error_json(str(busy), kind="rate_limit_error", code="rate_limit_exceeded")
                await self.writer.json(429, body, {"retry-after": str(busy.retry_after)})
            except StopAnswer as stop:
                status = f"stopped ({stop.reason})"
            finally:
                group.cancel_scope.cancel()
        if stream.stopped and not self.writer.closed:
            status = f"stopped ({stream.stopped})"
        logger.info("%s %s n=%d stream=%s: %s in %.2f s", self.request.model, self.request.method, self.request.n,
                    self.request.stream, status, time.perf_counter() - started)

    async def _listen(self, receive: Any, stream: AnswerStream, scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                stream.cancel("client disconnected")
                scope.cancel()
                return

    async def _emit(self, kind: str, text: str) -> None:
        delta = {"content": text} if kind == "content" else {"reasoning_content": text}
        await self._event(chunk_json(self.cid, self.request.model, self.created, delta))

    async def _event(self, payload: dict[str, Any] | str) -> None:
        await self.writer.body(sse(payload))

    async def _work(self, stream: AnswerStream, emit: Any = None) -> Any:
        with anyio.fail_after(self.settings.request_timeout):
            if self.request.method == PASS_THROUGH:
                return await self.gateway.pass_through(self.request, emit, stream)
            return await self.gateway.answer(self.request, stream)

    async def _whole(self, stream: AnswerStream) -> str:
        try:
            result = await self._work(stream)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI error response
            status, body = _failure(exc, self.settings.request_timeout)
            await self.writer.json(status, body)
            return str(status)
        if self.request.method == PASS_THROUGH:
            payload = result.model_dump() if hasattr(result, "model_dump") else dict(result)
            payload["model"] = self.request.model
            await self.writer.json(200, payload)
            return "200"
        headers = {"x-fusion-method": self.request.method}
        if result.fallback:
            headers["x-fusion-fallback"] = header_value(result.fallback)
        await self.writer.json(200, completion_json(self.cid, self.request, result, self.created), headers)
        return "200"

    async def _streamed(self, stream: AnswerStream, group: anyio.abc.TaskGroup) -> str:
        await self.writer.start(200, {"content-type": "text/event-stream", "cache-control": "no-cache",
                                      "x-accel-buffering": "no", "x-fusion-method": self.request.method})
        await self._event(chunk_json(self.cid, self.request.model, self.created, {"role": "assistant", "content": ""}))
        group.start_soon(self._keepalive)
        try:
            result = await self._work(stream, self._relay)
        except StopAnswer:
            raise
        except Exception as exc:  # noqa: BLE001 - after the headers, a failure is an error event
            status, body = _failure(exc, self.settings.request_timeout)
            await self._event(body)
            await self._done()
            return f"{status} (in the stream)"
        if self.request.method == PASS_THROUGH:
            await self._finish_pass_through(result)
            return "200"
        if result.tool_calls:
            await self._event(chunk_json(self.cid, self.request.model, self.created, tool_call_deltas(result)))
        ext = {"fusion_dspy": extension(self.request, result)}
        await self._event(chunk_json(self.cid, self.request.model, self.created, {}, result.finish_reason, **ext))
        if self.request.include_usage:
            await self._event(chunk_json(self.cid, self.request.model, self.created, None, usage=usage_json(result)))
        await self._done()
        return "200"

    async def _relay(self, delta: dict[str, Any]) -> None:
        await self._event(chunk_json(self.cid, self.request.model, self.created, delta))

    async def _finish_pass_through(self, response: Any) -> None:
        choice = response.choices[0] if response.choices else None
        finish = getattr(choice, "finish_reason", None) or "stop"
        await self._event(chunk_json(self.cid, self.request.model, self.created, {}, finish))
        usage = getattr(response, "usage", None)
        if self.request.include_usage and usage is not None:
            usage = usage.model_dump() if hasattr(usage, "model_dump") else dict(usage)
            await self._event(chunk_json(self.cid, self.request.model, self.created, None, usage=usage))
        await self._done()

    async def _done(self) -> None:
        await self.writer.body(sse("[DONE]"), more=False)

    async def _keepalive(self) -> None:
        while not self.writer.closed:
            await anyio.sleep(self.settings.keepalive / 3)
            await self.writer.ping(self.settings.keepalive)


def _failure(exc: Exception, timeout: float) -> tuple[int, dict[str, Any]]:
    """The HTTP status and OpenAI error body for a failed answer."""
    if isinstance(exc, TimeoutError):
        return 504, error_json(f"no answer within the request timeout ({timeout:g} s)", kind="timeout", code="timeout")
    if isinstance(exc, (EndpointError, SamplingError)):
        return 502, error_json(f"the models did not answer: {first_line(exc, 500)}", kind="server_error", code="upstream_failed")
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and 400 <= status < 500:  # a pool member refused a pass-through request
        return status, error_json(first_line(exc, 500), code="upstream_refused")
    if isinstance(exc, (AggregationError, FusionError)):
        return 500, error_json(first_line(exc, 500), kind="server_error", code="aggregation_failed")
    logger.exception("unexpected failure of an answer")
    return 500, error_json(f"internal error: {first_line(exc, 300)}", kind="server_error", code="internal_error")
