"""Fusion-of-N: a fusor LM compares the candidates and writes one new answer.

The fusor sees the task's own instruction, its inputs and the candidates, shuffled with a seed,
numbered, and fenced in ``<candidate>`` tags so that instructions written inside a candidate are
data, not orders. For text tasks the prompt is plain (the fused answer is the completion itself,
with the same token budget the candidates had); structured outputs are asked for as JSON with a
comparison field first. An answer that ends in a decoding loop keeps what it said before the loop
when that is an answer (``cut``). An unusable output (framing, a loop, drift away from the drafts)
is retried once with the drafts rotated and a fresh sample, then the fusor falls back to a
candidate, saying why in ``fallback``.
"""

from __future__ import annotations

import logging
import re
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

import dspy

from fusion_dspy.errors import AggregationError, ConfigurationError, EndpointError, first_line, is_endpoint_failure
from fusion_dspy.llm_text import fence, render_fields
from fusion_dspy.lm.endpoints import lm_name
from fusion_dspy.lm.parsing import CHARS_PER_TOKEN, SchemaAdapter, field_char_limits
from fusion_dspy.lm.token_count import chars_per_token
from fusion_dspy.plain_adapter import PlainAdapter, render_outputs, suits_plain, task_instruction
from fusion_dspy.signatures import (
    CANDIDATES_FIELD,
    COMPARISON_FIELD,
    comparison_signature,
    fusion_signature,
    plain_fusion_signature,
)
from fusion_dspy.substance import (
    DEGENERATE_REPETITION,
    MIN_COPIED_SHARE,
    copied_share,
    framing_found,
    loop_start,
    repeated_sentences,
    repetition,
)
from fusion_dspy.types import Candidate, CandidateSet, Fusion, Usage

logger = logging.getLogger(__name__)

ContextPolicy = Literal["trim", "drop_longest"]
# a fused answer to a long-form text task (one output field, drafts of LONG_FORM_CHARS or more) that takes less
# of its text from the drafts than the substance check's floor is no fusion of them: "I'm ready to help! Just
# type your code ...", instructions of its own ("Your answer must contain exactly 3 paragraphs ..."), seen on
# the embedded model; the paper finds most fused text comes from the samples, so a capable fusor rarely nears it
DRIFT_FLOOR = MIN_COPIED_SHARE
LONG_FORM_CHARS = 200
# what is left of a looping answer after its loop is cut must be at least this share of the drafts' median length
_CUT_KEEPS = 0.5
_PROMPT_OVERHEAD_TOKENS = 600  # the instruction, DSPy's field framing and the chat template
# the 3-characters-per-token estimate undercounts repetitive text (seen: 4,115 real tokens for a prompt
# estimated to fit 4,096 on SmolLM2), so the candidates get at most 90% of what is left
_CONTEXT_HEADROOM = 0.1


def shuffled_order(cset: CandidateSet, seed: int) -> list[int]:
    """The shown order of the successful candidates: a shuffle seeded by ``seed`` and the inputs."""
    order = [c.index for c in cset.ok]
    cset.rng(seed).shuffle(order)
    return order


def format_candidates(candidates: list[Candidate], output_fields: tuple[str, ...], *, fenced: bool = True) -> str:
    """Number the candidates in the given order; fenced as data unless ``fenced`` is False."""
    return _number([render_fields(c.outputs, output_fields) for c in candidates], fenced=fenced)


def _number(texts: list[str], *, fenced: bool) -> str:
    blocks = []
    for position, text in enumerate(texts, 1):
        if fenced:
            blocks.append(fence(text, "candidate", attrs=f'id="{position}"'))
        else:
            blocks.append(f"Candidate {position}:\n{text}")
    return "\n\n".join(blocks)


def retry_temperature(temperature: float | None) -> float:
    """A retried fusion's temperature: the fusor's, at least 0.3 (a fresh sample, not the same greedy answer)."""
    return max(0.3, temperature or 0.0)


