"""Endpoints: the one way fusion-dspy names a model it can call.

An endpoint is a LiteLLM model string plus ``api_base`` (plus key and default request settings).
The embedded model, a vLLM server (``hosted_vllm/NAME``) and any OpenAI-compatible server are all
endpoints, and all become a ``dspy.LM`` that goes through LiteLLM (``engine="litellm"``).

Pools of endpoints are configured with LiteLLM's own ``model_list`` YAML; the roles that
fusion-dspy needs (teachers, fusor, rater, reward model) sit beside it under ``fusion_dspy:``::

    model_list:
      - model_name: qwen
        litellm_params: {model: hosted_vllm/qwen, api_base: http://127.0.0.1:8001/v1}
      - model_name: gemma
        litellm_params: {model: hosted_vllm/gemma, api_base: http://127.0.0.1:8002/v1}
    fusion_dspy:
      teachers: [qwen, gemma]
      fusor: qwen
      rater: gemma
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.lm.secrets import Secret, reveal

logger = logging.getLogger(__name__)

# Providers that talk to a server the user runs: they need an api_base.
_SELF_HOSTED_PREFIXES = ("hosted_vllm/", "openai/")
# Request settings kept as LM defaults; everything else in litellm_params is passed through too.
_CONNECTION_KEYS = {"model", "api_base", "api_key", "timeout", "num_retries"}


@dataclass(frozen=True)
class Endpoint:
    """A model fusion-dspy can call.

    Attributes:
        name: the name users refer to (``model_name`` in a LiteLLM ``model_list``).
        model: the LiteLLM model string, e.g. ``hosted_vllm/Qwen2.5-7B-Instruct`` or ``openai/embedded``.
        api_base: base URL of an OpenAI-compatible server, e.g. ``http://127.0.0.1:8000/v1``.
        api_key: key for that server (local servers accept anything): a :class:`~fusion_dspy.lm.secrets.Secret`;
            a string given here (a key, or ``os.environ/NAME``, looked up now) becomes one. Its ``repr``
            shows the reference or ``***``, never the key.
        defaults: request defaults (temperature, max_tokens, ...) that become ``dspy.LM`` kwargs.
        timeout: seconds before one request is abandoned.
        num_retries: LiteLLM retries (with exponential backoff) for transient failures.
        context_window: the model's context size in tokens, when known (used to fit the fusor's prompt).
        replicas: further ``(model, api_base)`` pairs serving the same model; requests are spread
            over all of them by a LiteLLM Router.
        replica_keys: each replica's own key (aligned with ``replicas``; empty, or None for a replica:
            the endpoint's ``api_key``).
    """

    name: str
    model: str
    api_base: str | None = None
    api_key: Secret | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 600.0
    num_retries: int = 3
    context_window: int | None = None
    replicas: tuple[tuple[str, str | None], ...] = ()
    replica_keys: tuple[Secret | None, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigurationError(f"endpoint name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "api_key", Secret.from_config(self.api_key, where=f"endpoint {self.name!r}: api_key"))
        if self.replica_keys and len(self.replica_keys) != len(self.replicas):
            raise ConfigurationError(f"endpoint {self.name!r}: replica_keys must give one key (or None) per replica")
        keys = tuple(Secret.from_config(k, where=f"endpoint {self.name!r}: replica api_key") for k in self.replica_keys)
        object.__setattr__(self, "replica_keys", keys)
        if not self.model or "/" not in self.model:
            raise ConfigurationError(
                f"endpoint {self.name!r}: model must be a LiteLLM model string such as "
                f"'hosted_vllm/NAME' or 'openai/NAME', got {self.model!r}"
            )
        if self.model.startswith(_SELF_HOSTED_PREFIXES) and not self.api_base:
            raise ConfigurationError(
                f"endpoint {self.name!r}: model {self.model!r} needs an api_base "
                "(the server's URL, e.g. http://127.0.0.1:8000/v1)"
            )
        for base in (self.api_base, *(b for _, b in self.replicas)):
            if base:
                check_api_base(base, f"endpoint {self.name!r}")

    def key(self, default: str | None = None) -> str | None:
        """The API key itself (only for building a request), or ``default``."""
        return reveal(self.api_key, default)

    def deployments(self) -> list[tuple[str, str | None, Secret | None]]:
        """``(model, api_base, key)`` of the server and of every replica, each with its own key."""
        keys = self.replica_keys or (None,) * len(self.replicas)
        return [(self.model, self.api_base, self.api_key),
                *((m, b, k if k is not None else self.api_key) for (m, b), k in zip(self.replicas, keys, strict=True))]

    def with_defaults(self, **defaults: Any) -> Endpoint:
        """A copy whose request defaults are updated with ``defaults``."""
        return replace(self, defaults={**self.defaults, **defaults})

    def lm(self, **overrides: Any):
        """A ``dspy.LM`` for this endpoint (:func:`fusion_dspy.lm.factory.lm_for`). ``overrides`` become LM defaults."""
        from fusion_dspy.lm.factory import lm_for

        return lm_for(self, **overrides)


def check_api_base(url: Any, where: str) -> str:
    """``url`` if it is an ``http://`` or ``https://`` URL with a host; else a ConfigurationError naming ``where``.

    Other schemes (``file://``, ``ftp://``) would let a configuration make the endpoint check read
    local files or talk to other services.
    """
    from urllib.parse import urlsplit

    ok = isinstance(url, str)
    if ok:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and url[: len(parts.scheme) + 3].lower() == parts.scheme + "://"
    if not ok:
        raise ConfigurationError(f"{where}: api_base must be an http(s) URL with a host (http://HOST... or https://HOST...), got {url!r}")
    return url


def lm_name(lm: Any) -> str:
    """The name to record for an LM: its endpoint name when it came from one, else its model string."""
    return getattr(lm, "fd_name", None) or getattr(lm, "model", None) or type(lm).__name__


@dataclass(frozen=True)
class Pool:
    """Endpoints and the roles they play.

    Attributes:
        endpoints: every endpoint by name.
        teachers: names of the endpoints that produce candidates.
        samples_per_teacher: candidates drawn from each teacher.
        fusor: name of the endpoint that fuses (None: the first teacher).
        rater: name of the endpoint that rates for Best-of-N (None: the fusor).
        reward_model: name of a reward-model endpoint served by vLLM (optional).
        temperature: sampling temperature of the teachers.
        judge: name of the endpoint that judges for evaluation (pairwise win rates, reasoning
            grades; None: the rater). ``eval --judge`` overrides it.
    """

    endpoints: Mapping[str, Endpoint]
    teachers: tuple[str, ...]
    samples_per_teacher: int = 1
    fusor: str | None = None
    rater: str | None = None
    reward_model: str | None = None
    temperature: float = 0.3
    judge: str | None = None

    def __post_init__(self) -> None:
        if not self.teachers:
            raise ConfigurationError("pool: no teachers: list at least one endpoint name under fusion_dspy.teachers")
        if len(set(self.teachers)) != len(self.teachers):
            dupes = sorted({t for t in self.teachers if self.teachers.count(t) > 1})
            raise ConfigurationError(f"pool: teachers listed more than once: {dupes}")
        for role, name in [("teacher", t) for t in self.teachers] + [
            ("fusor", self.fusor),
            ("rater", self.rater),
            ("reward_model", self.reward_model),
            ("judge", self.judge),
        ]:
            if name is not None and name not in self.endpoints:
                raise ConfigurationError(
                    f"pool: {role} {name!r} is not a model_name in model_list; known: {sorted(self.endpoints)}"
                )
        if self.samples_per_teacher < 1:
            raise ConfigurationError(f"pool: samples_per_teacher must be >= 1, got {self.samples_per_teacher}")

    @property
    def fusor_name(self) -> str:
        return self.fusor or self.teachers[0]

    @property
    def rater_name(self) -> str:
        return self.rater or self.fusor_name

    @property
    def judge_name(self) -> str:
        return self.judge or self.rater_name

    def endpoint_for(self, spec: str | None, *, api_base: str | None = None, api_key: str | None = None) -> Endpoint:
        """The endpoint ``spec`` names: a member of this pool, else a LiteLLM model string (with
        ``api_base``/``api_key`` for a self-hosted server); None: the pool's judge.

        How ``--judge`` picks the judge: ``--judge judge`` (a pool member) or ``--judge openai/gpt-4o``.
        """
        if spec is None:
            return self.endpoints[self.judge_name]
        if spec in self.endpoints:
            if api_base is not None:
                raise ConfigurationError(f"{spec!r} is a member of the pool, which gives its api_base; drop the api_base")
            return self.endpoints[spec]
        if "/" not in spec:
            raise ConfigurationError(f"{spec!r} is neither a model of the pool ({', '.join(sorted(self.endpoints))}) "
                                     "nor a LiteLLM model string such as openai/gpt-4o or hosted_vllm/NAME")
        return Endpoint(name=spec.split("/", 1)[1], model=spec, api_base=api_base, api_key=api_key)

    def teacher_lms(self, **overrides: Any) -> dict[str, Any]:
        """``{name: dspy.LM}`` for every teacher, at the pool's temperature unless overridden."""
        overrides = {"temperature": self.temperature, **overrides}
        return {name: self.endpoints[name].lm(**overrides) for name in self.teachers}


def endpoints_from_model_list(model_list: Any, *, source: str = "model_list") -> dict[str, Endpoint]:
    """Endpoints from a LiteLLM ``model_list`` (entries with the same ``model_name`` are replicas)."""
    if not isinstance(model_list, list) or not model_list:
        raise ConfigurationError(f"{source}: model_list must be a non-empty list of {{model_name, litellm_params}}")
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for i, entry in enumerate(model_list):
        if not isinstance(entry, Mapping):
            raise ConfigurationError(f"{source}: model_list[{i}] must be a mapping, got {type(entry).__name__}")
        name = entry.get("model_name")
        params = entry.get("litellm_params")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"{source}: model_list[{i}] has no model_name")
        if not isinstance(params, Mapping) or not params.get("model"):
            raise ConfigurationError(f"{source}: model_list[{i}] ({name!r}) needs litellm_params with a 'model'")
        if not isinstance(params["model"], str):
            raise ConfigurationError(f"{source}: model_list[{i}] ({name!r}) litellm_params.model must be a string, got {params['model']!r}")
        if params.get("api_base") is not None and not isinstance(params["api_base"], str):
            raise ConfigurationError(f"{source}: model_list[{i}] ({name!r}) litellm_params.api_base must be a URL string, got {params['api_base']!r}")
        grouped.setdefault(name, []).append({**params, "_info": entry.get("model_info") or {}})
    endpoints = {}
    for name, entries in grouped.items():
        try:
            endpoints[name] = _endpoint_from_entries(name, entries, source)
        except ConfigurationError as exc:
            if str(exc).startswith(source):
                raise
            raise ConfigurationError(f"{source}: {exc}") from None
    return endpoints


