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

from fusion_dspy.errors import ConfigurationError, EndpointError, is_endpoint_failure
from fusion_dspy.llm_text import render_fields
from fusion_dspy.lm.endpoints import check_api_base
from fusion_dspy.lm.fanout import fan_out
from fusion_dspy.lm.secrets import Secret, reveal
from fusion_dspy.types import CandidateSet, Usage

logger = logging.getLogger(__name__)


def _is_server_failure(exc: BaseException) -> bool:
    """Connection errors and 5xx answers: the server is down, so the example must fail (and be retried)."""
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError) or is_endpoint_failure(exc)


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

    def score_candidates(self, cset: CandidateSet) -> tuple[dict[int, float | None], dict[str, Any], Usage]:
        prompt = render_fields(cset.inputs)
        ok = list(cset.ok)
        started = time.perf_counter()

        def one(c):
            try:
                return c.index, self.reward(prompt, render_fields(c.outputs, cset.output_fields)), None
            except Exception as exc:  # noqa: BLE001 - a bad answer gives no score, not a crash
                if _is_server_failure(exc):
                    raise EndpointError(f"reward model {self.model!r} at {self.url} failed: {exc}", endpoint=self.model, api_base=self.url) from exc
                return c.index, None, f"{type(exc).__name__}: {exc}"[:300]

        results = fan_out(one, ok, max_workers=self.max_workers)
        scores = {i: (s if s is not None and math.isfinite(s) else None) for i, s, _ in results}
        errors = {i: e for i, _, e in results if e}
        if errors:
            logger.warning("reward model failed for %d of %d candidates", len(errors), len(ok))
        return scores, ({"errors": errors} if errors else {}), Usage(seconds=time.perf_counter() - started, calls=len(ok))