@dataclass(frozen=True)
class FusionRequest:
    """One candidate set made ready for the fusor (:meth:`Fusor.request`); JSON round trip by :meth:`to_dict` / :meth:`from_dict`.

    Attributes:
        task_inputs: the task's inputs (the guard and the output language read them).
        output_fields: the task's output fields.
        shown: the candidates in the order shown, trimmed when they had to fit the context.
        fuse_inputs: the fusion signature's inputs: the task's inputs and the numbered candidates.
        language: the output language asked for by the caller (None: the fusor's, or the task's).
        max_tokens: the call's completion budget (at least what the candidates used).
        temperature: the fusor LM's temperature (the first attempt's).
        trimmed: how the candidates were shortened to fit the context, if they were.
        overflow: why nothing fits the context (then there is no call, and the fusion falls back).
    """

    task_inputs: dict[str, Any]
    output_fields: tuple[str, ...]
    shown: tuple[Candidate, ...]
    fuse_inputs: dict[str, Any]
    language: str | None
    max_tokens: int
    temperature: float | None
    trimmed: dict[str, Any] | None
    overflow: str | None

    @property
    def order(self) -> tuple[int, ...]:
        """``Candidate.index`` of the shown candidates, in the shown order."""
        return tuple(c.index for c in self.shown)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in ("task_inputs", "fuse_inputs", "language", "max_tokens", "temperature", "trimmed",
                                                  "overflow")},
                "output_fields": list(self.output_fields), "shown": [c.to_dict() for c in self.shown]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FusionRequest:
        shown = CandidateSet.from_dict({"inputs": {}, "output_fields": [], "candidates": d["shown"]}).candidates
        return cls(dict(d["task_inputs"]), tuple(d["output_fields"]), shown, dict(d["fuse_inputs"]), d["language"],
                   int(d["max_tokens"]), d["temperature"], d["trimmed"], d["overflow"])


FusorFormat = Literal["auto", "plain", "structured"]


class FusedText(NamedTuple):
    """A fusor completion read as the fused answer (:meth:`Fusor.parse`)."""

    outputs: dict[str, Any]
    raw: str | None  # the completion, when it was read leniently or cut
    cut: str | None  # what was cut from a looping answer


