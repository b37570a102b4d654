"""Replicas of one model behind one name: a ``dspy.LM`` whose requests go through a LiteLLM Router.

Several servers of the same model (``model_list`` entries sharing a ``model_name``) become one
endpoint with ``replicas``; :func:`fusion_dspy.lm.factory.lm_for` (``Endpoint.lm``) then returns a
:class:`RoutedLM`. The Router spreads requests over the replicas, retries failed requests on
another replica, and cools down a replica that keeps failing, so a dead server costs a few failed
attempts instead of a third of all requests.

Why ``forward``: with ``engine="litellm"``, ``dspy.LM`` sends every request to the module-level
``litellm.completion``; the only per-LM hook that keeps one request per call (so ``n=N`` stays one
request and the prompt is computed once) is ``forward``/``aforward``. DSPy then records history and
usage from the returned response as usual; the response cache that DSPy skips for custom
``forward`` implementations is applied here with ``dspy.cache`` and the same key rules
(server addresses are not part of the key).

Example:
    >>> ep = Endpoint("qwen", "hosted_vllm/qwen", api_base="http://127.0.0.1:8001/v1",
    ...               replicas=(("hosted_vllm/qwen", "http://127.0.0.1:8002/v1"),))   # doctest: +SKIP
    >>> lm = ep.lm(max_tokens=256)          # a RoutedLM over both servers          # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import warnings
from typing import TYPE_CHECKING, Any

import dspy

from fusion_dspy.errors import ConfigurationError, EndpointError

if TYPE_CHECKING:  # endpoints build their LMs through the factory, which builds this class: the type only, no import circle
    from fusion_dspy.lm.endpoints import Endpoint

logger = logging.getLogger(__name__)

# DSPy 3.4 warns that custom forward() is a legacy interface (see the module docstring for why we
# use it). The warning names no action for our users, so it is silenced for this message only.
warnings.filterwarnings("ignore", message="Implementing custom LMs through BaseLM.forward", category=DeprecationWarning)

_ROUTING_STRATEGIES = ("simple-shuffle", "least-busy", "latency-based-routing", "usage-based-routing-v2")
_CACHE_ID = "fusion_dspy.serving.router.RoutedLM.forward"  # its first home; kept so responses cached before the move still hit


def build_router(
    endpoint: Endpoint,
    *,
    allowed_fails: int = 1,
    cooldown_time: float = 30.0,
    routing_strategy: str = "simple-shuffle",
    retry_after: float = 0.0,
) -> Any:
    """A ``litellm.Router`` over the endpoint and its replicas, all under the endpoint's name."""
    from litellm import Router

    if routing_strategy not in _ROUTING_STRATEGIES:
        raise ConfigurationError(
            f"endpoint {endpoint.name!r}: routing_strategy must be one of {list(_ROUTING_STRATEGIES)}, "
            f"got {routing_strategy!r}"
        )
    if allowed_fails < 0 or cooldown_time < 0:
        raise ConfigurationError(
            f"endpoint {endpoint.name!r}: allowed_fails and cooldown_time must be >= 0, "
            f"got {allowed_fails} and {cooldown_time}"
        )
    deployments = []
    for model, api_base, key in endpoint.deployments():
        params: dict[str, Any] = {"model": model, "api_key": key.reveal() if key is not None else "local", "timeout": endpoint.timeout}
        if api_base:
            params["api_base"] = api_base
        deployments.append({"model_name": endpoint.name, "litellm_params": params})
    return Router(
        model_list=deployments,
        num_retries=endpoint.num_retries,
        allowed_fails=allowed_fails,
        cooldown_time=cooldown_time,
        retry_after=retry_after,
        routing_strategy=routing_strategy,
        timeout=endpoint.timeout,
    )


