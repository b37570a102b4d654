"""The serving configuration: which models to serve, how, and on which ports.

Read and validated completely before anything is launched, so a typo costs a second, not a
ten-minute model load. Format (YAML; a bare list of models is accepted too)::

    log_dir: logs/serve            # one log file per server (default: a temporary directory)
    startup_timeout: 900           # seconds to wait for every /health (model download + load)
    models:
      - name: qwen                 # the served model name and the endpoint name
        engine: vllm               # vllm | embedded | url
        model: Qwen/Qwen2.5-0.5B-Instruct
        api_key: os.environ/QWEN_KEY   # optional: vLLM requires it (passed as VLLM_API_KEY, never on the command line)
        port: 8001
        replicas: 2                # ports 8001 and 8002 (or a list of ports)
        cuda_devices: ["0", "1"]   # optional, CUDA_VISIBLE_DEVICES per replica
        role: [teacher, fusor]     # optional: teacher | fusor | rater | reward
        args: {tensor_parallel_size: 1, gpu_memory_utilization: 0.85, max_model_len: 8192,
               dtype: auto, enable_prefix_caching: true, max_num_seqs: 64, extra: ["--seed", "0"]}
      - name: rm
        engine: vllm
        model: Skywork/Skywork-Reward-V2-Qwen3-0.6B
        port: 8003
        role: reward               # served as a pooling model (vLLM --runner pooling)
      - name: gpt
        engine: url
        model: openai/gpt-4o-mini  # the LiteLLM model string
        api_base: https://api.openai.com/v1
        api_key: os.environ/OPENAI_API_KEY

Why one file over 400 lines: it is one format's parser, read top to bottom (models, ports, args,
secrets, roles); every check names the field it rejects, and splitting it would scatter the format.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion_dspy.errors import ConfigurationError, register_secret
from fusion_dspy.lm.endpoints import check_api_base
from fusion_dspy.lm.secrets import ENV_PREFIX, Secret

ENGINES = ("vllm", "embedded", "url")
ROLES = ("teacher", "fusor", "rater", "reward")

# args key -> (vLLM flag, expected type). Booleans become --flag / --no-flag.
VLLM_ARGS: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "tensor_parallel_size": ("--tensor-parallel-size", int),
    "pipeline_parallel_size": ("--pipeline-parallel-size", int),
    "gpu_memory_utilization": ("--gpu-memory-utilization", (int, float)),
    "max_model_len": ("--max-model-len", int),
    "dtype": ("--dtype", str),
    "quantization": ("--quantization", str),
    "enable_prefix_caching": ("--enable-prefix-caching", bool),
    "max_num_seqs": ("--max-num-seqs", int),
    "max_num_batched_tokens": ("--max-num-batched-tokens", int),
    "trust_remote_code": ("--trust-remote-code", bool),
    "seed": ("--seed", int),
    "runner": ("--runner", str),
    "convert": ("--convert", str),
    "chat_template": ("--chat-template", str),
}
SECRET_FLAG_WORDS = ("key", "token", "secret", "password")  # a flag naming one of these carries a secret value
EMBEDDED_ARGS: dict[str, type] = {"n_ctx": int, "n_parallel": int, "n_threads": int}
_MODEL_KEYS = {
    "name",
    "engine",
    "model",
    "api_base",
    "api_key",
    "port",
    "replicas",
    "role",
    "args",
    "cuda_devices",
    "env",
}
_TOP_KEYS = {"models", "log_dir", "startup_timeout", "host", "fusion_dspy"}


@dataclass(frozen=True)
class ModelSpec:
    """One model of the configuration, validated.

    Attributes:
        name: served model name and endpoint name.
        engine: ``vllm``, ``embedded`` or ``url``.
        model: HF id or path (vllm), GGUF path or None (embedded), LiteLLM model string (url).
        ports: one port per replica (None entries: pick a free port at launch).
        roles: pool roles (teacher, fusor, rater, reward).
        args: engine arguments (see ``VLLM_ARGS`` / ``EMBEDDED_ARGS``), without ``extra``.
        extra: raw flags appended to the vLLM command line.
        api_bases: for ``url``: one base URL per replica.
        api_key: ``os.environ/NAME`` as a :class:`~fusion_dspy.lm.secrets.Secret` (resolved): for
            ``url``, the remote server's key; for ``vllm``, the key the server requires. Written to the
            endpoints file as the reference, never as the key.
        cuda_devices: CUDA_VISIBLE_DEVICES per replica (vllm), or empty.
        env: extra environment variables for every replica's process.
    """

    name: str
    engine: str
    model: str | None
    ports: tuple[int | None, ...] = (None,)
    roles: tuple[str, ...] = ()
    args: Mapping[str, Any] = field(default_factory=dict)
    extra: tuple[str, ...] = ()
    api_bases: tuple[str, ...] = ()
    api_key: Secret | None = None
    cuda_devices: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_reward(self) -> bool:
        return "reward" in self.roles


@dataclass(frozen=True)
class ServeConfig:
    """A validated serving configuration.

    Attributes:
        models: the models, in file order.
        log_dir: directory of the server logs (None: a temporary directory).
        startup_timeout: seconds to wait for all servers to answer ``/health``.
        host: interface the servers listen on.
        roles: the ``fusion_dspy:`` roles section written beside the ``model_list``.
        source: where the configuration came from (for messages).
    """

    models: tuple[ModelSpec, ...]
    log_dir: Path | None = None
    startup_timeout: float = 900.0
    host: str = "127.0.0.1"
    roles: Mapping[str, Any] = field(default_factory=dict)
    source: str = "serving configuration"


def load_serve_config(path: str | os.PathLike[str]) -> ServeConfig:
    """Read and validate a serving configuration file (YAML)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigurationError(f"serving configuration {p} does not exist")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"serving configuration {p} is not valid YAML: {exc}") from exc
    config = parse_serve_config(doc, source=str(p))
    if config.log_dir is not None and not config.log_dir.is_absolute():  # relative to the config file
        config = ServeConfig(**{**config.__dict__, "log_dir": p.parent / config.log_dir})
    return config


