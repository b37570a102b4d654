"""Adaptive N: sample in rounds and stop when more samples are unlikely to change the answer.

Rounds of one LM are ``n=k`` requests (``start``, then ``step`` more, up to ``max_n``); each round
has its own ``rollout_id`` (the number of samples drawn before it, plus the caller's offset), so no
round is answered from DSPy's cache with an earlier round's samples. After each round:

- **closed-form answers** (a normaliser is given, as MGSM's): Adaptive-Consistency's Beta rule
  (Aggarwal et al., 2023). With ``v1`` votes for the leading answer and ``v2`` for the runner-up,
  the leader's share ``p1`` against ``p2`` has the posterior ``p1 / (p1 + p2) ~ Beta(v1 + 1, v2 + 1)``
  under a uniform prior; sampling stops when ``P(p1 > p2) = 1 - I_0.5(v1 + 1, v2 + 1)`` reaches
  ``threshold`` (default 0.95: three unanimous votes give 0.9375, four give 0.969);
- **free-form answers**: stop when every pair of answers is a near-duplicate (rapidfuzz's
  ``fuzz.ratio`` >= ``similarity``, 0-100);
- **budget**: ``max_tokens_total`` bounds the tokens (prompt + completion) an example's sampling may
  spend. Before each round its worst case is computed (the prompt, measured after the first round
  and bounded by its UTF-8 bytes before it, once per request, plus ``max_tokens`` per sample) and
  the round shrinks, or per-sample ``max_tokens`` is lowered, until it fits; when nothing fits,
  sampling stops. The aggregation's own call (a fusor, a rater) is outside this budget.

What happened is an :class:`AdaptiveTrace` (rounds, samples, stop reason, tokens spent, tokens a
fixed ``max_n`` would have spent); :func:`replay` applies the same rule to a pool sampled at once,
as ``eval`` does to draw the adaptive curve without sampling twice.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from fusion_dspy.errors import ConfigurationError, SamplingError
from fusion_dspy.sampling import n_limit_of, sample_candidates
from fusion_dspy.types import Candidate, CandidateSet, Usage

logger = logging.getLogger(__name__)

AGREED = "agreed"  # closed form: the Beta rule says the leading answer will not change
NEAR_DUPLICATES = "near_duplicates"  # free form: every pair of answers is a near-duplicate
MAX_N = "max_n"  # no agreement by max_n samples
BUDGET = "budget"  # the next round does not fit max_tokens_total
SAMPLING_FAILED = "sampling_failed"  # a later round failed entirely; the earlier candidates stand
#: stop reasons after which the answer is the agreed one and no aggregation call is needed
AGREEMENT = (AGREED, NEAR_DUPLICATES)
_MIN_COMPLETION = 16  # a round is not drawn with fewer completion tokens per sample than this
_MESSAGE_OVERHEAD = 16  # chat-template tokens per message, on top of its bytes (the first round's bound)

Key = Callable[[Mapping[str, Any]], "str | None"]


def answer_key(field: str | None, normalize: Callable[[Any], str | None]) -> Key:
    """The closed-form rule's key: ``normalize`` of the answer ``field`` (default: the last output field)."""

    def key(outputs: Mapping[str, Any]) -> str | None:
        name = field or (list(outputs)[-1] if outputs else None)
        return normalize(outputs.get(name)) if name else None

    return key


def beta_stop_probability(v1: int, v2: int) -> float:
    """``P(p1 > p2)`` for ``p1 / (p1 + p2) ~ Beta(v1 + 1, v2 + 1)``: Adaptive-Consistency's Beta criterion.

    Exact for integer votes: ``1 - I_0.5(a, b) = sum_{j=b}^{a+b-1} C(a+b-1, j) / 2^(a+b-1)`` with
    ``a = v1 + 1``, ``b = v2 + 1`` (the regularised incomplete Beta function at 1/2).
    """
    if v1 < 0 or v2 < 0:
        raise ValueError(f"votes must be >= 0, got {v1}, {v2}")
    n = v1 + v2 + 1
    return sum(math.comb(n, j) for j in range(v2 + 1, n + 1)) / 2**n


