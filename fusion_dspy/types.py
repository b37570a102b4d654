"""The data that flows through fusion-dspy: candidates, selections and fusions.

Small frozen dataclasses with ``to_dict`` so records can be written as JSON lines unchanged.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Usage:
    """Tokens and seconds spent by one stage (sampling, aggregation) or summed over several."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.seconds + other.seconds,
            self.calls + other.calls,
        )

    @classmethod
    def from_lm_usage(cls, lm_usage: Mapping[str, Any] | None, seconds: float = 0.0, calls: int = 0) -> Usage:
        """Sum a DSPy/LiteLLM usage mapping (``{model: {prompt_tokens, ...}}`` or flat) into one Usage."""
        if not lm_usage:
            return cls(seconds=seconds, calls=calls)
        entries = lm_usage.values() if all(isinstance(v, Mapping) for v in lm_usage.values()) else [lm_usage]
        prompt = completion = 0
        for entry in entries:
            prompt += int(entry.get("prompt_tokens") or 0)
            completion += int(entry.get("completion_tokens") or 0)
        return cls(prompt, completion, seconds, calls)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Usage:
        """The Usage of its :meth:`to_dict` form (as records and caches store it)."""
        return cls(int(d.get("prompt_tokens") or 0), int(d.get("completion_tokens") or 0), float(d.get("seconds") or 0.0),
                   int(d.get("calls") or 0))

    @staticmethod
    def breakdown(sampling: Usage, aggregation: Usage) -> dict[str, dict[str, Any]]:
        """What one method spent: the shared sampling, its own aggregation, and their total."""
        return {"sampling": sampling.to_dict(), "aggregation": aggregation.to_dict(), "total": (sampling + aggregation).to_dict()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "seconds": round(self.seconds, 4),
            "calls": self.calls,
        }


@dataclass(frozen=True)
class Candidate:
    """One sampled output of the wrapped program.

    Attributes:
        index: position in the candidate set (sampling order, before any shuffling).
        model: name of the endpoint/LM that produced it.
        sample: sample index within that model (0..k-1).
        outputs: the wrapped signature's output fields; empty when the sample failed.
        usage: tokens and seconds attributed to this sample.
        error: why the sample failed (None when it succeeded).
        raw: the raw LM text when it had to be parsed leniently or could not be parsed.
        parse: how the outputs were obtained: "adapter", "lenient", or "failed".
    """

    index: int
    model: str
    sample: int
    outputs: dict[str, Any]
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    raw: str | None = None
    parse: str = "adapter"

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outputs"] = {k: _jsonable(v) for k, v in self.outputs.items()}
        d["usage"] = self.usage.to_dict()
        return d


@dataclass(frozen=True)
class CandidateSet:
    """All candidates sampled for one example, so that every aggregator sees the identical pool."""

    inputs: dict[str, Any]
    candidates: tuple[Candidate, ...]
    output_fields: tuple[str, ...]
    usage: Usage = field(default_factory=Usage)

    @property
    def ok(self) -> tuple[Candidate, ...]:
        """The candidates that succeeded, in sampling order."""
        return tuple(c for c in self.candidates if c.ok)

    @property
    def failed(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if not c.ok)

    def rng(self, seed: int, purpose: str = "") -> random.Random:
        """A random generator seeded by ``seed`` and these inputs (reproducible, differs per example)."""
        key = f"{seed}|{sorted(self.inputs.items())!r}" + (f"|{purpose}" if purpose else "")
        return random.Random(hashlib.sha256(key.encode()).hexdigest())

    def first(self, k: int) -> CandidateSet:
        """The first ``k`` candidates (for scaling curves: a smaller N reuses a larger pool).

        Their usage is what drawing them alone would have cost: their completions, and the prompt
        once per request, with requests as large as the pool's (one ``n=8`` request shares its
        prompt; its first 2 candidates cost that prompt once, not a quarter of it).
        """
        if k >= len(self.candidates):
            return self
        kept = self.candidates[:k]
        completion = sum(c.usage.completion_tokens for c in kept)
        seconds = sum(c.usage.seconds for c in kept)
        if self.usage.calls > 0:
            per_request = math.ceil(len(self.candidates) / self.usage.calls)
            requests = math.ceil(k / per_request)
            usage = Usage(round(self.usage.prompt_tokens / self.usage.calls * requests), completion, seconds, requests)
        else:  # no request count recorded: the candidates' own shares
            usage = Usage(sum(c.usage.prompt_tokens for c in kept), completion, seconds, sum(c.usage.calls for c in kept))
        return CandidateSet(self.inputs, kept, self.output_fields, usage)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": {k: _jsonable(v) for k, v in self.inputs.items()},
            "output_fields": list(self.output_fields),
            "candidates": [c.to_dict() for c in self.candidates],
            "usage": self.usage.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CandidateSet:
        cands = []
        for c in d["candidates"]:
            cands.append(
                Candidate(
                    index=c["index"],
                    model=c["model"],
                    sample=c["sample"],
                    outputs=dict(c.get("outputs") or {}),
                    usage=Usage.from_dict(c.get("usage") or {}),
                    error=c.get("error"),
                    raw=c.get("raw"),
                    parse=c.get("parse", "adapter"),
                )
            )
        return cls(dict(d["inputs"]), tuple(cands), tuple(d["output_fields"]), Usage.from_dict(d.get("usage") or {}))