def _endpoint_from_entries(name: str, entries: list[Mapping[str, Any]], source: str) -> Endpoint:
    first = entries[0]
    defaults = {k: v for k, v in first.items() if k not in _CONNECTION_KEYS and k != "_info"}
    info = first["_info"]
    return Endpoint(
        name=name,
        model=str(first["model"]),
        api_base=first.get("api_base"),
        api_key=Secret.from_config(first.get("api_key"), where=f"{source}: {name!r} litellm_params.api_key"),
        defaults=defaults,
        timeout=_number(first.get("timeout", 600.0), float, f"{source}: {name!r} litellm_params.timeout", minimum=0.001),
        num_retries=_number(first.get("num_retries", 3), int, f"{source}: {name!r} litellm_params.num_retries", minimum=0),
        context_window=_optional_window(info, f"{source}: {name!r} model_info"),
        replicas=tuple((str(e["model"]), e.get("api_base")) for e in entries[1:]),
        replica_keys=tuple(Secret.from_config(e.get("api_key"), where=f"{source}: {name!r} litellm_params.api_key")
                           for e in entries[1:]),
    )


def model_list_of(endpoints: Any) -> list[dict[str, Any]]:
    """The LiteLLM ``model_list`` for endpoints (replicas become entries with the same name).

    A key from the environment is written as its ``os.environ/NAME`` reference; a literal key is not
    written at all (files fusion-dspy writes never hold a key).
    """
    out = []
    for ep in endpoints:
        for model, api_base, key in ep.deployments():
            params: dict[str, Any] = {"model": model}
            if api_base:
                params["api_base"] = api_base
            if key is not None and key.reference:
                params["api_key"] = key.reference
            params.update(ep.defaults)
            entry: dict[str, Any] = {"model_name": ep.name, "litellm_params": params}
            if ep.context_window:
                entry["model_info"] = {"max_input_tokens": ep.context_window}
            out.append(entry)
    return out


