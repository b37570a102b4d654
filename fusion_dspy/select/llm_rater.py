"""Best-of-N scorer: an LLM rates each candidate from 1 to 5 (the paper's rubric)."""

from __future__ import annotations

import logging
import time
from typing import Any

import dspy

from fusion_dspy.errors import EndpointError, first_line, is_endpoint_failure
from fusion_dspy.llm_text import fence, render_fields
from fusion_dspy.lm.endpoints import lm_name
from fusion_dspy.lm.fanout import fan_out
from fusion_dspy.lm.parsing import SchemaAdapter, field_char_limits
from fusion_dspy.signatures import RateResponse
from fusion_dspy.types import CandidateSet, Usage

logger = logging.getLogger(__name__)


class LLMRater(dspy.Module):
    """Rates candidates 1-5 with an LLM; the score is read from JSON (constrained) or ``[[N]]``.

    Args:
        lm: the rater LM (default: ``dspy.settings.lm`` at call time).
        max_workers: candidates rated concurrently.
        use_schema: ask for JSON with a bounded analysis (constrained decoding).
        retries: extra attempts (fresh sample, lenient parse) before giving a candidate no score.
    """

    def __init__(self, lm: Any = None, *, max_workers: int = 1, use_schema: bool = True, retries: int = 1):
        super().__init__()
        self.lm = lm
        self.rate = dspy.Predict(RateResponse)
        self.max_workers = max_workers
        self.use_schema = use_schema
        self.retries = retries

    def forward(self, task: str, response: str) -> dspy.Prediction:
        return self._rate_one(task, response)[0]

    def _rate_one(self, task: str, response: str) -> tuple[dspy.Prediction | None, str | None, str]:
        lm = self.lm or dspy.settings.lm
        limits = field_char_limits(RateResponse, (getattr(lm, "kwargs", {}) or {}).get("max_tokens"), short_fields={"analysis": 0.8})
        error = None
        for attempt in range(1 + self.retries):
            adapter = SchemaAdapter(limits, optional=("analysis",), use_schema=self.use_schema)
            attempt_lm = lm if attempt == 0 else lm.copy(rollout_id=attempt, temperature=max(0.3, lm.kwargs.get("temperature") or 0.0))
            try:
                with dspy.context(lm=attempt_lm, adapter=adapter):
                    pred = self.rate(task=task, response=fence(response, "response"))
                score = int(pred.score)
                if not 1 <= score <= 5:
                    raise ValueError(f"score {score} outside 1..5")
                return pred, None, adapter.last_parse
            except Exception as exc:  # noqa: BLE001 - unparseable rating: retry, then no score
                error = first_line(exc)
                if is_endpoint_failure(exc):  # a dead server is not an unparseable rating: propagate
                    raise EndpointError(f"rater {lm_name(lm)} failed: {error}", endpoint=lm_name(lm),
                                        api_base=getattr(lm, "kwargs", {}).get("api_base")) from exc
                logger.info("rating attempt %d failed: %s", attempt + 1, error)
        return None, error, "failed"

    def score_candidates(self, cset: CandidateSet) -> tuple[dict[int, float | None], dict[str, Any], Usage]:
        task = render_fields(cset.inputs)
        ok = list(cset.ok)
        started = time.perf_counter()

        def one(c):
            with dspy.track_usage() as tracker:
                pred, error, parse = self._rate_one(task, render_fields(c.outputs, cset.output_fields))
            return c.index, pred, error, parse, tracker.get_total_tokens()

        results = fan_out(one, ok, max_workers=self.max_workers)
        scores: dict[int, float | None] = {}
        analyses: dict[int, str] = {}
        fallbacks: dict[int, str] = {}
        usage = Usage(seconds=time.perf_counter() - started)
        lenient: list[int] = []
        for index, pred, error, parse, lm_usage in results:
            usage = usage + Usage.from_lm_usage(lm_usage, calls=1)
            if pred is None:
                scores[index] = None
                fallbacks[index] = f"rater output unparseable, no score ({error})"
            else:
                scores[index] = float(pred.score)
                analyses[index] = str(pred.analysis or "")
                if parse == "lenient":
                    lenient.append(index)
        details: dict[str, Any] = {"analyses": analyses}
        if fallbacks:
            details["fallbacks"] = fallbacks
        if lenient:
            details["parsed_leniently"] = lenient
        return scores, details, usage
