"""The fused answer as the fusor decodes it: DSPy's stream of the aggregation's LM calls, turned into deltas.

The aggregation runs unchanged (the registry's method, the :class:`~fusion_dspy.fuse.Fusor` with its
own prompt, budget, checks, retry and fallback); this object is set as DSPy's ``send_stream`` around
it, so every LM call it makes streams its chunks here as they are decoded. With plain prompts the
fusor's completion *is* the answer, so the chunks of its fuse call are the answer's tokens, and
those of its compare call are the comparison (sent as ``reasoning_content``).

What leaves is what the Fusor would return: the text so far is cleaned as the Fusor cleans its
answer (stripped, copied ``<candidate>`` tags removed), the last :data:`HOLDBACK` characters wait
(a tag or a framing phrase may still be forming), and before each piece leaves, the text so far
passes the Fusor's own check (:func:`~fusion_dspy.fuse.unusable_answer`: framing the prompt added,
decoding loops; drift from the drafts is judged by the Fusor on the whole answer). An attempt that
fails before anything was sent is abandoned on the spot
(:class:`AttemptRejected`, a ValueError: the Fusor retries and falls back exactly as without a
stream). Text that was sent cannot be taken back: once part of an attempt is out, a later failure
ends the answer where it is (:class:`StopAnswer`), and the response says why (``cut``).

:class:`StopAnswer` is a ``BaseException``, like a cancellation: it passes through the Fusor's
retry loop and DSPy's, and closing the stream closes the connection to the model server, which
stops decoding. A client that disconnects, or a request past its deadline, stops the answer the
same way (:meth:`AnswerStream.cancel`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fusion_dspy.fuse import _unfence as fusor_clean  # the Fusor's own clean-up of its answer: stream and result agree
from fusion_dspy.fuse import unusable_answer
from fusion_dspy.types import Candidate, Fusion

logger = logging.getLogger(__name__)

#: characters of the answer held back until more is decoded: a fence tag or framing phrase may be forming
HOLDBACK = 32
_CHECK_EVERY = 12  # characters of answer between two checks of the text so far (a check takes ~1 ms on 4 x 2 KB drafts)
_OPEN_TAG = re.compile(r"<\s*/?\s*(?:candid[^>]*|c(?:a(?:n(?:d(?:i)?)?)?)?)?$", re.I)  # a fence tag still forming

Emit = Callable[[str, str], Awaitable[None]]


class AttemptRejected(ValueError):
    """The fusor's attempt failed the Fusor's check before any of it was sent (the Fusor retries)."""


class StopAnswer(BaseException):
    """Ends the aggregation's LM calls: the client left, the deadline passed, or the sent answer was cut.

    Attributes:
        reason: why.
        cut: the answer already sent ends here (a check failed after part of it was out).
    """

    def __init__(self, reason: str, *, cut: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.cut = cut


class AnswerStream:
    """DSPy's ``send_stream`` for one request's aggregation (see the module docstring).

    Args:
        emit: ``await emit(kind, text)`` with kind ``content`` or ``reasoning``; None: nothing is sent
            live (a non-streamed request: the stream still lets a disconnect stop the calls).
        fuse_id / compare_id: ``id()`` of the Fusor's fuse and compare predictors (DSPy tags chunks with them).
        sources: the candidates the fusor sees (the check discounts framing they already contain).
        inputs: the task's inputs (likewise).
        field: the answer's output field.
    """

    def __init__(self, emit: Emit | None = None, *, fuse_id: int | None = None, compare_id: int | None = None,
                 sources: Sequence[Candidate] = (), inputs: dict[str, Any] | None = None, field: str = "response"):
        self._emit = emit
        self.fuse_id = fuse_id
        self.compare_id = compare_id
        self.sources = list(sources)
        self.inputs = dict(inputs or {})
        self.field = field
        self.sent = ""          # answer text that has left
        self.reasoning = ""     # comparison text that has left
        self.cut: str | None = None
        self.attempt_chunks = 0  # answer chunks received in the fusor's current attempt (about one token each)
        self._attempt: str | None = None
        self._raw = ""
        self._checked = 0
        self._stopped: str | None = None

    @property
    def live(self) -> bool:
        return self._emit is not None

    @property
    def committed(self) -> bool:
        """Part of the answer has been sent: it cannot be retried any more."""
        return bool(self.sent)

    def cancel(self, reason: str) -> None:
        """Stop at the next chunk (the client left, or the deadline passed); safe from any task."""
        self._stopped = self._stopped or reason

    @property
    def stopped(self) -> str | None:
        return self._stopped

    def check(self) -> None:
        """Raise :class:`StopAnswer` once the request is cancelled."""
        if self._stopped:
            raise StopAnswer(self._stopped)

    async def send(self, chunk: Any) -> None:
        """One chunk of an LM call of the aggregation (called by DSPy, on the event loop)."""
        self.check()
        if not self.live:
            return
        predict_id = getattr(chunk, "predict_id", None)
        delta = _delta(chunk)
        text = delta.get("content") or ""
        if predict_id is not None and predict_id == self.compare_id:
            piece = text if self.reasoning else text.lstrip()
            if piece:
                self.reasoning += piece
                await self._emit("reasoning", piece)
            return
        if predict_id is None or predict_id != self.fuse_id:
            return  # a rater's or another helper call: not the answer
        attempt = getattr(chunk, "id", None)
        if attempt != self._attempt:
            if self._attempt is not None and self.committed:  # the Fusor is retrying an answer already sent
                self.cut = self.cut or "the fused answer failed the Fusor's check after part of it was sent"
                raise StopAnswer(self.cut, cut=True)
            self._attempt, self._raw, self._checked, self.attempt_chunks = attempt, "", 0, 0
        self.attempt_chunks += 1
        self._raw += text
        await self._release()

    async def _release(self) -> None:
        clean = fusor_clean(self._raw.strip())
        limit = _safe_end(clean)
        if limit <= len(self.sent) or (self.sent and limit - self._checked < _CHECK_EVERY):
            return
        # drift is judged on the whole answer (by the Fusor, at its end): a prefix has not drawn on the drafts yet
        problem = unusable_answer({self.field: clean}, self.sources, self.inputs, min_copied=0)
        self._checked = limit
        if problem:
            if not self.committed:
                raise AttemptRejected(problem)
            self.cut = problem
            raise StopAnswer(problem, cut=True)
        if not clean.startswith(self.sent):  # a clean-up reached back into sent text: wait for the final answer
            return
        piece = clean[len(self.sent):limit]
        self.sent = clean[:limit]
        await self._emit("content", piece)

    async def finish(self, outputs: dict[str, Any], fusion: Fusion | None) -> str:
        """Send what the answer still lacks; returns the answer as the client has it.

        ``outputs`` is the aggregation's answer. After a fusor answer, the held-back tail follows;
        a fallback candidate (nothing of the fusor's was sent) goes in one piece.
        """
        answer = str(outputs.get(self.field) or "")
        if not self.live or self.cut:
            return answer if not self.cut else self.sent
        if answer.startswith(self.sent):
            if answer[len(self.sent):]:
                await self._emit("content", answer[len(self.sent):])
            self.sent = answer
            return answer
        logger.warning("the streamed answer is not a prefix of the fused answer; the stream ends with what was sent")
        self.cut = "the fused answer differs from the part already sent"
        return self.sent


def _delta(chunk: Any) -> dict[str, Any]:
    try:
        choice = chunk.choices[0]
        delta = choice["delta"] if isinstance(choice, dict) else choice.delta
        return dict(delta) if delta else {}
    except (AttributeError, IndexError, KeyError, TypeError):
        return {}


def _safe_end(clean: str) -> int:
    """How much of the answer so far may leave: all but the held-back tail, and nothing from an unclosed tag on."""
    end = len(clean) - HOLDBACK
    start = clean.rfind("<", max(0, end - 200))
    if start != -1 and _OPEN_TAG.match(clean[start:]):
        end = min(end, start)
    while end > 0 and clean[end - 1] in " \t":  # the Fusor's tag clean-up eats spaces before a tag
        end -= 1
    return max(end, 0)