def load_pool(path: str | os.PathLike[str]) -> Pool:
    """Read a pool from a LiteLLM ``model_list`` YAML with a ``fusion_dspy:`` roles section.

    Without ``fusion_dspy:``, every model is a teacher and the first one fuses.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigurationError(f"pool configuration {p} does not exist")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"pool configuration {p} is not valid YAML: {exc}") from exc
    if not isinstance(doc, Mapping) or "model_list" not in doc:
        raise ConfigurationError(f"pool configuration {p} must have a top-level 'model_list' (LiteLLM format)")
    endpoints = endpoints_from_model_list(doc["model_list"], source=str(p))
    roles = doc.get("fusion_dspy") or {}
    if not isinstance(roles, Mapping):
        raise ConfigurationError(f"{p}: 'fusion_dspy' must be a mapping of roles")
    known = {"teachers", "samples_per_teacher", "fusor", "rater", "reward_model", "temperature", "judge"}
    unknown = set(roles) - known
    if unknown:
        raise ConfigurationError(f"{p}: unknown keys under fusion_dspy: {sorted(unknown)}; known: {sorted(known)}")
    teachers = roles.get("teachers") or [n for n in endpoints if n not in (roles.get("reward_model"), roles.get("judge"))]
    if isinstance(teachers, str):
        teachers = [teachers]
    try:
        return Pool(
            endpoints=endpoints,
            teachers=tuple(teachers),
            samples_per_teacher=_number(roles.get("samples_per_teacher", 1), int, f"{p}: fusion_dspy.samples_per_teacher", minimum=1),
            fusor=roles.get("fusor"),
            rater=roles.get("rater"),
            reward_model=roles.get("reward_model"),
            judge=roles.get("judge"),
            temperature=_number(roles.get("temperature", 0.3), float, f"{p}: fusion_dspy.temperature", minimum=0.0),
        )
    except ConfigurationError as exc:
        raise ConfigurationError(f"{p}: {exc}") from None


def _number(value: Any, kind: type, where: str, *, minimum: float | None = None) -> Any:
    """``value`` as ``kind`` (int or float), or a ConfigurationError naming the setting."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int)
    if kind is int and isinstance(value, float) and value.is_integer():
        ok, value = True, int(value)
    if not ok:
        raise ConfigurationError(f"{where} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigurationError(f"{where} must be >= {minimum:g}, got {value!r}")
    return kind(value)


def _optional_window(info: Any, where: str) -> int | None:
    if not isinstance(info, Mapping):
        raise ConfigurationError(f"{where} must be a mapping, got {type(info).__name__}")
    value = info.get("max_input_tokens") or info.get("context_window")
    return None if value is None else _number(value, int, f"{where}.max_input_tokens", minimum=1)

