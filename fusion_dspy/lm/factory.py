"""The one place an :class:`~fusion_dspy.lm.endpoints.Endpoint` becomes a ``dspy`` LM.

One server gives a ``dspy.LM`` through LiteLLM (``engine="litellm"``); an endpoint with replicas
gives a :class:`~fusion_dspy.lm.router.RoutedLM` over all of them. Either way the LM carries what
the rest of the library reads from it: ``fd_name`` (the endpoint's name, recorded with every
candidate and read by :func:`~fusion_dspy.lm.endpoints.lm_name`) and ``fd_context_window`` (the
endpoint's context in tokens, with which the fusor fits its prompt). Setting both here, for every
kind of LM, is what keeps a replicated endpoint from silently losing its context window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fusion_dspy.lm.endpoints import Endpoint


def lm_for(endpoint: Endpoint, **overrides: Any) -> Any:
    """A ``dspy`` LM for ``endpoint``; ``overrides`` (temperature, max_tokens, cache, ...) become LM defaults."""
    import dspy
    import litellm  # noqa: F401 - import once, before any thread: first imports racing in threads fail

    kwargs = {**endpoint.defaults, **overrides}
    cache = kwargs.pop("cache", True)
    if endpoint.replicas:
        from fusion_dspy.lm.router import RoutedLM

        lm = RoutedLM(endpoint, cache=cache, **kwargs)
    else:
        lm = dspy.LM(
            endpoint.model,
            api_base=endpoint.api_base,
            api_key=endpoint.key("local"),
            engine="litellm",
            cache=cache,
            num_retries=endpoint.num_retries,
            timeout=endpoint.timeout,
            **kwargs,
        )
    lm.fd_name = endpoint.name
    lm.fd_context_window = endpoint.context_window
    return lm