class RoutedLM(dspy.LM):
    """A ``dspy.LM`` for an endpoint with replicas; requests are load-balanced by a LiteLLM Router.

    Args:
        endpoint: the endpoint; its ``api_base`` and every ``replicas`` entry are deployments.
        cache: whether responses are cached in ``dspy.cache`` (keyed without server addresses).
        allowed_fails: failures of one replica (per minute) before it is cooled down.
        cooldown_time: seconds a failing replica receives no requests.
        routing_strategy: LiteLLM routing strategy (``simple-shuffle`` spreads requests at random).
        **kwargs: LM defaults (temperature, max_tokens, n, rollout_id, ...).

    Attributes:
        endpoint: the endpoint this LM routes over.
        router: the ``litellm.Router``; shared by copies, so cooldowns are shared too.

    Built by :func:`fusion_dspy.lm.factory.lm_for` (``Endpoint.lm()``), which also gives it
    ``fd_name`` and ``fd_context_window`` as it does every LM.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        cache: bool = True,
        allowed_fails: int = 1,
        cooldown_time: float = 30.0,
        routing_strategy: str = "simple-shuffle",
        **kwargs: Any,
    ):
        if not endpoint.replicas:
            raise ConfigurationError(f"endpoint {endpoint.name!r} has no replicas; use Endpoint.lm() directly")
        for key in ("api_base", "api_key", "base_url"):
            if key in kwargs:
                raise ConfigurationError(
                    f"endpoint {endpoint.name!r}: {key} is set per replica in the endpoint, not as an LM setting"
                )
        super().__init__(
            endpoint.model,
            engine="litellm",
            cache=cache,
            num_retries=endpoint.num_retries,
            **kwargs,
        )
        self.endpoint = endpoint
        self.router = build_router(
            endpoint, allowed_fails=allowed_fails, cooldown_time=cooldown_time, routing_strategy=routing_strategy
        )

    # -- requests ------------------------------------------------------------------------------
    def _request(self, prompt: str | None, messages: list[dict] | None, kwargs: dict[str, Any]) -> tuple[dict, bool]:
        merged = {**self.kwargs, **kwargs}
        use_cache = bool(merged.pop("cache", self.cache))
        if merged.get("rollout_id") is None:
            merged.pop("rollout_id", None)
        if merged.get("n") == 1:
            merged.pop("n")
        rendered = messages or [{"role": "user", "content": prompt}]
        return {"model": self.model, "messages": rendered, **merged}, use_cache

    def _cache_key(self, request: dict) -> dict:
        return {**copy.deepcopy(request), "_fn_identifier": _CACHE_ID}

    def _wire(self, request: dict) -> dict:
        wire = {k: v for k, v in request.items() if k != "rollout_id"}
        wire["model"] = self.endpoint.name  # the Router's model group
        return wire

    def forward(self, prompt: str | None = None, messages: list[dict] | None = None, **kwargs: Any) -> Any:
        """One chat completion (with all ``n`` choices) through the Router; cached in ``dspy.cache``.

        Under DSPy's ``send_stream`` (``dspy.streamify``, the fusion endpoint) the completion is
        streamed through the Router and every chunk is sent on as it arrives, as ``dspy.LM`` does
        (from a worker thread of the event loop, as DSPy requires); streamed calls are not cached.
        """
        request, use_cache = self._request(prompt, messages, kwargs)
        if dspy.settings.send_stream is not None:
            import anyio.from_thread

            return anyio.from_thread.run(self._streamed(request))
        if use_cache:
            hit = dspy.cache.get(self._cache_key(request))
            if hit is not None:
                return hit
        try:
            response = self.router.completion(**self._wire(request))
        except Exception as exc:
            raise self._error(exc) from exc
        if use_cache:
            dspy.cache.put(self._cache_key(request), response)
        return response

    async def aforward(self, prompt: str | None = None, messages: list[dict] | None = None, **kwargs: Any) -> Any:
        """Async :meth:`forward`."""
        import asyncio

        request, use_cache = self._request(prompt, messages, kwargs)
        if dspy.settings.send_stream is not None:
            return await self._streamed(request)()
        if use_cache:
            hit = await asyncio.to_thread(dspy.cache.get, self._cache_key(request))
            if hit is not None:
                return hit
        try:
            response = await self.router.acompletion(**self._wire(request))
        except Exception as exc:
            raise self._error(exc) from exc
        if use_cache:
            await asyncio.to_thread(dspy.cache.put, self._cache_key(request), response)
        return response

    def _streamed(self, request: dict[str, Any]) -> Any:
        """An async call that streams ``request`` through the Router to DSPy's ``send_stream`` and returns the whole response.

        The stream, the calling predictor (DSPy tags each chunk with its id) and usage tracking are
        read here, in the caller's context, before the call hops to the event loop.
        """
        import litellm

        stream = dspy.settings.send_stream
        caller = dspy.settings.caller_predict
        predict_id = id(caller) if caller is not None else None
        wire = self._wire(request)
        if dspy.settings.track_usage:
            wire["stream_options"] = {"include_usage": True}

        async def call() -> Any:
            try:
                response = await self.router.acompletion(stream=True, **wire)
            except Exception as exc:
                raise self._error(exc) from exc
            chunks = []
            try:
                async for chunk in response:
                    if predict_id is not None:
                        chunk.predict_id = predict_id
                    chunks.append(chunk)
                    _stream_emitted()
                    await stream.send(chunk)
            finally:
                close = getattr(response, "aclose", None)
                if close is not None:
                    await close()  # a stopped stream closes its connection: the replica stops decoding
            return litellm.stream_chunk_builder(chunks)

        return call

    def _error(self, exc: Exception) -> Exception:
        """Connection-type failures after every retry become an EndpointError naming the replicas."""
        import litellm

        transient = (
            litellm.exceptions.APIConnectionError,
            litellm.exceptions.Timeout,
            litellm.exceptions.InternalServerError,
            litellm.exceptions.ServiceUnavailableError,
            litellm.exceptions.RateLimitError,
        )
        if isinstance(exc, transient) or "No deployments available" in str(exc):
            bases = [self.endpoint.api_base, *(base for _, base in self.endpoint.replicas)]
            return EndpointError(
                f"endpoint {self.endpoint.name!r}: every replica failed ({type(exc).__name__}: {exc}); "
                f"replicas: {bases}",
                endpoint=self.endpoint.name,
                api_base=", ".join(str(b) for b in bases),
            )
        return exc

    # -- copies share the router (its connections and cooldown state) ---------------------------
    def __deepcopy__(self, memo: dict) -> RoutedLM:
        clone = copy.copy(self)
        clone.kwargs = copy.deepcopy(self.kwargs, memo)
        clone.history = []
        return clone

    def __repr__(self) -> str:
        return f"RoutedLM({self.endpoint.name!r}, replicas={1 + len(self.endpoint.replicas)})"


def _stream_emitted() -> None:
    """Tell DSPy that visible output left (it then never replays the call), where this DSPy version tracks it."""
    try:
        from dspy.clients.call_context import stream_emitted
    except ImportError:  # older DSPy: nothing to tell
        return
    stream_emitted()
