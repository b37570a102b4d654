"""What a client asks the fusion endpoint for: an OpenAI chat request, checked and read.

The model name chooses the method: ``fusion`` / ``fusion-N`` (Fusion-of-N with N samples),
``best-of-n`` / ``best-of-n-N`` (Best-of-N, an LLM rater picks), or a pool member's name (the
request goes to that model unchanged). Options of the method ride in ``extra_body`` under
``fusion_dspy`` (``n``, ``teachers``, ``fusor``, ``rater``, ``temperature`` of the candidates,
``compare``, ``seed``), so they never clash with OpenAI's own ``n`` and ``temperature``.

Every parameter of the OpenAI chat API is known here: the ones a fused answer can honour are used,
metadata (``user``, ``metadata``, ...) is accepted and ignored, and the rest, and any name OpenAI
does not define, are refused with a 400 that names the parameter (:class:`BadRequest`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fusion_dspy.aggregate import BON, FUSION
from fusion_dspy.errors import ConfigurationError

#: model names of the methods (``-N`` may follow); the methods themselves are the registry's
METHOD_MODELS: dict[str, str] = {FUSION: FUSION, "best-of-n": BON}
PASS_THROUGH = "member"
OPTIONS_KEY = "fusion_dspy"

# parameters a fused answer honours (the rest of the request is the conversation)
_USED = {
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed",
    "tools", "tool_choice", "parallel_tool_calls", "presence_penalty", "frequency_penalty", "n", OPTIONS_KEY,
}
# accepted and ignored: they label a request, they do not change the answer
_IGNORED = {"user", "metadata", "service_tier", "prompt_cache_key", "safety_identifier", "store"}
# OpenAI parameters a fused answer cannot honour: a 400 when set to anything but their default
_REFUSED = {
    "response_format": "structured outputs are not supported by the fusion models; ask a pool member by name",
    "logprobs": "a fused answer has no log probabilities",
    "top_logprobs": "a fused answer has no log probabilities",
    "logit_bias": "logit_bias is not supported by the fusion models",
    "reasoning_effort": "reasoning_effort is not supported by the fusion models",
    "modalities": "only text is supported",
    "audio": "only text is supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "functions": "the deprecated 'functions' is not supported; use 'tools'",
    "function_call": "the deprecated 'function_call' is not supported; use 'tool_choice'",
    "verbosity": "verbosity is not supported by the fusion models",
}
_DEFAULTS_OF_REFUSED: dict[str, tuple[Any, ...]] = {
    "response_format": (None, {"type": "text"}), "logprobs": (None, False), "top_logprobs": (None,), "logit_bias": (None, {}),
    "modalities": (None, ["text"]),
}
_ROLES = {"system", "developer", "user", "assistant", "tool"}
_OPTION_KEYS = {"n", "teachers", "fusor", "rater", "temperature", "compare", "seed"}
_SUFFIX = re.compile(r"^(?P<base>.+?)-(?P<n>\d+)$")


class BadRequest(ConfigurationError):
    """A request the endpoint refuses, with the HTTP status and the parameter to blame.

    Attributes:
        param: the offending parameter (``messages[2].content``, ``fusion_dspy.n``), or None.
        status: 400, or 404 for an unknown model.
        code: OpenAI's error code (``invalid_value``, ``model_not_found``, ...).
    """

    def __init__(self, message: str, *, param: str | None = None, status: int = 400, code: str = "invalid_value"):
        super().__init__(message)
        self.param = param
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Options:
    """The method's per-request options (``extra_body={"fusion_dspy": {...}}``); None: the endpoint's default."""

    n: int | None = None
    teachers: tuple[str, ...] | None = None
    fusor: str | None = None
    rater: str | None = None
    temperature: float | None = None
    compare: bool = False
    seed: int | None = None


@dataclass(frozen=True)
class ChatRequest:
    """One checked chat request.

    Attributes:
        model: the name the client asked for (echoed in the response).
        method: the registry's method (``FUSION``, ``BON``) or :data:`PASS_THROUGH`.
        n: candidates to sample (methods only).
        member: the pool member a pass-through request goes to.
        messages: the conversation, as sent.
        stream: answer with server-sent events.
        include_usage: a final usage chunk (``stream_options.include_usage``).
        params: sampling parameters for the models (``max_tokens``, ``stop``, ``tools``, ...).
        temperature: the client's ``temperature``: the fusor's (methods) or the member's.
        options: the method's options.
    """

    model: str
    method: str
    messages: tuple[dict[str, Any], ...]
    n: int = 0
    member: str | None = None
    stream: bool = False
    include_usage: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    temperature: float | None = None
    options: Options = field(default_factory=Options)

    @property
    def tools(self) -> list[dict[str, Any]] | None:
        return self.params.get("tools")

    @property
    def tool_choice(self) -> Any:
        return self.params.get("tool_choice")


def parse_request(body: Any, *, members: Mapping[str, Any], default_n: int, max_n: int) -> ChatRequest:
    """Check ``body`` (a parsed JSON object) and read it; ``members`` are the pool's endpoint names.

    Raises:
        BadRequest: naming the parameter at fault (404 for an unknown model).
    """
    if not isinstance(body, Mapping):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required: a method (fusion-4, best-of-n-4) or a pool member", param="model")
    method, n, member = _route(model, members, default_n, max_n)
    unknown = [k for k in body if k not in _USED | _IGNORED | set(_REFUSED)]
    if unknown:
        raise BadRequest(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0], code="unknown_parameter")
    messages = _messages(body.get("messages"))
    stream = _optional(body, "stream", bool) or False
    stream_options = _optional(body, "stream_options", Mapping)
    if stream_options is not None and not stream:
        raise BadRequest("stream_options is only allowed when stream is true", param="stream_options")
    include_usage = bool(stream_options and _optional(stream_options, "include_usage", bool, where="stream_options.include_usage"))
    params = _sampling_params(body)
    temperature = _number(body, "temperature", 0.0, 2.0)
    if method == PASS_THROUGH:
        if OPTIONS_KEY in body:
            raise BadRequest(f"{OPTIONS_KEY} options apply to the fusion models, not to the pool member {member!r}", param=OPTIONS_KEY)
        params.update({k: body[k] for k in (*_REFUSED, "n") if body.get(k) is not None})  # the member answers these itself
        if stream and (params.get("n") or 1) > 1:
            raise BadRequest("n > 1 is answered by a pool member without streaming only", param="n", code="unsupported_value")
        return ChatRequest(model, method, messages, 0, member, stream, include_usage, params, temperature)
    for key, why in _REFUSED.items():
        if key in body and body[key] not in _DEFAULTS_OF_REFUSED.get(key, (None,)):
            raise BadRequest(f"{key}: {why}", param=key, code="unsupported_parameter")
    if body.get("n") not in (None, 1):
        raise BadRequest("n: the fusion models return one choice (n=1); the number of candidates is the model's -N or "
                         f"extra_body {OPTIONS_KEY}.n", param="n", code="unsupported_value")
    if body.get("store"):
        raise BadRequest("store: completions are not stored by this endpoint", param="store", code="unsupported_value")
    options = _options(body.get(OPTIONS_KEY), members, max_n)
    return ChatRequest(model, method, messages, options.n or n, None, stream, include_usage, params, temperature, options)


def is_method_model(name: str) -> bool:
    """Whether ``name`` would be read as a method (``fusion``, ``best-of-n-3``): pool members may not be named so."""
    match = _SUFFIX.match(name)
    return name in METHOD_MODELS or bool(match and match.group("base") in METHOD_MODELS)


def _route(model: str, members: Mapping[str, Any], default_n: int, max_n: int) -> tuple[str, int, str | None]:
    if model in members:
        return PASS_THROUGH, 0, model
    base, n = model, default_n
    match = _SUFFIX.match(model)
    if match and match.group("base") in METHOD_MODELS:
        base, n = match.group("base"), int(match.group("n"))
    if base not in METHOD_MODELS:
        known = ", ".join([*(f"{m}[-N]" for m in METHOD_MODELS), *members])
        raise BadRequest(f"The model {model!r} does not exist; available: {known}", param="model", status=404, code="model_not_found")
    if not 1 <= n <= max_n:
        raise BadRequest(f"model {model!r}: the number of samples must be 1..{max_n}", param="model")
    return METHOD_MODELS[base], n, None


def _messages(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list) or not value:
        raise BadRequest("'messages' must be a non-empty list of messages", param="messages")
    out = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise BadRequest(f"{where} must be an object", param=where)
        role = message.get("role")
        if role not in _ROLES:
            raise BadRequest(f"{where}.role must be one of {', '.join(sorted(_ROLES))}, got {role!r}", param=f"{where}.role")
        content = message.get("content")
        if content is None and not (role == "assistant" and message.get("tool_calls")):
            raise BadRequest(f"{where}.content is required", param=f"{where}.content")
        if isinstance(content, list):
            for k, part in enumerate(content):
                if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                    raise BadRequest(f"{where}.content[{k}]: only text parts are supported, got {kind!r}", param=f"{where}.content[{k}]")
        elif content is not None and not isinstance(content, str):
            raise BadRequest(f"{where}.content must be a string or a list of text parts", param=f"{where}.content")
        if role == "tool" and not message.get("tool_call_id"):
            raise BadRequest(f"{where}.tool_call_id is required for a tool message", param=f"{where}.tool_call_id")
        out.append(dict(message))
    return tuple(out)


def _sampling_params(body: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise BadRequest(f"{name} must be a positive integer, got {limit!r}", param=name)
        params["max_tokens"] = limit
    if (top_p := _number(body, "top_p", 0.0, 1.0)) is not None:
        params["top_p"] = top_p
    for name in ("presence_penalty", "frequency_penalty"):
        if (value := _number(body, name, -2.0, 2.0)) is not None:
            params[name] = value
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
            raise BadRequest("stop must be a string or a list of up to 4 non-empty strings", param="stop")
        params["stop"] = stops
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise BadRequest(f"seed must be an integer, got {seed!r}", param="seed")
        params["seed"] = seed
    if body.get("tools") is not None:
        params["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        params["tool_choice"] = _tool_choice(body["tool_choice"], params.get("tools"))
    if body.get("parallel_tool_calls") is not None:
        params["parallel_tool_calls"] = _optional(body, "parallel_tool_calls", bool)
    return params


def _tools(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise BadRequest("tools must be a list of function tools", param="tools")
    for i, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type") != "function" or not isinstance(function, Mapping):
            raise BadRequest(f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}", param=f"tools[{i}]")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise BadRequest(f"tools[{i}].function.name is required", param=f"tools[{i}].function.name")
        if function.get("parameters") is not None and not isinstance(function["parameters"], Mapping):
            raise BadRequest(f"tools[{i}].function.parameters must be a JSON schema object", param=f"tools[{i}].function.parameters")
    return [dict(t) for t in value]


def _tool_choice(value: Any, tools: list[dict[str, Any]] | None) -> Any:
    if value in ("none", "auto", "required"):
        if value != "none" and not tools:
            raise BadRequest(f"tool_choice {value!r} needs tools", param="tool_choice")
        return value
    name = value.get("function", {}).get("name") if isinstance(value, Mapping) and isinstance(value.get("function"), Mapping) else None
    if not isinstance(value, Mapping) or value.get("type") != "function" or not isinstance(name, str):
        raise BadRequest("tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}",
                         param="tool_choice")
    if name not in {t["function"]["name"] for t in tools or []}:
        raise BadRequest(f"tool_choice names the function {name!r}, which is not among the tools", param="tool_choice")
    return dict(value)


def _options(value: Any, members: Mapping[str, Any], max_n: int) -> Options:
    if value is None:
        return Options()
    if not isinstance(value, Mapping):
        raise BadRequest(f"{OPTIONS_KEY} must be an object of options", param=OPTIONS_KEY)
    unknown = sorted(set(value) - _OPTION_KEYS)
    if unknown:
        raise BadRequest(f"{OPTIONS_KEY}.{unknown[0]} is not an option; options: {', '.join(sorted(_OPTION_KEYS))}",
                         param=f"{OPTIONS_KEY}.{unknown[0]}")
    n = value.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= max_n):
        raise BadRequest(f"{OPTIONS_KEY}.n must be an integer in 1..{max_n}", param=f"{OPTIONS_KEY}.n")
    teachers = value.get("teachers")
    if teachers is not None:
        if isinstance(teachers, str):
            teachers = [teachers]
        if not isinstance(teachers, list) or not teachers or not all(isinstance(t, str) for t in teachers):
            raise BadRequest(f"{OPTIONS_KEY}.teachers must be a non-empty list of pool members", param=f"{OPTIONS_KEY}.teachers")
        teachers = tuple(dict.fromkeys(teachers))
    for key, names in (("teachers", teachers or ()), ("fusor", [value.get("fusor")]), ("rater", [value.get("rater")])):
        for name in names:
            if name is not None and name not in members:
                raise BadRequest(f"{OPTIONS_KEY}.{key}: {name!r} is not a pool member; members: {', '.join(members)}",
                                 param=f"{OPTIONS_KEY}.{key}")
    temperature = _number(value, "temperature", 0.0, 2.0, where=f"{OPTIONS_KEY}.temperature")
    compare = _optional(value, "compare", bool, where=f"{OPTIONS_KEY}.compare") or False
    seed = value.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest(f"{OPTIONS_KEY}.seed must be an integer", param=f"{OPTIONS_KEY}.seed")
    return Options(n, teachers, value.get("fusor"), value.get("rater"), temperature, compare, seed)


def _number(body: Mapping[str, Any], name: str, low: float, high: float, *, where: str | None = None) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise BadRequest(f"{where or name} must be a number in [{low:g}, {high:g}], got {value!r}", param=where or name)
    return float(value)


def _optional(body: Mapping[str, Any], name: str, kind: type | Any, *, where: str | None = None) -> Any:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        expected = "a boolean" if kind is bool else "an object"
        raise BadRequest(f"{where or name} must be {expected}, got {value!r}", param=where or name)
    return value
