"""API keys that stay secret: resolved once, revealed only where a request is built.

Pool files name keys the LiteLLM way, ``api_key: os.environ/NAME``. A :class:`Secret` keeps both
the key and that reference: its ``repr`` and ``str`` show the reference (or ``***`` for a key
written literally), files fusion-dspy writes get the reference back (:attr:`Secret.reference`) and
never the key, and the key itself is registered with :func:`fusion_dspy.errors.register_secret`, so
an error message or log line that quotes it (a server echoing a rejected key) is redacted too.

Example:
    >>> import os
    >>> os.environ["MY_KEY"] = "sk-abc123456"
    >>> key = Secret.from_config("os.environ/MY_KEY")
    >>> key, key.reveal()
    (Secret('os.environ/MY_KEY'), 'sk-abc123456')
"""

from __future__ import annotations

import os
from typing import Any

from fusion_dspy.errors import ConfigurationError, register_secret

ENV_PREFIX = "os.environ/"


class Secret:
    """A key and where it came from.

    Attributes:
        reference: ``os.environ/NAME`` when the key came from the environment, else None (a literal key).
    """

    __slots__ = ("_value", "reference")

    def __init__(self, value: str, reference: str | None = None):
        if not isinstance(value, str):
            raise ConfigurationError(f"an API key must be a string, got {type(value).__name__}")
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "reference", reference)
        register_secret(value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Secret is immutable")

    @classmethod
    def from_config(cls, value: Any, *, where: str = "api_key") -> Secret | None:
        """A Secret from a configuration value: a key, ``os.environ/NAME`` (looked up now), a Secret, or None.

        Raises:
            ConfigurationError: ``os.environ/NAME`` and ``NAME`` is not set (or empty); a value that is not a string.
        """
        if value is None or isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise ConfigurationError(f"{where} must be a string (a key or os.environ/NAME), got {type(value).__name__}")
        if value.startswith(ENV_PREFIX):
            name = value[len(ENV_PREFIX):]
            if not name:
                raise ConfigurationError(f"{where}: {value!r} names no environment variable (write os.environ/NAME)")
            resolved = os.environ.get(name)
            if not resolved:
                raise ConfigurationError(
                    f"{where}: the environment variable {name} is not set (the configuration says {value}); "
                    f"export {name}=... before running"
                )
            return cls(resolved, reference=value)
        return cls(value)

    def reveal(self) -> str:
        """The key itself: only for building a request."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.reference!r})" if self.reference else "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value and other.reference == self.reference

    def __hash__(self) -> int:
        return hash((Secret, self._value, self.reference))

    def __reduce__(self) -> tuple[Any, ...]:  # copies and pickles keep the key, still wrapped
        return (Secret, (self._value, self.reference))


def reveal(secret: Secret | None, default: str | None = None) -> str | None:
    """``secret``'s key, or ``default`` when there is none."""
    return secret.reveal() if secret is not None else default
