"""A fake OpenAI-compatible (and vLLM-like) HTTP server for tests.

It runs on 127.0.0.1 in a background thread and answers:

- ``POST /v1/chat/completions`` (honours ``n``; returns ``usage``; ``stream: true`` sends server-sent
  events word by word, ``token_delay`` apart, with a usage chunk when ``stream_options`` asks),
- ``POST /v1/completions`` (minimal),
- ``GET /health`` and ``GET /v1/models``,
- vLLM's reward-model endpoints ``POST /pooling``, ``/classify`` and ``/score`` (also under ``/v1``).

Replies are scripted with ``reply`` (a string, or ``reply(body, choice_index) -> str``, or a dict
``{"content": ..., "tool_calls": [{"name": ..., "arguments": {...}}]}`` for a tool call); the default
reply fills every output field a DSPy ChatAdapter system message asks for, so
``dspy.Predict("question -> answer")`` works against it. Faults are injected with a seeded RNG
(``fail_rate``, ``delay_rate``), so tests of retries and routing are reproducible.

Example:
    >>> with FakeOpenAIServer(reply="[[ ## answer ## ]]\\n4\\n\\n[[ ## completed ## ]]") as server:  # doctest: +SKIP
    ...     lm = dspy.LM("openai/fake", api_base=server.api_base, api_key="x", engine="litellm")

A client that goes away before its answer is complete (while the server waits or streams) is
counted in ``cancelled``; ``in_flight`` says how many requests are being handled now.

Why one file over 400 lines: one fake server is one class and its request handler, each endpoint a
short method; tests import it whole, and the routes read best side by side.
"""

from __future__ import annotations

import json
import math
import random
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = str | dict | Callable[[dict, int], str | dict]
Reward = Callable[[str], float]

_OUTPUT_FIELDS_BLOCK = re.compile(r"Your output fields are:\s*\n(.*?)(?:\n\s*\n|All interactions|\Z)", re.S)
_NUMBERED_FIELD = re.compile(r"^\s*\d+\.\s*`([^`]+)`\s*(?:\(([^)]*(?:\([^)]*\))?[^)]*)\))?", re.M)
_FIELD_MARKER = re.compile(r"\[\[ ## (\w+) ## \]\]")
_PLAIN_LABELS = re.compile(r'"([^"]+):" followed by')


def _words(text: str) -> int:
    return len(str(text).split())


def _message_text(messages: list[dict]) -> str:
    parts = []
    for m in messages or []:
        content = m.get("content", "")
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        parts.append(str(content))
    return "\n".join(parts)


def output_fields(system: str) -> list[tuple[str, str]]:
    """``(name, type)`` of the output fields a DSPy ChatAdapter system message lists."""
    block = _OUTPUT_FIELDS_BLOCK.search(system or "")
    if not block:
        return []
    return [(name, (typ or "str").strip()) for name, typ in _NUMBERED_FIELD.findall(block.group(1))]


def _value_for(typ: str, echo: str, choice_index: int) -> str:
    t = typ.lower()
    if t.startswith("literal["):
        options = re.findall(r"'([^']*)'|\"([^\"]*)\"", typ)
        if options:
            return next(a or b for a, b in options)
    if t.startswith("float"):
        return "0.5"
    if t.startswith("int"):
        return "1"
    if t.startswith("bool"):
        return "True"
    if t.startswith("list"):
        return json.dumps([echo])
    if t.startswith("dict"):
        return "{}"
    suffix = f" #{choice_index}" if choice_index else ""
    return f"{echo}{suffix}"


def chat_adapter_reply(body: dict, choice_index: int = 0) -> str:
    """A deterministic ChatAdapter-formatted answer for whatever output fields the request asks for.

    String fields echo the first words of the last user message (``"echo: ..."``); choice ``i > 0``
    gets a ``#i`` suffix so that the ``n`` choices differ. Without a DSPy system message the reply
    is plain text (with ``Label: ...`` lines where a plain system message asks for later fields).
    """
    messages = body.get("messages") or []
    system = next((str(m.get("content", "")) for m in messages if m.get("role") == "system"), "")
    users = [m for m in messages if m.get("role") == "user"]
    last_user = _message_text(users[-1:]) if users else str(body.get("prompt", ""))
    # Echo the values of the input fields, not the markers and the closing instruction.
    cleaned = _FIELD_MARKER.sub(" ", last_user.split("Respond with the corresponding output fields")[0])
    echo = "echo: " + " ".join(cleaned.split()[:8])
    fields = output_fields(system)
    if not fields:
        labels = _PLAIN_LABELS.findall(system.split("each on its own line:")[-1]) if "each on its own line:" in system else []
        plain = echo + (f" #{choice_index}" if choice_index else "")
        # fusion-dspy's PlainAdapter asks for later fields on lines starting with their label
        return "\n\n".join([plain, *(f"{label}: {plain}" for label in labels)])
    parts = [f"[[ ## {name} ## ]]\n{_value_for(typ, echo, choice_index)}" for name, typ in fields]
    return "\n\n".join(parts) + "\n\n[[ ## completed ## ]]"


