"""Errors raised by fusion-dspy.

One base class, :class:`FusionError`, so callers can catch everything the library raises on purpose.
Each subclass carries the context a user needs to fix the problem (a path, a line, an endpoint).
"""

from __future__ import annotations

import logging
import threading


class FusionError(Exception):
    """Base class of every error fusion-dspy raises on purpose."""


class ConfigurationError(FusionError, ValueError):
    """A setting, argument or configuration file is invalid. Raised before any model call."""


class DataError(FusionError, ValueError):
    """A data file or row is malformed.

    Attributes:
        path: the file that holds the bad row.
        line: 1-based line (or row) number, or None when the whole file is bad.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


class ModelFileError(FusionError, FileNotFoundError):
    """The embedded model's GGUF file is missing or unreadable."""


class ServerError(FusionError, RuntimeError):
    """A model server could not be started, or stopped being healthy.

    Attributes:
        name: the server's name (the served model name).
        log_tail: the last lines of the server's log, for diagnosis.
    """

    def __init__(self, message: str, *, name: str | None = None, log_tail: str = ""):
        self.name = name
        self.log_tail = log_tail = redact(log_tail)  # a server may print its own key in its log
        text = redact(message)
        if log_tail:
            text += "\n--- last lines of the server log ---\n" + log_tail
        super().__init__(text)


class EndpointError(FusionError, ConnectionError):
    """An endpoint cannot be reached or keeps failing.

    Attributes:
        endpoint: the endpoint's name.
        api_base: the URL that was tried.
    """

    def __init__(self, message: str, *, endpoint: str | None = None, api_base: str | None = None):
        self.endpoint = endpoint
        self.api_base = api_base
        super().__init__(message)


class SamplingError(FusionError, RuntimeError):
    """No candidate could be produced for an example (every sample failed)."""


class AggregationError(FusionError, RuntimeError):
    """An aggregator could not produce a result and had no fallback left."""


class EndpointSamplingError(SamplingError, EndpointError):
    """Every sample failed because its endpoint could not be reached or kept failing.

    Unlike unparseable output, this is worth retrying later: runs record the example as failed (not
    done), so a rerun, once the server is back, completes it.
    """


# LiteLLM exception names that mean "the server did not serve the request" (after LiteLLM's retries),
# as opposed to "the model answered badly". Matched by name so this module never imports LiteLLM.
_ENDPOINT_FAILURE_NAMES = frozenset(
    {
        "APIConnectionError", "Timeout", "InternalServerError", "ServiceUnavailableError", "BadGatewayError",
        "RateLimitError", "AuthenticationError", "PermissionDeniedError", "NotFoundError", "APIError",
        "ConnectError", "ConnectTimeout", "ReadTimeout", "RemoteProtocolError",
    }
)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` (what a record or a log keeps of an exception), secrets redacted."""
    text = redact(str(exc)).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:limit]


# Secret values (API keys) this process holds. Every text fusion-dspy shows or writes about a failure
# passes through redact(), so a server that echoes the key in its error cannot put it in a record or a log.
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_MIN_SECRET_CHARS = 6  # shorter "keys" ('x', 'local', 'EMPTY') are placeholders, and redacting them would mangle text
REDACTED = "[redacted]"


def register_secret(value: str) -> None:
    """Remember ``value`` as secret: :func:`redact` hides it, and so does every log record from now on."""
    if not isinstance(value, str) or len(value) < _MIN_SECRET_CHARS:
        return
    with _SECRETS_LOCK:
        _SECRETS.add(value)
    install_log_redaction()


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``[redacted]``."""
    if not _SECRETS or not text:
        return text
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


_factory_installed = False


def install_log_redaction() -> None:
    """Redact registered secrets in every log record (message, arguments and traceback). Idempotent.

    Done in the record factory rather than in a handler filter, so it holds for every handler,
    including ones added later (a log file, pytest's capture).
    """
    global _factory_installed
    with _SECRETS_LOCK:
        if _factory_installed:
            return
        _factory_installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):  # type: ignore[no-untyped-def]
        record = previous(*args, **kwargs)
        if _SECRETS:
            message = record.getMessage()
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, None
            if record.exc_info and record.exc_info[1] is not None:
                import traceback

                record.exc_text = redact("".join(traceback.format_exception(*record.exc_info))).rstrip("\n")
        return record

    logging.setLogRecordFactory(factory)


def is_endpoint_failure(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a server failure rather than bad output.

    Aggregators use it to tell a dead backend (propagate: the example fails and a rerun retries it)
    from an unusable answer (retry or fall back to a candidate, recorded).
    """
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, (EndpointError, ConnectionError, TimeoutError)):
            return True
        name = type(exc).__name__
        if name in _ENDPOINT_FAILURE_NAMES and type(exc).__module__.split(".")[0] in ("litellm", "openai", "httpx", "httpcore"):
            status = getattr(exc, "status_code", None)
            return name != "APIError" or not isinstance(status, int) or status >= 500
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
