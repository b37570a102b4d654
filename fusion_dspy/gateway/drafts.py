"""Candidates of a chat request: chat completions of the client's own messages, drawn concurrently.

Each teacher gets one request with ``n`` = its share of the N samples (the server computes the
prompt once), sent asynchronously so that a client that goes away cancels them (the connection to
the model server is closed, and llama.cpp and vLLM stop decoding). With ``tools``, candidates may
call them: when most candidates do, the answer is the majority tool call, by name and normalised
arguments (:func:`tool_vote`, a :func:`~fusion_dspy.select.majority_vote` on the calls);
otherwise the text answers are what the method aggregates (:meth:`Drafts.text_set`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fusion_dspy.errors import EndpointSamplingError, SamplingError, first_line, is_endpoint_failure
from fusion_dspy.gateway.conversation import OUTPUT_FIELD
from fusion_dspy.lm.token_count import choice_token_counts
from fusion_dspy.sampling import ENDPOINT_FAILURE_MARK, learn_n_limit, n_limit_of, split_usage
from fusion_dspy.select import majority_vote
from fusion_dspy.types import Candidate, CandidateSet, Selection, Usage

logger = logging.getLogger(__name__)

TOOL_FIELD = "tool_calls"


@dataclass(frozen=True)
class Drafts:
    """Every sampled completion of one request.

    Attributes:
        candidates: one per sample; ``outputs`` holds the text (``response``), failures their error.
        tool_calls: the OpenAI tool calls of the candidates that made some, by candidate index.
        usage: what the sampling spent (all teachers; the wall time of the slowest).
    """

    candidates: tuple[Candidate, ...]
    tool_calls: Mapping[int, tuple[dict[str, Any], ...]]
    usage: Usage

    @property
    def ok(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.ok)

    def text_set(self, inputs: dict[str, Any]) -> CandidateSet:
        """The candidates that answered in text, as the set a method aggregates (usage: all of the sampling)."""
        texts = tuple(c for c in self.ok if not self.tool_calls.get(c.index))
        return CandidateSet(dict(inputs), texts, (OUTPUT_FIELD,), self.usage)


async def draw(
    teachers: Mapping[str, Any], counts: Mapping[str, int], messages: Sequence[dict[str, Any]], params: Mapping[str, Any],
    temperature: float,
) -> Drafts:
    """``counts[name]`` chat completions of ``messages`` from each teacher LM, concurrently.

    Raises:
        EndpointSamplingError: no teacher answered (a retry later may succeed).
        SamplingError: every sample failed otherwise.
    """
    started = time.perf_counter()
    names = [name for name in teachers if counts.get(name)]
    results = await asyncio.gather(*(_one(name, teachers[name], counts[name], messages, params, temperature) for name in names))
    candidates: list[Candidate] = []
    calls: dict[int, tuple[dict[str, Any], ...]] = {}
    for per_teacher in results:
        for c, tool_calls in per_teacher:
            index = len(candidates)
            candidates.append(Candidate(index, c.model, c.sample, c.outputs, c.usage, c.error, c.raw, c.parse))
            if tool_calls:
                calls[index] = tool_calls
    usage = sum((c.usage for c in candidates), Usage())
    drafts = Drafts(tuple(candidates), calls, Usage(usage.prompt_tokens, usage.completion_tokens, time.perf_counter() - started, usage.calls))
    if not drafts.ok:
        errors = "; ".join(f"{c.model}#{c.sample}: {c.error}" for c in candidates[:4])
        if all(c.error and c.error.startswith(ENDPOINT_FAILURE_MARK) for c in candidates):
            raise EndpointSamplingError(f"all {len(candidates)} samples failed: no teacher answered ({errors})", endpoint=", ".join(names))
        raise SamplingError(f"all {len(candidates)} samples failed ({errors})")
    return drafts


async def _one(name: str, lm: Any, k: int, messages, params, temperature: float) -> list[tuple[Candidate, tuple[dict[str, Any], ...]]]:
    """``k`` completions from one teacher: one ``n=k`` request, or requests of at most its server's ``n`` limit.

    llama.cpp refuses ``n`` beyond its parallel slots (the embedded model takes 4); the limit is
    learnt from the refusal and remembered with the library's sampling (``sampling.n_limit_of``).
    """
    started = time.perf_counter()
    cap = n_limit_of(lm) or k
    for _ in range(2):
        sizes = [min(cap, k - start) for start in range(0, k, cap)]
        results = await asyncio.gather(*(_request(lm, size, messages, params, temperature) for size in sizes), return_exceptions=True)
        limit = min((x for r in results if isinstance(r, Exception) and (x := learn_n_limit(lm, r))), default=None)
        if limit is None or limit >= cap:
            break
        logger.info("%s takes at most n=%d per request; drawing %d candidates in requests of %d", name, limit, k, limit)
        cap = limit
    out: list[tuple[Candidate, tuple[dict[str, Any], ...]]] = []
    for size, result in zip(sizes, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            mark = ENDPOINT_FAILURE_MARK if is_endpoint_failure(result) else ""
            logger.warning("sampling %s failed: %s", name, first_line(result))
            seconds = time.perf_counter() - started
            out += [(Candidate(len(out) + i, name, len(out) + i, {}, Usage(seconds=seconds / size, calls=int(i == 0)),
                               error=mark + first_line(result, 500)), ()) for i in range(size)]
            continue
        reported = int(getattr(getattr(result, "usage", None), "completion_tokens", 0) or 0)
        counts = await asyncio.to_thread(choice_token_counts, lm, _texts(result), reported)  # llama.cpp counts one choice
        out += _choices(name, result, len(out), time.perf_counter() - started, counts)
    return out


async def _request(lm: Any, size: int, messages, params, temperature: float) -> Any:
    return await lm.aforward(messages=list(messages), n=size, temperature=temperature, **params)


def _texts(response: Any) -> list[str]:
    return [(_get(_get(choice, "message"), "content") or "") for choice in (response.choices or [])]


def _choices(name: str, response: Any, first: int, seconds: float,
             counts: list[int] | None = None) -> list[tuple[Candidate, tuple[dict[str, Any], ...]]]:
    """One response's choices as candidates ``first``, ``first + 1``, ...; its usage shared between them (``counts``: per choice, when counted)."""
    choices = list(response.choices or [])
    usage = getattr(response, "usage", None)
    total = Usage(int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0), seconds, 1)
    texts = _texts(response)
    shares = split_usage(total, [t or " " for t in texts], counts)
    out = []
    for i, choice in enumerate(choices):
        message = _get(choice, "message")
        tool_calls = tuple(_call_dict(call) for call in (_get(message, "tool_calls") or []))
        text = texts[i].strip()
        index = first + i
        if not text and not tool_calls:
            out.append((Candidate(index, name, index, {}, shares[i], error="empty response", parse="failed"), ()))
            continue
        out.append((Candidate(index, name, index, {OUTPUT_FIELD: text}, shares[i]), tool_calls))
    return out


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def _call_dict(call: Any) -> dict[str, Any]:
    function = _get(call, "function")
    arguments = _get(function, "arguments")
    return {
        "id": _get(call, "id") or "",
        "type": "function",
        "function": {"name": _get(function, "name") or "", "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)},
    }


def call_key(calls: Sequence[dict[str, Any]]) -> str | None:
    """What makes two candidates' tool calls the same: the functions and their normalised arguments, in any order."""
    if not calls:
        return None
    normal = []
    for call in calls:
        arguments = call["function"]["arguments"]
        try:
            arguments = json.dumps(json.loads(arguments), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError):
            arguments = " ".join(str(arguments).split())
        normal.append([call["function"]["name"], arguments])
    return json.dumps(sorted(normal), ensure_ascii=False)


def tool_vote(drafts: Drafts, tool_choice: Any = None) -> tuple[Selection, tuple[dict[str, Any], ...]] | None:
    """The majority tool call, when most candidates call a tool (any caller when ``tool_choice`` demands a call).

    Returns the vote (a :class:`Selection` over the candidates' call keys) and the winning
    candidate's calls, or None when the answer is text.
    """
    ok = drafts.ok
    callers = [c for c in ok if drafts.tool_calls.get(c.index)]
    forced = tool_choice == "required" or isinstance(tool_choice, Mapping)
    if not callers or (not forced and 2 * len(callers) <= len(ok)):
        return None
    keyed = tuple(Candidate(c.index, c.model, c.sample, {TOOL_FIELD: call_key(drafts.tool_calls.get(c.index, ()))}, c.usage) for c in ok)
    vote = majority_vote(CandidateSet({}, keyed, (TOOL_FIELD,)), TOOL_FIELD, normalize=lambda key: key, method="tool_majority")
    return vote, drafts.tool_calls[vote.index]
