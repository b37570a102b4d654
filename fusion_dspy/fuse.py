"""Fusion-of-N: a fusor LM compares the candidates and writes one new answer.

The fusor sees the task's inputs and the candidates, shuffled with a seed, numbered, and fenced in
``<candidate>`` tags so that instructions written inside a candidate are data, not orders. It
answers with a comparison, then the task's own output fields. Small models break output formats,
so the call asks for JSON matching a schema with bounded field lengths, parses leniently, retries
once with a fresh sample, and otherwise falls back to a candidate, saying why in ``fallback``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from typing import Any, Literal

import dspy

from fusion_dspy.endpoints import lm_name
from fusion_dspy.errors import AggregationError, ConfigurationError, EndpointError, is_endpoint_failure
from fusion_dspy.llm_text import fence, render_fields
from fusion_dspy.parsing import CHARS_PER_TOKEN, SchemaAdapter, field_char_limits
from fusion_dspy.signatures import CANDIDATES_FIELD, COMPARISON_FIELD, fusion_signature
from fusion_dspy.types import Candidate, CandidateSet, Fusion, Usage

logger = logging.getLogger(__name__)

ContextPolicy = Literal["trim", "drop_longest"]
_PROMPT_OVERHEAD_TOKENS = 600  # the instruction, DSPy's field framing and the chat template
# the 3-characters-per-token estimate undercounts repetitive text (seen: 4,115 real tokens for a prompt
# estimated to fit 4,096 on SmolLM2), so the candidates get at most 90% of what is left
_CONTEXT_HEADROOM = 0.1


def shuffled_order(cset: CandidateSet, seed: int) -> list[int]:
    """The shown order of the successful candidates: a shuffle seeded by ``seed`` and the inputs."""
    key = hashlib.sha256(f"{seed}|{sorted(cset.inputs.items())!r}".encode()).hexdigest()
    order = [c.index for c in cset.ok]
    random.Random(key).shuffle(order)
    return order


def format_candidates(candidates: list[Candidate], output_fields: tuple[str, ...], *, fenced: bool = True) -> str:
    """Number the candidates in the given order; fenced as data unless ``fenced`` is False."""
    blocks = []
    for position, c in enumerate(candidates, 1):
        text = render_fields(c.outputs, output_fields)
        if fenced:
            blocks.append(fence(text, "candidate", attrs=f'id="{position}"'))
        else:
            blocks.append(f"Candidate {position}:\n{text}")
    return "\n\n".join(blocks)


class Fusor(dspy.Module):
    """Fuses a :class:`CandidateSet` into one answer with the task's output fields.

    Args:
        task_signature: the wrapped program's signature (inputs and outputs of the task).
        lm: the fusor LM (default: ``dspy.settings.lm`` at call time).
        instruction: replaces the default fusion instruction (the paper's elements).
        seed: seeds the shuffling of the candidates.
        fenced: enclose candidates in ``<candidate>`` tags (defence against prompt injection).
        use_schema: constrained JSON decoding with bounded field lengths.
        retries: fresh attempts after an unparseable output, before falling back.
        context_window: the fusor's context in tokens (default: the LM's endpoint's, if known);
            when the candidates do not fit, ``context_policy`` applies before the call.
        context_policy: ``trim`` every candidate to an equal share, or ``drop_longest`` first.
    """

    def __init__(
        self,
        task_signature: type[dspy.Signature],
        *,
        lm: Any = None,
        instruction: str | None = None,
        seed: int = 0,
        fenced: bool = True,
        use_schema: bool = True,
        retries: int = 1,
        context_window: int | None = None,
        context_policy: ContextPolicy = "trim",
    ):
        super().__init__()
        if context_policy not in ("trim", "drop_longest"):
            raise ConfigurationError(f"context_policy must be 'trim' or 'drop_longest', got {context_policy!r}")
        self.task_signature = task_signature
        self.fuse = dspy.Predict(fusion_signature(task_signature, instruction))
        self.lm = lm
        self.seed = seed
        self.fenced = fenced
        self.use_schema = use_schema
        self.retries = retries
        self.context_window = context_window
        self.context_policy = context_policy

    @property
    def instruction(self) -> str:
        return self.fuse.signature.instructions

    def forward(self, candidates: CandidateSet, fallback_scores: dict[int, float | None] | None = None) -> Fusion:  # type: ignore[override]
        """Fuse ``candidates``; ``fallback_scores`` (e.g. Best-of-N's) pick the fallback candidate."""
        lm = self.lm or dspy.settings.lm
        if lm is None:
            raise ConfigurationError("no fusor LM: pass fusor=... or dspy.configure(lm=...)")
        ok = {c.index: c for c in candidates.ok}
        if not ok:
            raise AggregationError("no successful candidate to fuse")
        order = shuffled_order(candidates, self.seed)
        shown = [ok[i] for i in order]
        max_tokens = (getattr(lm, "kwargs", {}) or {}).get("max_tokens") or 1024
        try:
            shown, trimmed = self._fit_context(candidates, shown, lm, max_tokens)
        except AggregationError as exc:  # nothing can be sent that fits: no request, a recorded fallback
            chosen, how = _fallback_candidate(shown, fallback_scores)
            reason = f"context overflow, no fusor call ({exc}); returned the {how} candidate"
            logger.warning(reason)
            return Fusion(dict(chosen.outputs), "", tuple(c.index for c in shown), Usage(), reason, None, {"policy": self.context_policy, "overflow": str(exc)})
        text = format_candidates(shown, candidates.output_fields, fenced=self.fenced)
        inputs = {k: v for k, v in candidates.inputs.items() if k in self.fuse.signature.input_fields}
        limits = field_char_limits(self.fuse.signature, max_tokens, short_fields={COMPARISON_FIELD: 0.3})

        started = time.perf_counter()
        error = None
        raw = None
        with dspy.track_usage() as tracker:
            for attempt in range(1 + self.retries):
                adapter = SchemaAdapter(limits, optional=(COMPARISON_FIELD, "reasoning"), use_schema=self.use_schema)
                attempt_lm = lm if attempt == 0 else lm.copy(rollout_id=attempt, temperature=max(0.3, lm.kwargs.get("temperature") or 0.0))
                try:
                    with dspy.context(lm=attempt_lm, adapter=adapter):
                        pred = self.fuse(**inputs, **{CANDIDATES_FIELD: text})
                    outputs = {f: pred.get(f) for f in candidates.output_fields}
                    if all(v in (None, "") for v in outputs.values()):
                        raise ValueError("the fusor returned empty output fields")
                    if adapter.last_parse == "lenient":
                        raw = _last_text(attempt_lm)
                    usage = Usage.from_lm_usage(tracker.get_total_tokens(), seconds=time.perf_counter() - started, calls=attempt + 1)
                    return Fusion(outputs, str(pred.get(COMPARISON_FIELD) or ""), tuple(c.index for c in shown), usage, None, raw, trimmed)
                except Exception as exc:  # noqa: BLE001 - bad fusor output: retry, then fall back
                    error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]
                    if is_endpoint_failure(exc):  # a dead server is not bad output: never hide it behind a fallback
                        raise EndpointError(f"fusor {lm_name(lm)} failed: {error}", endpoint=lm_name(lm),
                                            api_base=getattr(lm, "kwargs", {}).get("api_base")) from exc  # fmt: skip
                    raw = _last_text(attempt_lm) or raw
                    logger.info("fusion attempt %d failed: %s", attempt + 1, error)
            usage = Usage.from_lm_usage(tracker.get_total_tokens(), seconds=time.perf_counter() - started, calls=1 + self.retries)
        chosen, how = _fallback_candidate(shown, fallback_scores)
        reason = f"fusor output unusable after {1 + self.retries} attempts ({error}); returned the {how} candidate"
        logger.warning(reason)
        return Fusion(dict(chosen.outputs), "", tuple(c.index for c in shown), usage, reason, raw, trimmed)

    def _fit_context(self, cset: CandidateSet, shown: list[Candidate], lm: Any, max_tokens: int):
        """Apply the context policy when the candidates cannot fit the fusor's context window."""
        window = self.context_window or getattr(lm, "fd_context_window", None)
        if not window:
            return shown, None
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
            limit_chars = int(per * CHARS_PER_TOKEN) - 12  # room for the " [...]" marks
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
                                   f"window ({window} tokens, {budget} left after the task and max_tokens={max_tokens})")  # fmt: skip
        info = {"policy": self.context_policy, "window": window, "budget_tokens": budget, "tokens_before": before, "tokens_after": after, "dropped": dropped}
        logger.info("candidates trimmed to fit the fusor's context: %s", info)
        return out, info


def _tokens(text: str) -> int:
    """A conservative token estimate (no tokenizer download needed)."""
    return int(len(text) / CHARS_PER_TOKEN) + 1


def _fallback_candidate(shown: list[Candidate], scores: dict[int, float | None] | None) -> tuple[Candidate, str]:
    if scores:
        scored = [(s, c.index, c) for c in shown if (s := scores.get(c.index)) is not None]
        if scored:
            best = max(s for s, _, _ in scored)
            return min((i, c) for s, i, c in scored if s == best)[1], "best-scored"
    return min(shown, key=lambda c: c.index), "first"


def _last_text(lm: Any) -> str | None:
    try:
        outputs = lm.history[-1]["outputs"]
        first = outputs[0]
        return first.get("text") if isinstance(first, dict) else first
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
