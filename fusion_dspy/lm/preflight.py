"""Pre-flight checks: fail fast, naming the endpoint, before a run spends retries on a dead server.

Every command that calls models checks its pool first (``check_pool``): an unknown LiteLLM provider
is a configuration error, an unreachable server or a rejected key an :class:`EndpointError`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from fusion_dspy.errors import ConfigurationError, EndpointError
from fusion_dspy.lm.endpoints import Endpoint, Pool
from fusion_dspy.lm.secrets import reveal

logger = logging.getLogger(__name__)

DEFAULT_CHECK_TIMEOUT = 10.0


def check_endpoint(endpoint: Endpoint, timeout: float = DEFAULT_CHECK_TIMEOUT) -> None:
    """Fail fast, naming the endpoint, when its server (or a replica's) does not answer.

    Asks ``GET {api_base}/models`` (every OpenAI-compatible server has it), then ``GET /health`` at
    the server root, each within ``timeout`` seconds. An endpoint without ``api_base`` (a hosted
    provider) is not checked. Without this, a run against a server that is down spends LiteLLM's
    retries on every example and records them all as failed.

    Raises:
        EndpointError: the server is unreachable, rejects the key, or answers with an error.
    """
    if timeout <= 0:
        raise ConfigurationError(f"the endpoint check timeout must be > 0 seconds, got {timeout}")
    _check_provider(endpoint)
    _check_urls(endpoint, timeout)


def _check_urls(endpoint: Endpoint, timeout: float) -> None:
    for _, api_base, key in endpoint.deployments():
        if api_base:
            _check_url(endpoint, api_base, timeout, key=reveal(key, "local"))


def check_pool(pool: Pool, timeout: float = DEFAULT_CHECK_TIMEOUT, *, skip: Collection[str] = ()) -> None:
    """:func:`check_endpoint` for every endpoint the pool's roles use, concurrently; all failures in one error.

    ``skip``: names no request goes to over HTTP (models that run as engines inside a Ray pipeline).
    """
    from concurrent.futures import ThreadPoolExecutor

    names = [n for n in dict.fromkeys([*pool.teachers, pool.fusor_name, pool.rater_name, pool.judge_name,
                                       *([pool.reward_model] if pool.reward_model else [])]) if n not in skip]
    if not names:
        return
    if timeout <= 0:
        raise ConfigurationError(f"the endpoint check timeout must be > 0 seconds, got {timeout}")
    for name in names:
        _check_provider(pool.endpoints[name])
    errors: list[EndpointError] = []
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as ex:
        futures = [ex.submit(_check_urls, pool.endpoints[name], timeout) for name in names]
        for fut in futures:
            try:
                fut.result()
            except EndpointError as exc:
                errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        first = errors[0]
        raise EndpointError(
            f"{len(errors)} endpoints are not usable:\n" + "\n".join(f"  - {e}" for e in errors),
            endpoint=first.endpoint, api_base=first.api_base,
        )


def _check_provider(endpoint: Endpoint) -> None:
    """An unknown LiteLLM provider prefix (``hosted_vlm/x``) is a configuration error, not a failed call."""
    import contextlib
    import io

    import litellm

    for model in (endpoint.model, *(m for m, _ in endpoint.replicas)):
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # LiteLLM prints a provider list to stdout
                litellm.get_llm_provider(model)
        except Exception as exc:  # noqa: BLE001 - LiteLLM raises BadRequestError (and others) for unknown providers
            provider = model.split("/", 1)[0]
            raise ConfigurationError(
                f"endpoint {endpoint.name!r}: LiteLLM does not know the provider {provider!r} of model {model!r} "
                "(use e.g. hosted_vllm/NAME or openai/NAME for an OpenAI-compatible server)"
            ) from exc


def _check_url(endpoint: Endpoint, api_base: str, timeout: float, *, key: str | None = "local") -> None:
    import urllib.error
    import urllib.request

    base = api_base.rstrip("/")
    root = base[: -len("/v1")] if base.endswith("/v1") else base
    where = f"endpoint {endpoint.name!r} ({endpoint.model}) at {api_base}"
    headers = {"Authorization": f"Bearer {key}"}
    last = ""
    answered = False
    for url in (base + "/models", root + "/health"):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                if 200 <= resp.status < 300:
                    logger.debug("%s answers %s", where, url)
                    return
                last = f"GET {url} answered HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise EndpointError(f"{where} rejects the API key (HTTP {exc.code} on GET {url}); check api_key",
                                    endpoint=endpoint.name, api_base=api_base) from None
            last = f"GET {url} answered HTTP {exc.code}"
            if exc.code < 500:
                answered = True  # the server is up, it just has no such route
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EndpointError(
                f"{where} is not reachable within {timeout:g} s ({type(reason).__name__}: {reason}); "
                "start the server or fix api_base",
                endpoint=endpoint.name, api_base=api_base,
            ) from None
    if answered:
        logger.info("%s answers HTTP but has neither /models nor /health; assuming it is up", where)
        return
    raise EndpointError(f"{where} is not healthy: {last}", endpoint=endpoint.name, api_base=api_base)