class Fusor(dspy.Module):
    """Fuses a :class:`CandidateSet` into one answer with the task's output fields.

    Args:
        task_signature: the wrapped program's signature (inputs and outputs of the task).
        lm: the fusor LM (default: ``dspy.settings.lm`` at call time).
        instruction: replaces the default fusion instruction (the paper's elements).
        seed: seeds the shuffling of the candidates.
        fenced: enclose candidates in ``<candidate>`` tags (defence against prompt injection).
        format: ``plain`` (the task's instruction and inputs as natural messages, the completion is
            the fused answer; the default for text and scalar outputs), ``structured`` (JSON with a
            comparison field, for structured outputs), or ``auto`` (plain when the outputs allow it).
        compare: with plain prompts, first ask for a comparison of the candidates (a separate call),
            then fuse with it in view (the paper's compare -> fuse). Structured prompts always compare.
        language: the language the answer must be in, when the task does not say (e.g. ``German``).
        use_schema: structured prompts only: constrained JSON decoding.
        retries: fresh attempts after an unusable output, before falling back. A retry shows the
            drafts rotated (another draft first), at a temperature of at least 0.3.
        min_copied_share: on long-form text tasks (one output field, drafts of 200+ characters), a
            fused answer taking less of its text from the drafts than this has drifted from them and
            is retried (0 turns the check off; lower it for a fusor that rewrites in its own words).
        context_window: the fusor's context in tokens (default: the LM's endpoint's, if known);
            when the candidates do not fit, ``context_policy`` applies before the call.
        context_policy: ``trim`` every candidate to an equal share, or ``drop_longest`` first.

    The fused answer's token budget is never below what the candidates used: the call's
    ``max_tokens`` is raised to the longest candidate's completion (plus the comparison's share in
    structured prompts). An answer cut by ``max_tokens`` is recorded as ``truncated``. An answer that
    ends in a loop keeps what it said before the loop when that is an answer (recorded in ``cut``),
    instead of a retry.
    """

    def __init__(
        self,
        task_signature: type[dspy.Signature],
        *,
        lm: Any = None,
        instruction: str | None = None,
        seed: int = 0,
        fenced: bool = True,
        format: FusorFormat = "auto",
        compare: bool = False,
        language: str | None = None,
        use_schema: bool = True,
        retries: int = 1,
        min_copied_share: float = DRIFT_FLOOR,
        context_window: int | None = None,
        context_policy: ContextPolicy = "trim",
    ):
        super().__init__()
        if context_policy not in ("trim", "drop_longest"):
            raise ConfigurationError(f"context_policy must be 'trim' or 'drop_longest', got {context_policy!r}")
        if format not in ("auto", "plain", "structured"):
            raise ConfigurationError(f"format must be 'auto', 'plain' or 'structured', got {format!r}")
        if format == "plain" and not suits_plain(task_signature):
            raise ConfigurationError(
                f"format='plain' needs text or scalar output fields; {task_signature.__name__} has "
                f"{', '.join(f'{n}: {i.annotation}' for n, i in task_signature.output_fields.items())}"
            )
        self.task_signature = task_signature
        self.plain = format == "plain" or (format == "auto" and suits_plain(task_signature))
        if self.plain:
            self.fuse = dspy.Predict(plain_fusion_signature(task_signature, instruction, with_comparison=compare))
            self.compare = dspy.Predict(comparison_signature(task_signature)) if compare else None
        else:
            self.fuse = dspy.Predict(fusion_signature(task_signature, instruction))
            self.compare = None
        self.lm = lm
        self.seed = seed
        self.fenced = fenced
        self.language = language
        self.use_schema = use_schema
        self.retries = retries
        self.min_copied_share = min_copied_share
        self.context_window = context_window
        self.context_policy = context_policy

    @property
    def instruction(self) -> str:
        return self.fuse.signature.instructions

    @property
    def format(self) -> str:
        return "plain" if self.plain else "structured"

    def forward(  # type: ignore[override]
        self, candidates: CandidateSet, fallback_scores: dict[int, float | None] | None = None, language: str | None = None
    ) -> Fusion:
        """Fuse ``candidates``; ``fallback_scores`` (e.g. Best-of-N's) pick the fallback candidate.

        ``language`` (a name or code) overrides the fusor's default output language for this call.
        The steps are the public pieces an engine running the fusor elsewhere uses too:
        :meth:`request`, then the call(s), :meth:`accept` of each answer, :meth:`fused` or :meth:`fall_back`.
        """
        lm = self.lm or dspy.settings.lm
        request = self.request(candidates, language, lm=lm)
        if request.overflow is not None:  # nothing can be sent that fits: no request, a recorded fallback
            return self.fall_back(request, fallback_scores)
        signature = self.signature_for(request)

        started = time.perf_counter()
        error = None
        raw = None
        comparison = ""
        with dspy.track_usage() as tracker:
            calls = 0
            for attempt in range(1 + self.retries):
                # a private copy per attempt: its history (finish reason, raw text) is this call's alone
                attempt_lm = lm.copy(max_tokens=request.max_tokens) if attempt == 0 else lm.copy(
                    rollout_id=attempt, max_tokens=request.max_tokens, temperature=retry_temperature(lm.kwargs.get("temperature")))
                shown = self.attempt_request(request, attempt)
                try:
                    extra: dict[str, Any] = {}
                    if self.compare is not None:
                        if not comparison:  # compared once; a retry of the fusion reuses it
                            calls += 1
                            task = {k: v for k, v in shown.fuse_inputs.items() if k != CANDIDATES_FIELD}
                            comparison = self._compare(attempt_lm, task, shown.fuse_inputs[CANDIDATES_FIELD])
                        extra[COMPARISON_FIELD] = comparison
                    adapter = self._adapter(request.max_tokens)
                    calls += 1
                    with dspy.context(lm=attempt_lm, adapter=adapter):
                        pred = self.fuse(**shown.fuse_inputs, **extra, signature=signature)
                    outputs, cut = self.accept(shown, {f: pred.get(f) for f in request.output_fields})
                    if cut or getattr(adapter, "last_parse", "adapter") == "lenient":
                        raw = _last_text(attempt_lm)
                    if not self.plain:
                        comparison = str(pred.get(COMPARISON_FIELD) or "")
                    truncated = _finish_reason(attempt_lm) == "length"
                    usage = Usage.from_lm_usage(tracker.get_total_tokens(), seconds=time.perf_counter() - started, calls=calls)
                    return self.fused(shown, outputs, usage, raw=raw, truncated=truncated, comparison=comparison, cut=cut)
                except Exception as exc:  # noqa: BLE001 - bad fusor output: retry, then fall back
                    error = first_line(exc)
                    if is_endpoint_failure(exc):  # a dead server is not bad output: never hide it behind a fallback
                        raise EndpointError(f"fusor {lm_name(lm)} failed: {error}", endpoint=lm_name(lm),
                                            api_base=getattr(lm, "kwargs", {}).get("api_base")) from exc
                    raw = _last_text(attempt_lm) or raw
                    logger.info("fusion attempt %d failed: %s", attempt + 1, error)
            usage = Usage.from_lm_usage(tracker.get_total_tokens(), seconds=time.perf_counter() - started, calls=calls)
        return self.fall_back(request, fallback_scores, error=error, attempts=1 + self.retries, usage=usage, raw=raw,
                              comparison=comparison)

    # -- the pieces of one fusion, shared by forward and by engines that run the fusor call elsewhere --

    def request(self, candidates: CandidateSet, language: str | None = None, *, lm: Any = None) -> FusionRequest:
        """What the fusor is shown for ``candidates``: the shuffled (and, to fit the context, trimmed) candidates,
        the fusion signature's inputs and the call's budget; :attr:`FusionRequest.overflow` says when nothing fits.

        ``lm`` (default: the fusor's, else ``dspy.settings.lm``) gives the budget, the context window and the
        first attempt's temperature; no call is made (its server may be asked to count tokens, as in ``forward``).
        """
        lm = lm or self.lm or dspy.settings.lm
        if lm is None:
            raise ConfigurationError("no fusor LM: pass fusor=... or dspy.configure(lm=...)")
        ok = {c.index: c for c in candidates.ok}
        if not ok:
            raise AggregationError("no successful candidate to fuse")
        order = shuffled_order(candidates, self.seed)
        shown = [ok[i] for i in order]
        max_tokens = self._budget(lm, shown)
        temperature = (getattr(lm, "kwargs", {}) or {}).get("temperature")
        common = {"task_inputs": dict(candidates.inputs), "output_fields": tuple(candidates.output_fields), "language": language,
                  "max_tokens": max_tokens, "temperature": temperature}
        try:
            shown, trimmed = self._fit_context(candidates, shown, lm, max_tokens)
        except AggregationError as exc:
            return FusionRequest(shown=tuple(shown), fuse_inputs={}, trimmed=None, overflow=str(exc), **common)
        text = self._candidates_text(shown, candidates.output_fields)
        inputs = {k: v for k, v in candidates.inputs.items() if k in self.fuse.signature.input_fields}
        return FusionRequest(shown=tuple(shown), fuse_inputs={**inputs, CANDIDATES_FIELD: text}, trimmed=trimmed, overflow=None,
                             **common)

    def attempt_request(self, request: FusionRequest, attempt: int) -> FusionRequest:
        """Attempt ``attempt``'s request: a retry shows the drafts rotated by ``attempt`` places, so that
        another draft comes first (the first-shown draft steers a small fusor most) and the retry is a
        different answer, not the same greedy one. With ``compare``, the order stays: the retry reuses
        the comparison, which names the drafts by their numbers."""
        if attempt == 0 or request.overflow is not None or len(request.shown) < 2 or self.compare is not None:
            return request
        k = attempt % len(request.shown)
        shown = request.shown[k:] + request.shown[:k]
        text = self._candidates_text(list(shown), request.output_fields)
        return replace(request, shown=shown, fuse_inputs={**request.fuse_inputs, CANDIDATES_FIELD: text})

    def signature_for(self, request: FusionRequest) -> type[dspy.Signature]:
        """The fusion call's signature: the fusion instruction, the task's own, the output language."""
        return self._call_signature(request.task_inputs, request.language)

    def messages(self, request: FusionRequest) -> list[dict[str, Any]]:
        """The chat messages of the fusion call, as the fusor's adapter formats them for ``forward``'s call.

        Plain prompts without a comparison step only (one call whose completion is the answer): a
        structured prompt's JSON schema and ``compare``'s second call need more than messages.
        """
        if not self.plain or self.compare is not None:
            raise ConfigurationError(
                "only a plain fusor without compare (format='plain' or 'auto' on text outputs, compare=False) can be given "
                "as messages to an engine; this one is " + ("structured" if not self.plain else "plain with compare=True")
            )
        if request.overflow is not None:
            raise AggregationError(f"no fusor call for this candidate set: {request.overflow}")
        return self._adapter(request.max_tokens).format(self.signature_for(request), self.fuse.demos, dict(request.fuse_inputs))

    def sampling_params(self, request: FusionRequest, attempt: int = 0, *, seed: int | None = None) -> dict[str, Any]:
        """The sampling parameters of attempt ``attempt``: the fusor's temperature, a retry's at least 0.3, as ``forward``'s."""
        temperature = request.temperature if attempt == 0 else retry_temperature(request.temperature)
        params: dict[str, Any] = {"max_tokens": request.max_tokens}
        if temperature is not None:
            params["temperature"] = temperature
        if seed is not None:
            params["seed"] = seed
        return params

    def parse(self, request: FusionRequest, text: str | None) -> FusedText:
        """A completion of :meth:`messages` as the fused answer; ``raw`` is the text when read leniently or cut.

        Raises (ValueError, dspy's AdapterParseError) when the answer is unreadable or unusable (:meth:`accept`).
        """
        adapter = self._adapter(request.max_tokens)
        values = adapter.parse(self.signature_for(request), text) if text else {}
        outputs, cut = self.accept(request, values)
        return FusedText(outputs, text if cut or getattr(adapter, "last_parse", "adapter") == "lenient" else None, cut)

    def accept(self, request: FusionRequest, values: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The parsed fields as the fused answer and what was cut from it, or ValueError saying why it is no answer.

        Copied ``<candidate>`` tags are dropped. An answer that ends in a loop is kept up to the loop
        when that part is an answer of at least half the drafts' median length (``cut`` says what was
        removed); otherwise it is unusable, as one with framing or drifted away from the drafts is.
        """
        outputs = {f: _unfence(values.get(f)) for f in request.output_fields}
        if all(v in (None, "") for v in outputs.values()):
            raise ValueError("the fusor returned empty output fields")
        shown = list(request.shown)
        problem = unusable_answer(outputs, shown, request.task_inputs, min_copied=self.min_copied_share)
        if problem is None:
            return outputs, None
        heads = {f: cut_loop(v) if isinstance(v, str) else None for f, v in outputs.items()}
        if any(heads.values()):
            kept = {f: heads[f] or v for f, v in outputs.items()}
            drafts = statistics.median(len(render_fields(c.outputs)) for c in shown)
            long_enough = len(render_fields(kept)) >= _CUT_KEEPS * drafts
            if long_enough and unusable_answer(kept, shown, request.task_inputs, min_copied=self.min_copied_share) is None:
                cut = "; ".join(f"{f}: {len(outputs[f]) - len(h)} of {len(outputs[f])} characters cut where it began to loop"
                                for f, h in heads.items() if h)
                logger.info("fused answer kept up to its loop (%s)", cut)
                return kept, cut
        raise ValueError(problem)

    def fused(self, request: FusionRequest, outputs: dict[str, Any], usage: Usage, *, raw: str | None = None,
              truncated: bool = False, comparison: str = "", cut: str | None = None) -> Fusion:
        """The :class:`Fusion` of an accepted answer (``request``: the attempt's, whose order was shown)."""
        if truncated:
            logger.info("fused answer hit max_tokens=%d (recorded as truncated)", request.max_tokens)
        return Fusion(outputs, comparison, request.order, usage, None, raw, request.trimmed, truncated, request.max_tokens, cut)

    def fall_back(self, request: FusionRequest, fallback_scores: dict[int, float | None] | None = None, *,
                  error: str | None = None, attempts: int | None = None, usage: Usage | None = None, raw: str | None = None,
                  comparison: str = "") -> Fusion:
        """A candidate instead of a fused answer, with the reason: the context overflowed, or ``attempts`` answers were unusable."""
        chosen, how = _fallback_candidate(list(request.shown), fallback_scores)
        if request.overflow is not None:
            reason = f"context overflow, no fusor call ({request.overflow}); returned the {how} candidate"
            logger.warning(reason)
            overflow = {"policy": self.context_policy, "overflow": request.overflow}
            return Fusion(dict(chosen.outputs), "", request.order, Usage(), reason, None, overflow)
        reason = f"fusor output unusable after {attempts or 1 + self.retries} attempts ({error}); returned the {how} candidate"
        logger.warning(reason)
        return Fusion(dict(chosen.outputs), comparison, request.order, usage or Usage(), reason, raw, request.trimmed, False,
                      request.max_tokens)

    def _adapter(self, max_tokens: int) -> Any:
        if self.plain:  # a missing "Answer:" line is read as candidates are (the whole text is the answer)
            return PlainAdapter(lenient=True)
        # only the comparison is bounded, by its share of this call's budget; the task's fields run free
        limits = field_char_limits(self.fuse.signature, max_tokens, short_fields={COMPARISON_FIELD: 0.3})
        return SchemaAdapter({COMPARISON_FIELD: limits[COMPARISON_FIELD]}, optional=(COMPARISON_FIELD, "reasoning"), use_schema=self.use_schema)

    def _compare(self, lm: Any, inputs: dict[str, Any], text: str) -> str:
        with dspy.context(lm=lm, adapter=PlainAdapter()):
            pred = self.compare(**inputs, **{CANDIDATES_FIELD: text})
        return str(pred.get(COMPARISON_FIELD) or "").strip()

    def _call_signature(self, inputs: dict[str, Any], language: str | None) -> type[dspy.Signature]:
        """The fusion signature with the task's own instruction and the output language appended.

        The paper's prompt carries the task's instruction and the language; a user's or optimizer's
        instruction replaces only the fusion part, so the task's own always reaches the fusor.
        """
        parts = [self.fuse.signature.instructions]
        own = task_instruction(self.task_signature)
        if own:
            parts.append(f"The task's own instructions, which your answer must follow: {own}")
        lang = language or self.language or _target_language(inputs)
        if lang:
            parts.append(f"Write the answer in {describe_language(lang)}.")
        return self.fuse.signature.with_instructions("\n\n".join(parts))

    def _candidates_text(self, shown: list[Candidate], output_fields: tuple[str, ...]) -> str:
        if not self.plain:
            return format_candidates(shown, output_fields, fenced=self.fenced)
        # the candidates as the fused answer must be written (plain text, ``Answer:`` lines), so the
        # fusor sees in the drafts the very format it has to produce
        rendered = [render_outputs(self.task_signature, c.outputs) for c in shown]
        return _number(rendered, fenced=self.fenced)

    def _budget(self, lm: Any, shown: list[Candidate]) -> int:
        """``max_tokens`` for the fusor call: the LM's, raised to what the longest candidate used."""
        own = _max_tokens(lm)
        longest = max((c.usage.completion_tokens for c in shown), default=0)
        if not longest:  # no usage reported: estimate from the text
            longest = max((_estimate_tokens(render_fields(c.outputs)) for c in shown), default=0)
        need = int(longest * 1.1) + 16
        if not self.plain:
            need = int(need / 0.7)  # the comparison's 30% share comes on top of the answer
        window = self.context_window or getattr(lm, "fd_context_window", None)
        if window:  # candidates that crowd the window get trimmed; the answer gets no more than one's share
            need = min(need, window // (len(shown) + 1))
        return max(own, need)

    def _fit_context(self, cset: CandidateSet, shown: list[Candidate], lm: Any, max_tokens: int):
        """Apply the context policy when the candidates cannot fit the fusor's context window."""
        window = self.context_window or getattr(lm, "fd_context_window", None)
        if not window:
            return shown, None
        # characters per token measured by the fusor's own server on these candidates (3.0 where it cannot say)
        cpt = chars_per_token(lm, "\n".join(render_fields(c.outputs, cset.output_fields) for c in shown), CHARS_PER_TOKEN)

        def _tokens(text: str) -> int:
            return int(len(text) / cpt) + 1

        fixed = _PROMPT_OVERHEAD_TOKENS + _tokens(render_fields(cset.inputs)) + _tokens(self.instruction) + max_tokens
        budget = int((window - fixed) * (1 - _CONTEXT_HEADROOM))
        sizes = [_tokens(render_fields(c.outputs, cset.output_fields)) + 12 for c in shown]
        before = sum(sizes)
        if before <= budget:
            return shown, None
        if budget < 32:
            raise AggregationError(f"the fusor's context window ({window} tokens) cannot hold the task and max_tokens={max_tokens}")
        dropped: list[int] = []
        kept = list(shown)
        if self.context_policy == "drop_longest":
            while len(kept) > 1 and sum(_tokens(render_fields(c.outputs, cset.output_fields)) + 12 for c in kept) > budget:
                longest = max(kept, key=lambda c: len(render_fields(c.outputs, cset.output_fields)))
                kept.remove(longest)
                dropped.append(longest.index)
        per = max(16, budget // len(kept) - 12)
        out = []
        for c in kept:
            outputs = dict(c.outputs)
            total_chars = sum(len(str(v)) for v in outputs.values() if isinstance(v, str))
            limit_chars = int(per * cpt) - 12  # room for the " [...]" marks
            if total_chars > limit_chars:
                ratio = limit_chars / total_chars
                outputs = {k: (v[: int(len(v) * ratio)] + " [...]" if isinstance(v, str) else v) for k, v in outputs.items()}
            out.append(Candidate(c.index, c.model, c.sample, outputs, c.usage, c.error, c.raw, c.parse))
        after = sum(_tokens(render_fields(c.outputs, cset.output_fields)) + 12 for c in out)
        while after > budget and len(out) > 1:  # the 16-token floor per candidate can still overflow: drop the last shown
            gone = out.pop()
            dropped.append(gone.index)
            after -= _tokens(render_fields(gone.outputs, cset.output_fields)) + 12
        if after > budget:
            raise AggregationError(f"even one trimmed candidate ({after} tokens) does not fit the fusor's context "
                                   f"window ({window} tokens, {budget} left after the task and max_tokens={max_tokens})")
        info = {"policy": self.context_policy, "window": window, "budget_tokens": budget, "tokens_before": before,
                "tokens_after": after, "dropped": dropped, "chars_per_token": round(cpt, 3)}
        logger.info("candidates trimmed to fit the fusor's context: %s", info)
        return out, info


def unusable_answer(outputs: dict[str, Any], shown: list[Candidate], inputs: dict[str, Any], *,
                    min_copied: float = DRIFT_FLOOR) -> str | None:
    """Why a parsed fused answer is still no answer, or None: prompt framing, a decoding loop, or drift.

    Only what the fusor added counts: framing that a candidate or the task's inputs already contain
    (a task about "Candidate 2") and loops that the candidates share are the material, not a fault.
    On a long-form text task (one output field, drafts' median of :data:`LONG_FORM_CHARS` or more), an
    answer taking under ``min_copied`` of its text from the drafts has drifted from them (0: no such
    check). Reasoning + answer tasks are left alone: a fusor may well redo the working in its own words.
    A fused answer that fails is retried (with a fresh sample), then replaced by a candidate.
    """
    text = "\n".join(str(v) for v in outputs.values() if isinstance(v, str))
    drafts = [render_fields(c.outputs) for c in shown]
    seen = {kind for source in [*drafts, render_fields(inputs)] for kind in framing_found(source)}
    added = [kind for kind in framing_found(text) if kind not in seen]
    if added:
        return f"the fused answer repeats the prompt's framing ({', '.join(added)})"
    loop, said = repetition(text), repeated_sentences(text)
    if (loop > DEGENERATE_REPETITION or said) and not any(
        repetition(t) > DEGENERATE_REPETITION or repeated_sentences(t) for t in drafts
    ):
        how = f"{loop:.0%} of its word 4-grams repeat" if loop > DEGENERATE_REPETITION else f"{said} sentence(s) said three times or more"
        return f"the fused answer loops ({how}) where no candidate does"
    if min_copied > 0 and len(outputs) == 1 and drafts and statistics.median(len(d) for d in drafts) >= LONG_FORM_CHARS:
        share = copied_share(text, drafts)
        if share < min_copied:
            return f"the fused answer drifted from the drafts (only {share:.0%} of it taken from them, under {min_copied:.0%})"
    return None


def cut_loop(text: str) -> str | None:
    """``text`` without the loop it ends in, cut at the last line or sentence end before the loop; None if no tail loops."""
    start = loop_start(text)
    if start is None:
        return None
    head = text[:start]
    ends = [m.end() for m in _SENTENCE_END.finditer(head)]
    if ends and ends[-1] >= len(head) // 2:  # a clean end, unless that throws away most of what came before the loop
        head = head[: ends[-1]]
    head = _DANGLING_MARK.sub("", head.rstrip()).rstrip()
    return head or None


_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f](?=\s)|\n")
_DANGLING_MARK = re.compile(r"(?:^|\n)[ \t]*(?:\d{1,3}[.)]|[-*\u2022])?[ \t]*$")


def _estimate_tokens(text: str) -> int:
    """A conservative token estimate, where no count is known."""
    return int(len(text) / CHARS_PER_TOKEN) + 1


def _fallback_candidate(shown: list[Candidate], scores: dict[int, float | None] | None) -> tuple[Candidate, str]:
    if scores:
        scored = [(s, c.index, c) for c in shown if (s := scores.get(c.index)) is not None]
        if scored:
            best = max(s for s, _, _ in scored)
            return min((i, c) for s, i, c in scored if s == best)[1], "best-scored"
    return min(shown, key=lambda c: c.index), "first"


# also the mangled "<candid id=...>"; the spaces after a tag go with it, those before stay ("a <candidate> b" -> "a b")
_FENCE_TAG = re.compile(r"<\s*/?\s*candid\w*\b[^>]*>[ \t]*\n?", re.I)


def _unfence(value: Any) -> Any:
    """Drop the ``<candidate>`` tags a fusor copied along with a draft: they are our framing, not its answer."""
    if not isinstance(value, str) or "candid" not in value.lower():
        return value
    return _FENCE_TAG.sub("", value).strip()


def _max_tokens(lm: Any) -> int:
    return int((getattr(lm, "kwargs", {}) or {}).get("max_tokens") or 1024)


def _target_language(inputs: dict[str, Any]) -> str | None:
    """The output language a task states in its inputs (WMT's ``target_language``), if any."""
    for key in ("target_language", "output_language", "language"):
        value = inputs.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def describe_language(language: str) -> str:
    """``German`` stays; a bare code becomes ``the language with code 'de'`` (no lookup tables needed)."""
    lang = language.strip()
    return f"the language with code {lang!r}" if _LANGUAGE_CODE.match(lang) else lang


_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")


def _finish_reason(lm: Any) -> str | None:
    try:
        response = lm.history[-1]["response"]
        choice = response.choices[0]
        return choice.get("finish_reason") if isinstance(choice, dict) else getattr(choice, "finish_reason", None)
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def _last_text(lm: Any) -> str | None:
    try:
        outputs = lm.history[-1]["outputs"]
        first = outputs[0]
        return first.get("text") if isinstance(first, dict) else first
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