class FakeOpenAIServer:
    """An OpenAI-compatible HTTP server in a background thread, for tests.

    Args:
        reply: the assistant text; a string or ``reply(body, choice_index) -> str``. None: :func:`chat_adapter_reply`.
        port: TCP port (0: a free one).
        fail_rate: probability that a request is answered with ``fail_status`` and an OpenAI-style error.
        delay_rate: probability that a request first sleeps ``delay_seconds``.
        delay_seconds: the injected delay.
        fail_status: HTTP status of injected failures.
        seed: seed of the fault-injection RNG.
        reward: ``reward(text) -> float`` behind ``/pooling``, ``/classify`` and ``/score``
            (default: a bounded function of the text length).
        model_name: the name ``/v1/models`` lists and responses carry.
        finish_reason: what every choice reports (``length`` simulates an answer cut at max_tokens).
        tokenize_chars: serve llama.cpp's ``POST /tokenize``, one token per this many characters (None: no route).
        token_delay: seconds per generated word, as a decoder takes them (streamed: between chunks;
            otherwise before the whole answer); a client that disconnects meanwhile is noticed.
        api_key: when set, every route but ``/health`` answers 401 unless the request carries
            ``Authorization: Bearer <api_key>`` (as ``vllm serve --api-key`` does).
        max_n: chat requests with a larger ``n`` get llama.cpp's 400 (its parallel slots), None: any ``n``.
        usage_first_choice: report an ``n > 1`` chat request's completion tokens as llama.cpp does: the
            first choice's only (counted as ``/tokenize`` counts when ``tokenize_chars`` is set).

    Attributes:
        requests: JSON bodies received on POST endpoints, in arrival order (``"_path"`` added).
        calls: number of POST requests answered (including injected failures).
        in_flight_max: the largest number of requests handled at the same time.
        in_flight: requests being handled now.
        cancelled: requests whose client disconnected before the answer was complete.
    """

    def __init__(
        self,
        reply: Reply | None = None,
        *,
        port: int = 0,
        fail_rate: float = 0.0,
        delay_rate: float = 0.0,
        delay_seconds: float = 0.0,
        fail_status: int = 500,
        seed: int = 0,
        reward: Reward | None = None,
        model_name: str = "fake",
        finish_reason: str = "stop",
        tokenize_chars: float | None = None,
        token_delay: float = 0.0,
        api_key: str | None = None,
        max_n: int | None = None,
        usage_first_choice: bool = False,
    ):
        for label, rate in (("fail_rate", fail_rate), ("delay_rate", delay_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{label} must be in [0, 1], got {rate}")
        self.reply = reply if reply is not None else chat_adapter_reply
        self.requested_port = port
        self.fail_rate = fail_rate
        self.delay_rate = delay_rate
        self.delay_seconds = delay_seconds
        self.fail_status = fail_status
        self.reward = reward or (lambda text: math.tanh(len(text) / 100.0))
        self.model_name = model_name
        self.finish_reason = finish_reason
        self.tokenize_chars = tokenize_chars
        self.token_delay = token_delay
        self.api_key = api_key
        self.max_n = max_n
        self.usage_first_choice = usage_first_choice
        self.authorizations: list[str] = []  # the Authorization header of every request, in arrival order
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._requests: list[dict] = []
        self._calls = 0
        self._in_flight = 0
        self._in_flight_max = 0
        self._cancelled = 0
        self._connections: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeOpenAIServer:
        if self._httpd is not None:
            return self
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.requested_port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open keep-alive connections (a stopped server answers nothing)."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses and counters ----------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the fake server is not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.url + "/v1"

    @property
    def requests(self) -> list[dict]:
        with self._lock:
            return list(self._requests)

    @property
    def calls(self) -> int:
        with self._lock:
            return self._calls

    @property
    def in_flight_max(self) -> int:
        with self._lock:
            return self._in_flight_max

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def cancelled(self) -> int:
        with self._lock:
            return self._cancelled

    def reset(self) -> None:
        """Forget received requests and counters."""
        with self._lock:
            self._requests.clear()
            self._calls = 0
            self._in_flight_max = 0
            self._cancelled = 0

    # -- used by the handler -------------------------------------------------------------------
    def _enter(self, path: str, body: dict) -> tuple[bool, bool]:
        """Record a request; decide (under the lock, so the RNG sequence is reproducible) fail/delay."""
        with self._lock:
            self._requests.append({**body, "_path": path})
            self._calls += 1
            self._in_flight += 1
            self._in_flight_max = max(self._in_flight_max, self._in_flight)
            delay = self.delay_rate > 0 and self._rng.random() < self.delay_rate
            fail = self.fail_rate > 0 and self._rng.random() < self.fail_rate
        return fail, delay

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _message(self, body: dict, index: int) -> dict:
        """The assistant message of choice ``index``: ``content`` and, for a scripted tool call, ``tool_calls``."""
        value = self.reply(body, index) if callable(self.reply) else self.reply
        if not isinstance(value, dict):
            return {"role": "assistant", "content": str(value)}
        calls = [
            {"id": f"call_{index}_{k}", "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"] if isinstance(c["arguments"], str) else json.dumps(c["arguments"])}}
            for k, c in enumerate(value.get("tool_calls") or [])
        ]
        message: dict[str, Any] = {"role": "assistant", "content": value.get("content")}
        if calls:
            message["tool_calls"] = calls
        return message

    def _text(self, body: dict, index: int) -> str:
        return self._message(body, index).get("content") or ""

    def _cancel(self) -> None:
        with self._lock:
            self._cancelled += 1


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the default stderr log
        pass

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.fake._lock:
            self.fake._connections.discard(self.connection)
        super().finish()

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refused(self, path: str) -> bool:
        """Record the Authorization header; answer 401 (and return True) when a key is required and missing."""
        auth = self.headers.get("Authorization") or ""
        with self.fake._lock:
            self.fake.authorizations.append(auth)
        if self.fake.api_key is None or path in ("/health", "/v1/health") or auth == f"Bearer {self.fake.api_key}":
            return False
        self._send(401, _error("Unauthorized", "authentication_error", 401))
        return True

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0].rstrip("/")
        if self._refused(path):
            return
        if path in ("/health", "/v1/health"):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path in ("/v1/models", "/models"):
            self._send(
                200, {"object": "list", "data": [{"id": self.fake.model_name, "object": "model", "owned_by": "fake"}]}
            )
        else:
            self._send(404, _error(f"no route GET {path}", "not_found_error", 404))

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?")[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as exc:
            self._send(400, _error(f"invalid JSON body: {exc}", "invalid_request_error", 400))
            return
        if self._refused(path):
            return
        routes = {
            "/v1/chat/completions": self._chat,
            "/chat/completions": self._chat,
            "/v1/completions": self._completion,
            "/completions": self._completion,
            "/pooling": self._pooling,
            "/v1/pooling": self._pooling,
            "/classify": self._classify,
            "/v1/classify": self._classify,
            "/score": self._score,
            "/v1/score": self._score,
        }
        if path == "/tokenize" and self.fake.tokenize_chars:  # llama.cpp's tokenizer route (not counted as a call)
            text = str(body.get("content") or "")
            self._send(200, {"tokens": list(range(math.ceil(len(text) / self.fake.tokenize_chars)))})
            return
        handler = routes.get(path)
        if handler is None:
            self._send(404, _error(f"no route POST {path}", "not_found_error", 404))
            return
        fail, delay = self.fake._enter(path, body)
        try:
            if delay and not self._wait(self.fake.delay_seconds):
                return
            if fail:
                status = self.fake.fail_status
                self._send(status, _error("injected failure", "server_error", status))
                return
            n = int(body.get("n") or 1)
            if handler == self._chat and self.fake.max_n is not None and n > self.fake.max_n:  # llama.cpp's words
                self._send(400, _error(f"Field 'n': Value must be between 1 <= value <= {self.fake.max_n}, but got {n}",
                                       "invalid_request_error", 400))
                return
            if handler == self._chat and body.get("stream"):
                self._stream_chat(body)
                return
            payload = handler(body)
            if handler == self._chat and self.fake.token_delay:  # decoding time, as a real server spends it
                words = payload["usage"]["completion_tokens"]
                if not self._wait(words * self.fake.token_delay):
                    return
            self._send(200, payload)
        except Exception as exc:  # noqa: BLE001 - a bug in a scripted reply: answer 500 with the reason, keep serving
            self._send(500, _error(f"fake server error: {type(exc).__name__}: {exc}", "server_error", 500))
        finally:
            self.fake._leave()

    def _client_gone(self) -> bool:
        """Whether the client closed its connection (readable with nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds``, watching the client; False (and counted as cancelled) when it went away."""
        deadline = time.monotonic() + seconds
        while True:
            if self._client_gone():
                self.fake._cancel()
                self.close_connection = True
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, 0.02))

    def _stream_chat(self, body: dict) -> None:
        """Server-sent events as OpenAI streams them: the role, the content word by word, the finish, usage."""
        n = int(body.get("n") or 1)
        messages = [self.fake._message(body, i) for i in range(n)]
        head = {"id": "chatcmpl-" + uuid.uuid4().hex[:12], "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model") or self.fake.model_name}
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def event(choices: list[dict], **extra: Any) -> bool:
            try:
                self.wfile.write(b"data: " + json.dumps({**head, "choices": choices, **extra}).encode() + b"\n\n")
                self.wfile.flush()
                return True
            except OSError:
                self.fake._cancel()
                return False

        if not event([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None} for i in range(n)]):
            return
        completion_tokens = 0
        for i, message in enumerate(messages):
            pieces = re.findall(r"\s*\S+", message.get("content") or "")
            for piece in pieces:
                if self.fake.token_delay and not self._wait(self.fake.token_delay):
                    return
                completion_tokens += 1
                if not event([{"index": i, "delta": {"content": piece}, "finish_reason": None}]):
                    return
            for k, call in enumerate(message.get("tool_calls") or []):
                if not event([{"index": i, "delta": {"tool_calls": [{"index": k, **call}]}, "finish_reason": None}]):
                    return
            finish = "tool_calls" if message.get("tool_calls") else self.fake.finish_reason
            if not event([{"index": i, "delta": {}, "finish_reason": finish}]):
                return
        if (body.get("stream_options") or {}).get("include_usage"):
            prompt_tokens = _words(_message_text(body.get("messages") or []))
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
            if not event([], usage=usage):
                return
        try:
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except OSError:
            self.fake._cancel()

    # -- endpoints -----------------------------------------------------------------------------
    def _chat(self, body: dict) -> dict:
        n = int(body.get("n") or 1)
        messages = [self.fake._message(body, i) for i in range(n)]
        prompt_tokens = _words(_message_text(body.get("messages") or []))
        completion_tokens = sum(_words(m.get("content") or "") for m in messages)
        if self.fake.usage_first_choice:  # llama.cpp: one choice's count for the whole request
            first = messages[0].get("content") or ""
            chars = self.fake.tokenize_chars
            completion_tokens = math.ceil(len(first) / chars) if chars else _words(first)
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:12],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.fake.model_name,
            "choices": [
                {"index": i, "message": m, "logprobs": None,
                 "finish_reason": "tool_calls" if m.get("tool_calls") else self.fake.finish_reason}
                for i, m in enumerate(messages)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _completion(self, body: dict) -> dict:
        n = int(body.get("n") or 1)
        texts = [self.fake._text(body, i) for i in range(n)]
        prompt = body.get("prompt", "")
        prompt_tokens = _words(" ".join(prompt) if isinstance(prompt, list) else prompt)
        completion_tokens = sum(_words(t) for t in texts)
        return {
            "id": "cmpl-" + uuid.uuid4().hex[:12],
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model") or self.fake.model_name,
            "choices": [
                {"index": i, "text": t, "finish_reason": "stop", "logprobs": None} for i, t in enumerate(texts)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _inputs(self, body: dict) -> list[str]:
        if "messages" in body:  # vLLM's chat-style pooling input: one text
            return [_message_text(body["messages"])]
        value = body.get("input", body.get("prompt", ""))
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]

    def _envelope(self, data: list[dict], texts: list[str], kind: str) -> dict:
        tokens = sum(_words(t) for t in texts)
        return {
            "id": f"{kind}-" + uuid.uuid4().hex[:12],
            "object": "list",
            "created": int(time.time()),
            "model": self.fake.model_name,
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
        }

    def _pooling(self, body: dict) -> dict:
        texts = self._inputs(body)
        data = [{"index": i, "object": "pooling", "data": [[float(self.fake.reward(t))]]} for i, t in enumerate(texts)]
        return self._envelope(data, texts, "pool")

    def _classify(self, body: dict) -> dict:
        texts = self._inputs(body)
        data = []
        for i, t in enumerate(texts):
            p = 1.0 / (1.0 + math.exp(-float(self.fake.reward(t))))  # probability of the "good" class
            probs = [1.0 - p, p]
            data.append({"index": i, "label": "LABEL_1" if p >= 0.5 else "LABEL_0", "probs": probs, "num_classes": 2})
        return self._envelope(data, texts, "classify")

    def _score(self, body: dict) -> dict:
        first = body.get("text_1", body.get("queries", ""))
        second = body.get("text_2", body.get("documents", body.get("items", [])))
        seconds = second if isinstance(second, list) else [second]
        query = first[0] if isinstance(first, list) and first else str(first)
        texts = [f"{query}\n{s}" for s in seconds]
        data = [{"index": i, "object": "score", "score": float(self.fake.reward(t))} for i, t in enumerate(texts)]
        return self._envelope(data, texts, "score")


def _error(message: str, kind: str, code: int) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