def similarity(a: str, b: str) -> float:
    """rapidfuzz's normalised Indel similarity of two texts, 0-100 (whitespace collapsed)."""
    from rapidfuzz import fuzz

    return float(fuzz.ratio(" ".join(a.split()), " ".join(b.split())))


@dataclass(frozen=True)
class AdaptiveN:
    """Adaptive sampling settings.

    Args:
        start: samples in the first round (>= 1).
        step: samples in each further round (>= 1).
        max_n: at most this many samples (the fixed N it replaces).
        threshold: the Beta rule's stopping probability (closed form), in (0.5, 1).
        similarity: the near-duplicate threshold for free-form answers (rapidfuzz ratio, 0-100).
        max_tokens_total: the sampling token budget of one example (None: no budget).

    Example:
        >>> fd.FusionOfN(qa, fusor=lm, adaptive=fd.AdaptiveN(start=3, step=2, max_n=8))  # doctest: +SKIP
    """

    start: int = 3
    step: int = 2
    max_n: int = 8
    threshold: float = 0.95
    similarity: float = 90.0
    max_tokens_total: int | None = None

    def __post_init__(self) -> None:
        for name in ("start", "step", "max_n"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigurationError(f"adaptive {name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.start > self.max_n:
            raise ConfigurationError(f"adaptive start ({self.start}) exceeds max_n ({self.max_n})")
        if not 0.5 < self.threshold < 1:
            raise ConfigurationError(f"adaptive threshold must be between 0.5 and 1 (exclusive), got {self.threshold}")
        if not 0 < self.similarity <= 100:
            raise ConfigurationError(f"adaptive similarity is a rapidfuzz ratio in (0, 100], got {self.similarity}")
        if self.max_tokens_total is not None and self.max_tokens_total < 1:
            raise ConfigurationError(f"max_tokens_total must be >= 1, got {self.max_tokens_total}")

    def with_max_n(self, max_n: int) -> AdaptiveN:
        """These settings up to ``max_n`` samples (``start`` lowered to fit): one point of an adaptive curve."""
        return replace(self, max_n=max_n, start=min(self.start, max_n))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_spec(cls, spec: str, **defaults: Any) -> AdaptiveN:
        """Settings from ``"on"`` or ``"start=2,step=2,threshold=0.95,similarity=90,max_tokens_total=4000"``.

        Raises:
            ConfigurationError: an unknown name or a value of the wrong kind.
        """
        values: dict[str, Any] = dict(defaults)
        text = (spec or "").strip()
        if text.lower() not in ("", "on", "true", "default"):
            kinds = {"start": int, "step": int, "max_n": int, "threshold": float, "similarity": float, "max_tokens_total": int}
            for part in text.split(","):
                name, sep, value = (x.strip() for x in part.partition("="))
                if not sep or name not in kinds:
                    raise ConfigurationError(f"adaptive settings: {part.strip()!r} is not NAME=VALUE with NAME one of {', '.join(kinds)} "
                                             "(e.g. start=2,step=2,threshold=0.95)")
                try:
                    values[name] = kinds[name](value)
                except ValueError:
                    raise ConfigurationError(f"adaptive settings: {name}={value!r} is not a valid {kinds[name].__name__}") from None
        if "start" not in values and "max_n" in values:  # a small max_n lowers the default start, not the reverse
            values["start"] = min(cls.start, values["max_n"])
        return cls(**values)

    def round_sizes(self) -> list[int]:
        """Samples per round when no rule stops early: ``start``, then ``step`` up to ``max_n``."""
        sizes, drawn = [self.start], self.start
        while drawn < self.max_n:
            sizes.append(min(self.step, self.max_n - drawn))
            drawn += sizes[-1]
        return sizes

    def decide(self, candidates: Sequence[Candidate], field: str, key: Key | None) -> tuple[str | None, dict[str, Any]]:
        """The stop reason for the successful ``candidates`` so far (None: go on) and what it rests on."""
        ok = [c for c in candidates if c.ok]
        if key is not None:
            votes = Counter(k for k in (_safe_key(key, c.outputs) for c in ok) if k is not None)
            top = votes.most_common(2) + [(None, 0), (None, 0)]
            (leader, v1), (_, v2) = top[0], top[1]
            p = beta_stop_probability(v1, v2) if v1 else 0.0
            return (AGREED if v1 and p >= self.threshold else None), {"votes": dict(votes), "leader": leader, "p_leader": round(p, 6)}
        texts = [str(c.outputs.get(field) or "") for c in ok]
        if len(texts) < 2:
            return None, {}
        least = min(similarity(a, b) for i, a in enumerate(texts) for b in texts[i + 1:])
        return (NEAR_DUPLICATES if least >= self.similarity else None), {"min_similarity": round(least, 2)}


@dataclass(frozen=True)
class AdaptiveTrace:
    """What adaptive sampling did for one example.

    Attributes:
        rounds: rounds drawn. samples: samples drawn (failed ones included).
        stop: why it stopped (:data:`AGREED`, :data:`NEAR_DUPLICATES`, :data:`MAX_N`, :data:`BUDGET`,
            :data:`SAMPLING_FAILED`).
        tokens: sampling tokens spent (prompt + completion).
        fixed_tokens: the estimate for one ``n=max_n`` draw: the prompt once per request plus
            ``max_n`` times the mean completion of the samples drawn.
        agreed_index: the candidate that stands for the agreed answer when the stop is an agreement.
        evidence: what the last decision rested on (votes and ``p_leader``, or ``min_similarity``).
        aggregation_skipped: set by the aggregation: no fusor (or scorer) call was made.
    """

    rounds: int
    samples: int
    stop: str
    tokens: int
    fixed_tokens: int
    max_n: int
    agreed_index: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    aggregation_skipped: bool = False

    @property
    def tokens_saved(self) -> int:
        """Sampling tokens saved against fixed ``max_n`` (negative when rounds cost more prompt)."""
        return self.fixed_tokens - self.tokens

    @property
    def agreed(self) -> bool:
        return self.stop in AGREEMENT and self.agreed_index is not None

    def to_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "samples": self.samples, "stop": self.stop, "tokens": self.tokens,
                "fixed_tokens": self.fixed_tokens, "tokens_saved": self.tokens_saved, "max_n": self.max_n,
                "agreed_index": self.agreed_index, "evidence": self.evidence, "aggregation_skipped": self.aggregation_skipped}


def sample_adaptive(
    program: Any,
    inputs: Mapping[str, Any],
    adaptive: AdaptiveN,
    *,
    lm: Any = None,
    key: Key | None = None,
    field: str | None = None,
    temperature: float | None = None,
    rollout_offset: int = 0,
) -> tuple[CandidateSet, AdaptiveTrace]:
    """Sample ``program`` on ``inputs`` in rounds of one LM until ``adaptive``'s rule stops.

    Args:
        key: normalises an answer for the closed-form rule (``key(outputs) -> str | None``); None:
            the free-form near-duplicate rule on ``field`` (default: the last output field).
        rollout_offset: shifts every round's rollout id (fresh samples for the same inputs).

    Raises:
        SamplingError: the first round failed entirely.
        ConfigurationError: ``max_tokens_total`` cannot hold one sample of the first round.
    """
    import dspy

    lm = lm or dspy.settings.lm
    if lm is None:
        raise ConfigurationError("no LM to sample from: pass lm=... or dspy.configure(lm=...)")
    cap = int((getattr(lm, "kwargs", None) or {}).get("max_tokens") or 0) or None
    if adaptive.max_tokens_total is not None and cap is None:
        raise ConfigurationError("max_tokens_total needs the LM's max_tokens (the bound on one sample's completion)")
    from fusion_dspy.sampling import single_predictor

    limit = n_limit_of(lm) if single_predictor(program) is not None else 1  # a whole program: one request per sample
    candidates: list[Candidate] = []
    usage = Usage()
    prompt_per_request = _prompt_bound(program, inputs) if adaptive.max_tokens_total is not None else None
    stop, evidence, rounds = MAX_N, {}, 0
    for k in adaptive.round_sizes():
        round_lm = lm
        limit = limit if limit == 1 else n_limit_of(lm)  # learnt from a refusal in an earlier round
        if adaptive.max_tokens_total is not None:
            k, per_sample = _fit(adaptive.max_tokens_total - usage.total_tokens, k, prompt_per_request or 0, cap or 0, limit)
            if k == 0:
                if not candidates:
                    raise ConfigurationError(f"max_tokens_total={adaptive.max_tokens_total} cannot hold one sample "
                                             f"(prompt up to {prompt_per_request} tokens plus {_MIN_COMPLETION} of completion)")
                stop = BUDGET
                break
            if per_sample < (cap or 0):
                round_lm = lm.copy(max_tokens=per_sample)
        drawn = len(candidates)
        try:
            part = sample_candidates(program, inputs, lm=round_lm, n=k, temperature=temperature, rollout_offset=rollout_offset + drawn)
        except SamplingError:
            if not candidates:
                raise
            logger.warning("adaptive round %d failed entirely; keeping the %d candidates drawn", rounds + 1, drawn)
            stop = SAMPLING_FAILED
            break
        rounds += 1
        usage = usage + part.usage
        if part.usage.calls:
            prompt_per_request = max(prompt_per_request or 0, math.ceil(part.usage.prompt_tokens / part.usage.calls))
        candidates += [Candidate(drawn + c.index, c.model, drawn + c.sample, c.outputs, c.usage, c.error, c.raw, c.parse)
                       for c in part.candidates]
        reason, evidence = adaptive.decide(candidates, field or part.output_fields[-1], key)
        if reason is not None:
            stop = reason
            break
    fields = part.output_fields if rounds else ()
    cset = CandidateSet(dict(inputs), tuple(candidates), fields, usage)
    return cset, _trace(cset, adaptive, rounds, stop, evidence, key, field, limit)


def replay(cset: CandidateSet, adaptive: AdaptiveN, *, key: Key | None = None, field: str | None = None,
           n_limit: int | None = None, max_tokens: int | None = None) -> tuple[CandidateSet, AdaptiveTrace]:
    """The rule applied to a pool sampled at once: the first candidates where it would have stopped.

    Tokens count each candidate's completion and each round's prompt (the pool's prompt tokens per
    request), as :func:`sample_adaptive` would have spent drawing the same samples in rounds.
    A budget (``max_tokens_total``) needs ``max_tokens``, the bound on one sample's completion: a
    round shrinks until its worst case fits, and sampling stops when none does. Unlike live
    sampling, a replayed round never lowers the per-sample ``max_tokens`` (a cut answer cannot be
    recovered from a whole one), so a replayed budget stops no later than a live one.

    Raises:
        ConfigurationError: a budget without ``max_tokens``, or one that cannot hold the first sample.
    """
    if adaptive.max_tokens_total is not None and not max_tokens:
        raise ConfigurationError("replaying max_tokens_total needs max_tokens (the bound on one sample's completion)")
    calls = max(1, cset.usage.calls)
    prompt = math.ceil(cset.usage.prompt_tokens / calls)
    drawn, rounds, stop, evidence, tokens = 0, 0, MAX_N, {}, 0
    out_field = field or cset.output_fields[-1]
    for k in adaptive.round_sizes():
        if drawn >= len(cset.candidates):
            break
        if adaptive.max_tokens_total is not None:
            k = _fit_whole(adaptive.max_tokens_total - tokens, k, prompt, int(max_tokens or 0), n_limit)
            if k == 0:
                if not drawn:
                    raise ConfigurationError(f"max_tokens_total={adaptive.max_tokens_total} cannot hold one sample "
                                             f"({prompt} prompt tokens plus max_tokens={max_tokens})")
                stop = BUDGET
                break
        part = cset.candidates[drawn: drawn + k]
        drawn += len(part)
        rounds += 1
        tokens += prompt * _requests(len(part), n_limit) + sum(c.usage.completion_tokens for c in part)
        reason, evidence = adaptive.decide(cset.candidates[:drawn], out_field, key)
        if reason is not None:
            stop = reason
            break
    used = cset.first(drawn)
    used = CandidateSet(used.inputs, used.candidates, used.output_fields,
                        Usage(tokens - sum(c.usage.completion_tokens for c in used.candidates),
                              sum(c.usage.completion_tokens for c in used.candidates), used.usage.seconds, rounds))
    return used, _trace(used, adaptive, rounds, stop, evidence, key, field, n_limit)


def _trace(cset: CandidateSet, adaptive: AdaptiveN, rounds: int, stop: str, evidence: dict[str, Any],
           key: Key | None, field: str | None, n_limit: int | None) -> AdaptiveTrace:
    ok = cset.ok
    prompt = math.ceil(cset.usage.prompt_tokens / max(1, cset.usage.calls))
    mean_completion = sum(c.usage.completion_tokens for c in ok) / len(ok) if ok else 0.0
    fixed = prompt * _requests(adaptive.max_n, n_limit) + round(adaptive.max_n * mean_completion)
    agreed_index = _representative(cset, key, field or (cset.output_fields[-1] if cset.output_fields else "")) if stop in AGREEMENT else None
    return AdaptiveTrace(rounds, len(cset.candidates), stop, cset.usage.total_tokens, fixed, adaptive.max_n, agreed_index, evidence)


def _representative(cset: CandidateSet, key: Key | None, field: str) -> int | None:
    """The candidate that stands for an agreement: the leader's first vote, or the most central near-duplicate."""
    ok = cset.ok
    if not ok:
        return None
    if key is not None:
        votes = Counter(k for k in (_safe_key(key, c.outputs) for c in ok) if k is not None)
        if not votes:
            return None
        leader = votes.most_common(1)[0][0]
        return next(c.index for c in ok if _safe_key(key, c.outputs) == leader)
    texts = [str(c.outputs.get(field) or "") for c in ok]
    centrality = [sum(similarity(t, u) for u in texts) for t in texts]
    return ok[centrality.index(max(centrality))].index


def _safe_key(key: Key, outputs: Mapping[str, Any]) -> str | None:
    try:
        return key(outputs)
    except Exception:  # noqa: BLE001 - an answer that cannot be normalised does not vote
        return None


def _requests(k: int, n_limit: int | None) -> int:
    return math.ceil(k / n_limit) if n_limit else 1


def _fit(remaining: int, k: int, prompt: int, cap: int, n_limit: int | None) -> tuple[int, int]:
    """The largest round of at most ``k`` samples whose worst case fits ``remaining`` tokens, and its per-sample cap."""
    for size in range(k, 0, -1):
        per_sample = min(cap, (remaining - prompt * _requests(size, n_limit)) // size)
        if per_sample >= min(cap, _MIN_COMPLETION):
            return size, per_sample
    return 0, 0


def _fit_whole(remaining: int, k: int, prompt: int, max_tokens: int, n_limit: int | None) -> int:
    """The largest round of at most ``k`` whole samples (``max_tokens`` each) whose worst case fits ``remaining``."""
    for size in range(k, 0, -1):
        if prompt * _requests(size, n_limit) + size * max_tokens <= remaining:
            return size
    return 0


def _prompt_bound(program: Any, inputs: Mapping[str, Any]) -> int:
    """An upper bound on the first request's prompt tokens: its UTF-8 bytes plus a chat-template allowance per message."""
    from fusion_dspy.sampling import default_adapter, single_predictor

    predictor = single_predictor(program)
    if predictor is None:
        text = "\n".join(f"{k}: {v}" for k, v in inputs.items())
        return len(text.encode()) * 4 + 256  # a whole program's prompt is not known before it runs: a wide bound
    messages = default_adapter().format(predictor.signature, predictor.demos, dict(inputs))
    return sum(len(str(m.get("content", "")).encode()) + _MESSAGE_OVERHEAD for m in messages) + _MESSAGE_OVERHEAD
