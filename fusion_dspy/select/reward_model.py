"""Best-of-N scorer: a reward model served by vLLM, called over HTTP.

vLLM serves reward models through its pooling API (``vllm serve MODEL --runner pooling`` or
``--task reward``): ``POST /pooling`` with chat ``messages`` returns the reward; classification
heads are served at ``POST /classify``. Both are supported here.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Literal

from fusion_dspy.errors import ConfigurationError, EndpointError, first_line, is_endpoint_failure
from fusion_dspy.llm_text import render_fields
from fusion_dspy.lm.endpoints import check_api_base
from fusion_dspy.lm.fanout import fan_out
from fusion_dspy.lm.secrets import Secret, reveal
from fusion_dspy.types import CandidateSet, Usage

logger = logging.getLogger(__name__)


# Answers that say the server cannot serve this route at all (wrong key, no such route or model, overloaded),
# whatever the candidate: the example must fail (and be retried), not fall back to an unscored pick.
_SERVER_STATUSES = frozenset({401, 403, 404, 405, 408, 429})


def _is_server_failure(exc: BaseException) -> bool:
    """Connection errors, 5xx, and authentication or routing errors; a 400/422 (this input) is not one."""
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        return code >= 500 or code in _SERVER_STATUSES
    return isinstance(exc, httpx.TransportError) or is_endpoint_failure(exc)


def _describe(exc: BaseException) -> str:
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} on POST {exc.request.url}"
    return first_line(exc)


def _flatten(value: Any) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, list):
        out: list[float] = []
        for v in value:
            out.extend(_flatten(v))
        return out
    raise ValueError(f"unexpected reward value {value!r}")


class RewardModelScorer:
    """Scores candidates with a reward model behind a vLLM server.

    Args:
        api_base: the server's URL (``http://host:port`` or ``.../v1``).
        model: the served model name.
        route: ``pooling`` (reward models) or ``classify`` (sequence classifiers).
        label_index: which logit/probability is the reward (default the last).
        timeout: seconds per request; max_workers: concurrent requests.
    """

    def __init__(
        self,
        api_base: str,
        model: str,
        *,
        route: Literal["pooling", "classify"] = "pooling",
        label_index: int = -1,
        api_key: str | Secret | None = None,
        timeout: float = 60.0,
        max_workers: int = 4,
    ):
        check_api_base(api_base, "reward model")
        if route not in ("pooling", "classify"):
            raise ConfigurationError(f"reward model route must be 'pooling' or 'classify', got {route!r}")
        base = api_base.rstrip("/")
        self.url = (base[: -len("/v1")] if base.endswith("/v1") else base) + f"/{route}"
        self.model = model.split("/", 1)[1] if model.startswith(("hosted_vllm/", "openai/")) else model
        self.route = route
        self.label_index = label_index
        self.api_key = Secret.from_config(api_key, where="reward model api_key")
        self.timeout = timeout
        self.max_workers = max_workers

    @classmethod
    def from_endpoint(cls, endpoint: Any, **kwargs: Any) -> RewardModelScorer:
        """A scorer for an :class:`~fusion_dspy.lm.endpoints.Endpoint` of a reward model."""
        return cls(endpoint.api_base, endpoint.model, api_key=endpoint.api_key, **kwargs)

    def reward(self, prompt: str, response: str) -> float:
        """The reward of one (prompt, response) pair."""
        import httpx

        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        if self.route == "pooling":
            body: dict[str, Any] = {"model": self.model, "messages": messages}
        else:
            body = {"model": self.model, "input": [f"{prompt}\n\n{response}"]}
        headers = {"Authorization": f"Bearer {reveal(self.api_key)}"} if self.api_key is not None else {}
        resp = httpx.post(self.url, json=body, headers=headers, timeout=self.timeout)
        resp.raise_for_status()
        item = resp.json()["data"][0]
        if self.route == "pooling":
            values = _flatten(item["data"])
        else:
            values = _flatten(item.get("probs") or item.get("logits") or item["data"])
        return values[self.label_index]

    def check(self, timeout: float = 10.0) -> None:
        """Fail fast when the reward route itself does not answer: score one tiny pair.

        ``GET /models`` may answer while ``/pooling`` is missing (a chat model, the wrong ``route``)
        or refuses the key; every example would then fail.

        Raises:
            EndpointError: the route is unreachable, refuses the key, or does not exist.
        """
        saved, self.timeout = self.timeout, min(self.timeout, timeout)
        try:
            self.reward("Say hi.", "Hi.")
        except Exception as exc:  # noqa: BLE001 - every failure of the probe is reported the same way
            raise EndpointError(f"reward model {self.model!r} does not answer at {self.url} ({_describe(exc)}); "
                                f"is it served as a reward model (vllm serve --runner pooling, route {self.route!r}) and is its key right?",
                                endpoint=self.model, api_base=self.url) from None
        finally:
            self.timeout = saved

    def score_candidates(self, cset: CandidateSet) -> tuple[dict[int, float | None], dict[str, Any], Usage]:
        prompt = render_fields(cset.inputs)
        ok = list(cset.ok)
        started = time.perf_counter()

        def one(c):
            try:
                return c.index, self.reward(prompt, render_fields(c.outputs, cset.output_fields)), None
            except Exception as exc:  # noqa: BLE001 - a bad answer gives no score, not a crash
                if _is_server_failure(exc):
                    raise EndpointError(f"reward model {self.model!r} at {self.url} failed: {_describe(exc)}",
                                        endpoint=self.model, api_base=self.url) from exc
                return c.index, None, f"{type(exc).__name__}: {exc}"[:300]

        results = fan_out(one, ok, max_workers=self.max_workers)
        scores = {i: (s if s is not None and math.isfinite(s) else None) for i, s, _ in results}
        errors = {i: e for i, _, e in results if e}
        if errors:
            logger.warning("reward model failed for %d of %d candidates", len(errors), len(ok))
        return scores, ({"errors": errors} if errors else {}), Usage(seconds=time.perf_counter() - started, calls=len(ok))