@dataclass(frozen=True)
class Selection:
    """The result of a selection aggregator (Best-of-N, majority vote, oracle).

    Attributes:
        index: ``Candidate.index`` of the chosen candidate.
        scores: score per candidate index (None where a score could not be obtained).
        method: what selected it (``best_of_n`` for a scorer's pick, else the method's name).
        fallback: why the usual rule could not be applied (None when it was).
        details: method-specific extras (rater analyses, vote counts).
    """

    index: int
    outputs: dict[str, Any]
    scores: dict[int, float | None]
    method: str
    usage: Usage = field(default_factory=Usage)
    fallback: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "outputs": {k: _jsonable(v) for k, v in self.outputs.items()},
            "scores": {str(k): v for k, v in self.scores.items()},
            "method": self.method,
            "usage": self.usage.to_dict(),
            "fallback": self.fallback,
            "details": _jsonable(self.details),
        }


@dataclass(frozen=True)
class Fusion:
    """The result of Fusion-of-N over a candidate set.

    Attributes:
        outputs: the fused answer, with exactly the wrapped signature's output fields.
        comparison: the fusor's comparison of the candidates.
        order: ``Candidate.index`` of the candidates in the order they were shown to the fusor.
        fallback: why the fused answer is not the fusor's own (None when it is).
        trimmed: how candidates were shortened to fit the fusor's context, if they were.
        truncated: the fused answer stopped at ``max_tokens`` (it may be cut off).
        max_tokens: the completion budget of the fusor call (at least what the candidates used).
        cut: what was cut from an answer that ended in a decoding loop (the answer is what came before
            it; ``raw`` holds the whole text), None when nothing was.
    """

    outputs: dict[str, Any]
    comparison: str
    order: tuple[int, ...]
    usage: Usage = field(default_factory=Usage)
    fallback: str | None = None
    raw: str | None = None
    trimmed: dict[str, Any] | None = None
    truncated: bool = False
    max_tokens: int | None = None
    cut: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "outputs": {k: _jsonable(v) for k, v in self.outputs.items()},
            "comparison": self.comparison,
            "order": list(self.order),
            "usage": self.usage.to_dict(),
            "fallback": self.fallback,
            "raw": self.raw,
            "trimmed": self.trimmed,
            "truncated": self.truncated,
            "max_tokens": self.max_tokens,
            "cut": self.cut,
        }


def _jsonable(value: Any) -> Any:
    """Best-effort conversion to JSON-serialisable values (pydantic models, tuples, sets)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return str(value)


NONFINITE_KEY = "nonfinite"


def finite(value: Any, path: str = "") -> tuple[Any, dict[str, str]]:
    """``value`` with every NaN or infinite float replaced by None, and ``{path: "nan" | "inf" | "-inf"}`` of each.

    Standard JSON has no NaN or Infinity (Python writes them, other tools reject the file), so files
    fusion-dspy writes carry ``null`` where the number was not finite, and say so (:func:`json_text`).
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None, {path or "$": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        found: dict[str, str] = {}
        for k, v in value.items():
            out[k], inner = finite(v, f"{path}.{k}" if path else str(k))
            found.update(inner)
        return (out, found) if found else (value, {})
    if isinstance(value, (list, tuple)):
        items, found = [], {}
        for i, v in enumerate(value):
            item, inner = finite(v, f"{path}[{i}]")
            items.append(item)
            found.update(inner)
        return (items, found) if found else (value, {})
    return value, {}


def json_text(value: Any, **dumps: Any) -> str:
    """Standard JSON for ``value`` (``json.dumps`` with ``allow_nan=False``; other keywords passed on).

    Non-finite numbers become null; a top-level mapping then lists them under ``"nonfinite"``
    (path -> ``"nan"``, ``"inf"`` or ``"-inf"``), so the reason for each null is kept.
    """
    import json

    clean, found = finite(value)
    if found and isinstance(clean, Mapping):
        clean = {**clean, NONFINITE_KEY: {**(clean.get(NONFINITE_KEY) or {}), **found}}
    return json.dumps(clean, allow_nan=False, **dumps)