def parse_serve_config(doc: Any, *, source: str = "serving configuration") -> ServeConfig:
    """Validate a configuration already loaded as Python data (a list of models or a mapping)."""
    if isinstance(doc, list):
        doc = {"models": doc}
    if not isinstance(doc, Mapping):
        raise ConfigurationError(
            f"{source}: expected a list of models or a mapping with 'models', got {type(doc).__name__}"
        )
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise ConfigurationError(f"{source}: unknown top-level keys {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    raw_models = doc.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise ConfigurationError(f"{source}: 'models' must be a non-empty list of models")
    models = tuple(_parse_model(m, i, source) for i, m in enumerate(raw_models))
    _check_unique(models, source)
    timeout = doc.get("startup_timeout", 900.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigurationError(f"{source}: startup_timeout must be a positive number of seconds, got {timeout!r}")
    host = doc.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise ConfigurationError(f"{source}: host must be a non-empty string, got {host!r}")
    log_dir = doc.get("log_dir")
    if log_dir is not None and not isinstance(log_dir, str):
        raise ConfigurationError(f"{source}: log_dir must be a path, got {log_dir!r}")
    roles = _roles(models, doc.get("fusion_dspy"), source)
    return ServeConfig(
        models=models,
        log_dir=Path(log_dir) if log_dir else None,
        startup_timeout=float(timeout),
        host=host,
        roles=roles,
        source=source,
    )


def _parse_model(raw: Any, index: int, source: str) -> ModelSpec:
    where = f"{source}: models[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must be a mapping, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"{where}: 'name' is missing (the served model name, e.g. name: qwen)")
    if "/" in name or any(c.isspace() for c in name):
        raise ConfigurationError(f"{where}: name {name!r} must not contain '/' or spaces (it becomes hosted_vllm/NAME)")
    where = f"{source}: model {name!r}"
    unknown = set(raw) - _MODEL_KEYS
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_MODEL_KEYS)}")
    engine = raw.get("engine")
    if engine not in ENGINES:
        raise ConfigurationError(f"{where}: engine must be one of {list(ENGINES)}, got {engine!r}")
    model = raw.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ConfigurationError(f"{where}: model must be a non-empty string, got {model!r}")
    if engine in ("vllm", "url") and not model:
        hint = (
            "a Hugging Face id or a local path"
            if engine == "vllm"
            else "the LiteLLM model string, e.g. openai/gpt-4o-mini"
        )
        raise ConfigurationError(f"{where}: 'model' is missing ({hint})")
    roles = raw.get("role", ())
    roles = (roles,) if isinstance(roles, str) else tuple(roles or ())
    bad_roles = [r for r in roles if r not in ROLES]
    if bad_roles:
        raise ConfigurationError(f"{where}: unknown role(s) {bad_roles}; known: {list(ROLES)}")
    if "reward" in roles and engine != "vllm" and engine != "url":
        raise ConfigurationError(f"{where}: role 'reward' needs engine vllm (served as a pooling model) or url")
    if engine == "url":
        for key in ("port", "replicas", "cuda_devices", "env", "args"):
            if raw.get(key) is not None:
                raise ConfigurationError(
                    f"{where}: '{key}' does not apply to engine url (the server is already running)"
                )
        bases = raw.get("api_base")
        bases = (bases,) if isinstance(bases, str) else tuple(bases or ())
        if not bases:
            raise ConfigurationError(f"{where}: engine url needs 'api_base' (one URL, or a list for replicas)")
        for b in bases:
            check_api_base(b, where)
        if "/" not in model:
            raise ConfigurationError(
                f"{where}: model must be a LiteLLM model string such as openai/NAME, got {model!r}"
            )
        return ModelSpec(name=name, engine=engine, model=model, ports=(), roles=roles, api_bases=bases,
                         api_key=_api_key(raw.get("api_key"), where))
    if raw.get("api_base") is not None:
        raise ConfigurationError(f"{where}: 'api_base' applies to engine url only; {engine} servers get theirs at launch")
    if raw.get("api_key") is not None and engine != "vllm":
        raise ConfigurationError(f"{where}: 'api_key' applies to engines vllm and url (the embedded server listens on loopback only)")
    args, extra = _parse_args(raw.get("args"), engine, where)

    ports = _parse_ports(raw.get("port"), raw.get("replicas"), where)
    devices = raw.get("cuda_devices") or ()
    if devices:
        if engine != "vllm":
            raise ConfigurationError(f"{where}: cuda_devices applies to engine vllm only")
        if not isinstance(devices, list) or len(devices) != len(ports):
            raise ConfigurationError(
                f"{where}: cuda_devices must list one CUDA_VISIBLE_DEVICES value per replica ({len(ports)}), got {devices!r}"
            )
    env = raw.get("env") or {}
    if not isinstance(env, Mapping) or not all(isinstance(k, str) for k in env):
        raise ConfigurationError(f"{where}: env must be a mapping of variable names to values")
    return ModelSpec(
        name=name,
        engine=engine,
        model=model,
        ports=ports,
        roles=roles,
        args=args,
        extra=extra,
        api_key=_api_key(raw.get("api_key"), where),
        cuda_devices=tuple(str(d) for d in devices),
        env={k: str(v) for k, v in env.items()},
    )


