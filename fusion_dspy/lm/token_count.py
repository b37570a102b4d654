"""Token counts from the serving model's own tokenizer, so budgets are measured, not assumed.

llama.cpp (``POST /tokenize {"content": ...}``) and vLLM (``POST /tokenize {"model", "prompt"}``)
both expose their tokenizer over HTTP. Where neither answers (hosted APIs), callers fall back to a
conservative 3 characters per token. A server found without the route is not asked again for ten
minutes (another server may later listen at the same address).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)

_UNAVAILABLE: dict[str, float] = {}  # server root -> when it was found without /tokenize
_RECHECK_SECONDS = 600.0
_LOCK = threading.Lock()


def forget_unavailable() -> None:
    """Ask every server for its tokenizer again (tests start servers that reuse one another's ports)."""
    with _LOCK:
        _UNAVAILABLE.clear()


def count_tokens(lm: Any, text: str, *, timeout: float = 5.0) -> int | None:
    """Tokens of ``text`` by the tokenizer of the server behind ``lm``; None where it cannot be asked."""
    kwargs = getattr(lm, "kwargs", {}) or {}
    api_base = kwargs.get("api_base") or getattr(getattr(lm, "endpoint", None), "api_base", None)  # replicas: the first
    if not api_base or not text:
        return None
    base = str(api_base).rstrip("/")
    root = base[: -len("/v1")] if base.endswith("/v1") else base
    with _LOCK:
        since = _UNAVAILABLE.get(root)
        if since is not None and time.monotonic() - since < _RECHECK_SECONDS:
            return None
    import httpx

    model = str(getattr(lm, "model", "") or "").split("/", 1)[-1]
    key = kwargs.get("api_key")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for body in ({"content": text}, {"model": model, "prompt": text}):
        try:
            resp = httpx.post(f"{root}/tokenize", json=body, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            logger.debug("tokenize at %s failed: %s", root, exc)
            break
        if resp.status_code == 200:
            data = resp.json()
            if isinstance(data.get("count"), int):
                return data["count"]
            if isinstance(data.get("tokens"), list):
                return len(data["tokens"])
    with _LOCK:
        _UNAVAILABLE[root] = time.monotonic()
    logger.info("%s has no /tokenize route; token counts are estimated from characters", root)
    return None


def choice_token_counts(lm: Any, texts: list[str], reported: int) -> list[int] | None:
    """Each choice's completion tokens by the server's tokenizer, when an ``n > 1`` answer counted one choice only.

    llama.cpp reports the first choice's completion tokens for a whole ``n`` request (measured on
    the embedded model: 128 reported for four choices of 80-128 tokens each); vLLM reports the sum.
    The first choice is counted; when it matches the report, every choice is counted. None where the
    server cannot tokenize or the report is already a sum.
    """
    if len(texts) < 2 or reported <= 0:
        return None
    first = count_tokens(lm, texts[0]) if texts[0] else 0
    if first is None or abs(first - reported) > max(2, reported // 20):  # re-tokenized text may differ by a token or two
        return None
    counts = [first]
    for text in texts[1:]:
        n = count_tokens(lm, text) if text else 0
        if n is None:
            return None
        counts.append(n)
    return counts


def chars_per_token(lm: Any, sample: str, default: float) -> float:
    """Characters per token of ``sample`` measured by ``lm``'s server, else ``default``."""
    tokens = count_tokens(lm, sample)
    if not tokens:
        return default
    return max(0.5, len(sample) / tokens)
