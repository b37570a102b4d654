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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from fusion_dspy.errors import ConfigurationError

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
        api_key: key for that server (local servers accept anything).
        defaults: request defaults (temperature, max_tokens, ...) that become ``dspy.LM`` kwargs.
        timeout: seconds before one request is abandoned.
        num_retries: LiteLLM retries (with exponential backoff) for transient failures.
        context_window: the model's context size in tokens, when known (used to fit the fusor's prompt).
        replicas: further ``(model, api_base)`` pairs serving the same model; requests are spread
            over all of them by a LiteLLM Router.
    """

    name: str
    model: str
    api_base: str | None = None
    api_key: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 600.0
    num_retries: int = 3
    context_window: int | None = None
    replicas: tuple[tuple[str, str | None], ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigurationError(f"endpoint name must be a non-empty string, got {self.name!r}")
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
        if self.api_base and not str(self.api_base).startswith(("http://", "https://")):
            raise ConfigurationError(f"endpoint {self.name!r}: api_base must be an http(s) URL, got {self.api_base!r}")

    def with_defaults(self, **defaults: Any) -> "Endpoint":
        """A copy whose request defaults are updated with ``defaults``."""
        return replace(self, defaults={**self.defaults, **defaults})

    def lm(self, **overrides: Any):
        """A ``dspy.LM`` for this endpoint, through LiteLLM. ``overrides`` become LM defaults."""
        import dspy

        kwargs = {**self.defaults, **overrides}
        cache = kwargs.pop("cache", True)
        if self.replicas:
            from fusion_dspy.serving.router import RoutedLM

            return RoutedLM(self, cache=cache, **kwargs)
        lm = dspy.LM(
            self.model,
            api_base=self.api_base,
            api_key=self.api_key or "local",
            engine="litellm",
            cache=cache,
            num_retries=self.num_retries,
            timeout=self.timeout,
            **kwargs,
        )
        lm.fd_name = self.name  # the endpoint name, recorded with every candidate
        lm.fd_context_window = self.context_window  # lets the fusor fit its prompt
        return lm


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
    """

    endpoints: Mapping[str, Endpoint]
    teachers: tuple[str, ...]
    samples_per_teacher: int = 1
    fusor: str | None = None
    rater: str | None = None
    reward_model: str | None = None
    temperature: float = 0.3

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

    def teacher_lms(self, **overrides: Any) -> dict[str, Any]:
        """``{name: dspy.LM}`` for every teacher, at the pool's temperature unless overridden."""
        overrides = {"temperature": self.temperature, **overrides}
        return {name: self.endpoints[name].lm(**overrides) for name in self.teachers}

    def to_model_list(self) -> list[dict[str, Any]]:
        return model_list_of(self.endpoints.values())


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
        grouped.setdefault(name, []).append({**params, "_info": entry.get("model_info") or {}})
    endpoints = {}
    for name, entries in grouped.items():
        first = entries[0]
        defaults = {k: v for k, v in first.items() if k not in _CONNECTION_KEYS and k != "_info"}
        info = first["_info"]
        endpoints[name] = Endpoint(
            name=name,
            model=str(first["model"]),
            api_base=first.get("api_base"),
            api_key=_resolve_secret(first.get("api_key")),
            defaults=defaults,
            timeout=float(first.get("timeout", 600.0)),
            num_retries=int(first.get("num_retries", 3)),
            context_window=info.get("max_input_tokens") or info.get("context_window"),
            replicas=tuple((str(e["model"]), e.get("api_base")) for e in entries[1:]),
        )
    return endpoints


def model_list_of(endpoints: Any) -> list[dict[str, Any]]:
    """The LiteLLM ``model_list`` for endpoints (replicas become entries with the same name)."""
    out = []
    for ep in endpoints:
        for model, api_base in ((ep.model, ep.api_base), *ep.replicas):
            params: dict[str, Any] = {"model": model}
            if api_base:
                params["api_base"] = api_base
            if ep.api_key:
                params["api_key"] = ep.api_key
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
    known = {"teachers", "samples_per_teacher", "fusor", "rater", "reward_model", "temperature"}
    unknown = set(roles) - known
    if unknown:
        raise ConfigurationError(f"{p}: unknown keys under fusion_dspy: {sorted(unknown)}; known: {sorted(known)}")
    teachers = roles.get("teachers") or [n for n, ep in endpoints.items() if n != roles.get("reward_model")]
    if isinstance(teachers, str):
        teachers = [teachers]
    try:
        return Pool(
            endpoints=endpoints,
            teachers=tuple(teachers),
            samples_per_teacher=int(roles.get("samples_per_teacher", 1)),
            fusor=roles.get("fusor"),
            rater=roles.get("rater"),
            reward_model=roles.get("reward_model"),
            temperature=float(roles.get("temperature", 0.3)),
        )
    except ConfigurationError as exc:
        raise ConfigurationError(f"{p}: {exc}") from None


def _resolve_secret(value: Any) -> str | None:
    """LiteLLM's ``os.environ/NAME`` convention for keys."""
    if isinstance(value, str) and value.startswith("os.environ/"):
        return os.environ.get(value.split("/", 1)[1])
    return value
