"""One chat request, answered: draw the candidates, then the majority tool call or the registry's method.

:class:`Gateway` holds one LM per pool member (made once, through the library's LM factory) and
answers a checked :class:`~fusion_dspy.gateway.protocol.ChatRequest`:

1. the candidates are drawn asynchronously (:func:`~fusion_dspy.gateway.drafts.draw`);
2. with tools, when most candidates call one, the answer is the majority call;
3. otherwise the text candidates go to the method of the aggregation registry (``FUSION``: a
   :class:`~fusion_dspy.fuse.Fusor` with plain prompts; ``BON``: an :class:`~fusion_dspy.select.LLMRater`),
   exactly as ``FusionOfN``, ``eval`` and ``synth`` run it, in a worker thread with an
   :class:`~fusion_dspy.gateway.answer_stream.AnswerStream` as DSPy's ``send_stream``, so the
   fusor's tokens stream out as they are decoded and a disconnect stops its calls.

A pool member asked for by name gets the request as it came (:meth:`Gateway.pass_through`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import dspy

from fusion_dspy.aggregate import FUSION, Aggregators
from fusion_dspy.fuse import Fusor
from fusion_dspy.gateway.answer_stream import AnswerStream, StopAnswer
from fusion_dspy.gateway.conversation import OUTPUT_FIELD, chat_task
from fusion_dspy.gateway.drafts import draw, tool_vote
from fusion_dspy.gateway.protocol import ChatRequest
from fusion_dspy.lm.endpoints import Pool
from fusion_dspy.sampling import POOL_TEMPERATURE, SINGLE_TEMPERATURE
from fusion_dspy.select import LLMRater
from fusion_dspy.types import Fusion, Usage

logger = logging.getLogger(__name__)

#: histories DSPy keeps per LM and predictor while the endpoint runs (it would keep 10,000 of each)
HISTORY = 64
RATER_MAX_TOKENS = 256
_FUSOR_PARAMS = ("max_tokens", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")


@dataclass
class Answer:
    """What a request produced, before it is written as an OpenAI response.

    Attributes:
        content / tool_calls / reasoning: the assistant message (reasoning: the fusor's comparison).
        finish_reason: ``stop``, ``length`` (the fused answer hit its budget) or ``tool_calls``.
        stages: tokens and seconds per stage (``sampling``, ``fusion`` or ``rating``).
        candidates / candidates_ok: samples asked for and samples that answered.
        fallback: why the answer is not the method's own (a candidate instead of a fused answer).
        cut: why the answer ends early: a streamed one's check failed after part of it was sent, or the
            Fusor cut off the loop the fusor's text ended in.
        details: the method's record (shown order, scores, votes, budget).
    """

    content: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    reasoning: str | None = None
    finish_reason: str = "stop"
    stages: dict[str, Usage] = field(default_factory=dict)
    candidates: int = 0
    candidates_ok: int = 0
    fallback: str | None = None
    cut: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def usage(self) -> Usage:
        return sum(self.stages.values(), Usage())


class Gateway:
    """Answers chat requests with the pool's models (see the module docstring).

    Args:
        pool: the endpoints and their roles (teachers, fusor, rater, temperature).
        fusor_temperature: the fusor's temperature when the request sets none (0, as ``eval`` and ``demo`` use).
        default_max_tokens: the candidates' ``max_tokens`` when the request sets none.
    """

    def __init__(self, pool: Pool, *, fusor_temperature: float = 0.0, default_max_tokens: int = 512):
        self.pool = pool
        self.fusor_temperature = fusor_temperature
        self.default_max_tokens = default_max_tokens
        self.lms = {name: endpoint.lm(cache=False) for name, endpoint in pool.endpoints.items()}

    @property
    def members(self) -> dict[str, Any]:
        return dict(self.pool.endpoints)

    async def answer(self, request: ChatRequest, stream: AnswerStream) -> Answer:
        """Fusion or Best-of-N (or the majority tool call) for ``request``; ``stream`` gets the answer live."""
        try:
            return await self._answer(request, stream)
        finally:
            trim_global_history()

    async def _answer(self, request: ChatRequest, stream: AnswerStream) -> Answer:
        options = request.options
        teachers = options.teachers or self.pool.teachers
        counts = {name: request.n // len(teachers) + (i < request.n % len(teachers)) for i, name in enumerate(teachers)}
        temperature = options.temperature
        if temperature is None:
            temperature = SINGLE_TEMPERATURE if len(teachers) == 1 else self.pool.temperature or POOL_TEMPERATURE
        params = {"max_tokens": self.default_max_tokens, **request.params}
        drafts = await draw({t: self.lms[t] for t in teachers}, counts, request.messages, params, temperature)
        answer = Answer(stages={"sampling": drafts.usage}, candidates=request.n, candidates_ok=len(drafts.ok))
        if request.tools and request.tool_choice != "none":
            voted = tool_vote(drafts, request.tool_choice)
            if voted is not None:
                vote, calls = voted
                answer.tool_calls, answer.finish_reason = calls, "tool_calls"
                answer.details = {"votes": vote.details.get("votes"), "chosen": vote.index}
                return answer
        signature, inputs = chat_task(request.messages)
        cset = drafts.text_set(inputs)
        lm_params = {k: v for k, v in params.items() if k in _FUSOR_PARAMS}
        if request.method == FUSION:
            fusor_lm = self.lms[options.fusor or self.pool.fusor_name].copy(
                temperature=self.fusor_temperature if request.temperature is None else request.temperature, **lm_params)
            fusor = Fusor(signature, lm=fusor_lm, format="plain", compare=options.compare, seed=options.seed or 0)
            stream.fuse_id, stream.compare_id = id(fusor.fuse), id(fusor.compare) if fusor.compare is not None else None
            stream.sources, stream.inputs, stream.field = list(cset.ok), dict(inputs), OUTPUT_FIELD
            methods = Aggregators(fusor=fusor, seed=options.seed or 0)
        else:
            rater_lm = self.lms[options.rater or self.pool.rater_name].copy(temperature=0.0, max_tokens=RATER_MAX_TOKENS)
            methods = Aggregators(scorer=LLMRater(rater_lm, max_workers=1), seed=options.seed or 0)
        stage = FUSION if request.method == FUSION else "rating"  # the fusor's calls, or the rater's
        result, stopped, spent = await _in_thread(lambda: methods.get(request.method).run(cset), stream)
        if stopped is not None:  # the client left or the deadline passed (re-raised), or the streamed answer was cut
            if not stopped.cut:
                raise stopped
            # the cut call was stopped before the server reported its usage: its completion is counted by chunks
            answer.stages[stage] = spent + Usage(completion_tokens=stream.attempt_chunks)
            answer.content, answer.cut = stream.sent, stream.cut
            answer.details = {"cut": stream.cut, "usage_estimated": True}
            return answer
        outcome = result.outcome
        answer.stages[stage] = outcome.usage
        answer.fallback = outcome.fallback
        answer.details = outcome.to_dict()
        if isinstance(outcome, Fusion):
            answer.reasoning = outcome.comparison or None
            answer.finish_reason = "length" if outcome.truncated and outcome.fallback is None else "stop"
        answer.content = await stream.finish(outcome.outputs, outcome if isinstance(outcome, Fusion) else None)
        answer.cut = stream.cut or (outcome.cut if isinstance(outcome, Fusion) else None)  # a loop the Fusor cut off
        return answer

    async def pass_through(self, request: ChatRequest, emit: Callable[[dict[str, Any]], Awaitable[None]] | None,
                           stop: AnswerStream) -> Any:
        """The member's own chat completion of the request (its deltas to ``emit`` as they come, when streamed)."""
        lm = self.lms[request.member]
        params = dict(request.params)
        if request.temperature is not None:
            params["temperature"] = request.temperature
        try:
            if emit is None:
                return await lm.aforward(messages=list(request.messages), **params)
            with dspy.context(send_stream=_Relay(emit, stop), track_usage=True, max_history_size=HISTORY):
                return await lm.aforward(messages=list(request.messages), **params)
        finally:
            trim_global_history()


def trim_global_history() -> None:
    """Keep DSPy's process-wide call history short, as ``records/runner.py`` does for long runs.

    DSPy keeps the last 10,000 calls of the process (messages and responses); an endpoint that
    runs for days would hold them all. Each LM's and predictor's history is bounded by ``HISTORY``
    in the context of each request.
    """
    from dspy.clients import base_lm

    history = getattr(base_lm, "GLOBAL_HISTORY", None)
    if isinstance(history, list) and len(history) > 2 * HISTORY:
        del history[: len(history) - HISTORY]


class _Relay:
    """DSPy's ``send_stream`` for a pass-through request: every delta, as it comes."""

    def __init__(self, emit: Callable[[dict[str, Any]], Awaitable[None]], stop: AnswerStream):
        self.emit = emit
        self.stop = stop

    async def send(self, chunk: Any) -> None:
        self.stop.check()  # raises StopAnswer once the client is gone
        choice = chunk.choices[0] if getattr(chunk, "choices", None) else None
        delta = (choice["delta"] if isinstance(choice, dict) else getattr(choice, "delta", None)) if choice is not None else None
        if delta:
            await self.emit(_plain(delta))


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        value = value.model_dump(exclude_none=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None and k != "provider_specific_fields"}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


async def _in_thread(work: Callable[[], Any], stream: AnswerStream) -> tuple[Any, StopAnswer | None, Usage]:
    """Run a (synchronous) aggregation in a worker thread with ``stream`` as DSPy's ``send_stream``.

    Returns the result (or the :class:`StopAnswer` that ended it) and the usage of the calls that
    completed. When the request is cancelled (the client left, the deadline passed), ``stream`` is
    told, so the thread's next chunk raises and closes the model server's connection; the thread is
    still waited for, so the request's slot is freed only once the upstream work has stopped.
    """
    finished = threading.Event()

    def run() -> tuple[Any, StopAnswer | None, Usage]:
        started = time.perf_counter()
        settings = {"send_stream": stream, "track_usage": True, "max_history_size": HISTORY, "max_trace_size": HISTORY}
        try:
            with dspy.context(**settings), dspy.track_usage() as tracker:
                try:
                    return work(), None, Usage()
                except StopAnswer as stop:
                    return None, stop, Usage.from_lm_usage(tracker.get_total_tokens(), seconds=time.perf_counter() - started)
        finally:
            finished.set()

    try:
        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        stream.cancel("the request was cancelled")
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(finished.wait)
        raise