def _register_flag_secrets(flags: list[str]) -> None:
    """Values of ``--api-key``-like flags in ``extra`` become known secrets, redacted from messages and logs."""
    for i, flag in enumerate(flags):
        name, eq, value = flag.partition("=")
        if name.startswith("--") and any(w in name.lower() for w in SECRET_FLAG_WORDS):
            if eq:
                register_secret(value)
            elif i + 1 < len(flags):
                register_secret(flags[i + 1])


def _api_key(value: Any, where: str) -> Secret | None:
    """``api_key: os.environ/NAME``, resolved now; a key written in the file is refused (it would be copied to the endpoints file)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(ENV_PREFIX):
        raise ConfigurationError(
            f"{where}: api_key must name an environment variable as os.environ/NAME (a key written in the "
            "configuration would be copied into the endpoints file and the logs); export NAME=... instead"
        )
    return Secret.from_config(value, where=f"{where}: api_key")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback interface only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigurationError(f"{where}: port must be an integer in 1..65535, got {value!r}")
    return value


def _parse_ports(port: Any, replicas: Any, where: str) -> tuple[int | None, ...]:
    first = None if port is None else _parse_port(port, where)
    if replicas is None:
        return (first,)
    if isinstance(replicas, list):
        ports = tuple(_parse_port(p, f"{where}: replicas") for p in replicas)
        if not ports:
            raise ConfigurationError(f"{where}: replicas must not be an empty list")
        if first is not None and first != ports[0]:
            raise ConfigurationError(
                f"{where}: port {first} differs from the first replica port {ports[0]}; give one or the other"
            )
        return ports
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ConfigurationError(f"{where}: replicas must be a positive integer or a list of ports, got {replicas!r}")
    if first is None:
        return (None,) * replicas
    if first + replicas - 1 > 65535:
        raise ConfigurationError(f"{where}: {replicas} replicas from port {first} run past port 65535")
    return tuple(range(first, first + replicas))


def _parse_args(raw: Any, engine: str, where: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    if raw is None:
        return {}, ()
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where}: args must be a mapping, got {type(raw).__name__}")
    args = dict(raw)
    extra = args.pop("extra", None) or []
    if isinstance(extra, str):
        try:
            extra = shlex.split(extra)  # shell rules: quoted values keep their spaces
        except ValueError as exc:
            raise ConfigurationError(f"{where}: args.extra cannot be split like a shell command line ({exc})") from None
    if not isinstance(extra, list) or not all(isinstance(x, (str, int, float)) for x in extra):
        raise ConfigurationError(f"{where}: args.extra must be a list of command-line flags, got a {type(extra).__name__}")
    _register_flag_secrets([str(x) for x in extra])
    if extra and engine != "vllm":
        raise ConfigurationError(f"{where}: args.extra applies to engine vllm only")
    known: Mapping[str, Any] = VLLM_ARGS if engine == "vllm" else EMBEDDED_ARGS
    for key, value in args.items():
        if key not in known:
            hint = " (or pass raw flags in args.extra)" if engine == "vllm" else ""
            raise ConfigurationError(f"{where}: unknown args.{key} for engine {engine}; known: {sorted(known)}{hint}")
        typ = known[key][1] if engine == "vllm" else known[key]
        if value is None:
            continue
        ok = isinstance(value, typ) and not (typ is not bool and isinstance(value, bool))
        if not ok:
            raise ConfigurationError(f"{where}: args.{key} must be {_type_name(typ)}, got {value!r}")
    if engine == "vllm":
        gmu = args.get("gpu_memory_utilization")
        if gmu is not None and not 0 < gmu <= 1:
            raise ConfigurationError(f"{where}: args.gpu_memory_utilization must be in (0, 1], got {gmu}")
        for key in ("tensor_parallel_size", "pipeline_parallel_size", "max_model_len", "max_num_seqs"):
            if args.get(key) is not None and args[key] < 1:
                raise ConfigurationError(f"{where}: args.{key} must be >= 1, got {args[key]}")
    return {k: v for k, v in args.items() if v is not None}, tuple(str(x) for x in extra)


def _type_name(typ: Any) -> str:
    if isinstance(typ, tuple):
        return "a number"
    return {int: "an integer", bool: "true or false", str: "a string"}.get(typ, typ.__name__)


def _check_unique(models: tuple[ModelSpec, ...], source: str) -> None:
    seen: set[str] = set()
    for m in models:
        if m.name in seen:
            raise ConfigurationError(
                f"{source}: model name {m.name!r} appears more than once (use replicas for copies)"
            )
        seen.add(m.name)
    owner: dict[int, str] = {}
    for m in models:
        for port in m.ports:
            if port is None:
                continue
            if port in owner:
                other = owner[port]
                who = f"models {other!r} and {m.name!r}" if other != m.name else f"model {m.name!r} (twice)"
                raise ConfigurationError(f"{source}: port {port} is used by {who}")
            owner[port] = m.name


def _roles(models: tuple[ModelSpec, ...], explicit: Any, source: str) -> dict[str, Any]:
    """The ``fusion_dspy:`` section: an explicit one from the file, else derived from ``role`` hints."""
    if explicit is not None:
        if not isinstance(explicit, Mapping):
            raise ConfigurationError(f"{source}: fusion_dspy must be a mapping of roles")
        return dict(explicit)
    roles: dict[str, Any] = {}
    teachers = [m.name for m in models if "teacher" in m.roles]
    if teachers:
        roles["teachers"] = teachers
    for role, key in (("fusor", "fusor"), ("rater", "rater"), ("reward", "reward_model")):
        names = [m.name for m in models if role in m.roles]
        if len(names) > 1:
            raise ConfigurationError(f"{source}: role {role!r} is given to several models {names}; give it to one")
        if names:
            roles[key] = names[0]
    return roles
