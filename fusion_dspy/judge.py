"""LLM judges that score answers for evaluation: a pairwise judge and a reasoning judge.

- :class:`PairwiseJudge` compares two responses to one prompt (Arena-Hard style), in BOTH orders
  (A/B, then B/A) to cancel position bias; a win counts 1, a tie 0.5, a loss 0, and the two orders
  are averaged. A verdict that cannot be parsed counts as a tie for that order and is logged, so one
  bad judge output never stops a run. The paper's win rates against reference answers (Arena,
  synthetic-data quality) are this score averaged over prompts.
- :class:`ReasoningJudge` grades a reasoning from 1 to 5 against the accepted answers and a
  reference reasoning (GeoFactX); the score is mapped to 0..1 (``(grade - 1) / 4``).

Both ask for JSON constrained by a schema with bounded field lengths (small local judges ramble
past ``max_tokens`` otherwise), parsed leniently; the judge model is ``lm``, else
``dspy.settings.lm`` at call time (``eval`` sets the run's judge there).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from fusion_dspy.errors import ConfigurationError, EndpointError, first_line, is_endpoint_failure
from fusion_dspy.llm_text import fence
from fusion_dspy.lm.endpoints import lm_name
from fusion_dspy.lm.parsing import SchemaAdapter, field_char_limits
from fusion_dspy.signatures import JudgeReasoning, JudgeVerdict

logger = logging.getLogger(__name__)

__all__ = [
    "VERDICT_SCORES",
    "PairwiseJudge",
    "ReasoningJudge",
    "head_to_head",
    "pairwise_scores",
    "parse_verdict",
]

#: verdict label -> score of response A
VERDICT_SCORES = {"A>>B": 1.0, "A>B": 1.0, "A=B": 0.5, "B>A": 0.0, "B>>A": 0.0}
_ALIASES = {
    "A": "A>B", "B": "B>A", "TIE": "A=B", "C": "A=B", "DRAW": "A=B", "EQUAL": "A=B", "A==B": "A=B",
    "A≈B": "A=B", "B=A": "A=B", "A<B": "B>A", "A<<B": "B>>A", "B<A": "A>B", "B<<A": "A>>B",
    "A≫B": "A>>B", "B≫A": "B>>A", "A≪B": "B>>A", "B≪A": "A>>B", "A>=B": "A>B", "B>=A": "B>A",
}


def parse_verdict(text: Any) -> str | None:
    """The verdict label (``A>>B`` ... ``B>>A``) in a judge's output, or None if there is none.

    Lenient: takes the last ``[[...]]`` (``[[A>B]]``, ``[[A]]``, ``[[tie]]``), else a bare label
    (``A>B``, ``B>>A``, ``A=B``) or a lone ``A``/``B``/``tie``.
    """
    if text is None:
        return None
    s = str(text).replace("＞", ">").replace("＝", "=").replace("＜", "<")
    for raw in reversed(re.findall(r"\[\[\s*([^\[\]]{1,20}?)\s*\]\]", s)):
        label = _label(raw)
        if label:
            return label
    bare = re.findall(r"(?<![A-Za-z])([AB]\s*(?:>>|<<|>=|>|<|==|=|≈|≫|≪)\s*[AB])(?![A-Za-z])", s)
    if bare:
        return _label(bare[-1])
    label = _label(s.strip().strip("*.:!\"' "))
    return label or _label_from_words(s)


_WORDS = re.compile(r"\b(?:assistant\s+|response\s+)?([AB])\s+is\s+(much\s+|far\s+|significantly\s+|clearly\s+)?better\b", re.I)
_TIE_WORDS = re.compile(r"\b(tie|equally\s+good|equal(?:ly)?\s+(?:good|bad)|both\s+are\s+(?:equally|the\s+same))\b", re.I)


def _label_from_words(s: str) -> str | None:
    """``A is better``, ``B is much better``, ``tie``: how small judges write a verdict in prose."""
    found = _WORDS.findall(s)
    if found:
        side, much = found[-1]
        side = side.upper()
        return (f"{side}>>{'B' if side == 'A' else 'A'}" if much else f"{side}>{'B' if side == 'A' else 'A'}")
    return "A=B" if _TIE_WORDS.search(s) else None


def _label(raw: str) -> str | None:
    key = re.sub(r"\s+", "", raw).upper()
    if key in VERDICT_SCORES:
        return key
    return _ALIASES.get(key)


def _endpoint_error(role: str, lm: Any, exc: BaseException) -> EndpointError:
    return EndpointError(f"{role} {lm_name(lm)} failed: {first_line(exc)}", endpoint=lm_name(lm),
                         api_base=(getattr(lm, "kwargs", {}) or {}).get("api_base"))


class PairwiseJudge(dspy.Module):
    """A pairwise judge around :class:`~fusion_dspy.signatures.JudgeVerdict`.

    Args:
        lm: the judge model; ``dspy.settings.lm`` when None.
    """

    def __init__(self, lm: Any = None):
        super().__init__()
        self.lm = lm
        self.judge = dspy.Predict(JudgeVerdict)

    def forward(self, prompt: str, response_a: str, response_b: str) -> dspy.Prediction:
        """One judgement in the order given; ``label`` is None when the verdict cannot be parsed."""
        lm = self.lm or dspy.settings.lm
        if lm is None:
            raise ConfigurationError("the pairwise judge has no model: pass lm= or configure dspy.settings.lm (eval: --judge)")
        max_tokens = (getattr(lm, "kwargs", {}) or {}).get("max_tokens")
        limits = field_char_limits(JudgeVerdict, max_tokens, short_fields={"comparison": 0.75, "verdict": 0.05})
        adapter = SchemaAdapter(limits, optional=("comparison",), enums={"verdict": [f"[[{label}]]" for label in VERDICT_SCORES]})
        with dspy.context(lm=lm, adapter=adapter):  # every input is data: fenced, so no text of it can act as an instruction
            out = self.judge(prompt=fence(prompt, "prompt"), response_a=fence(response_a, "response", 'id="A"'),
                             response_b=fence(response_b, "response", 'id="B"'))
        label = parse_verdict(out.verdict)
        if label is None:
            label = parse_verdict(out.comparison) if "[[" in str(out.comparison) else None
        return dspy.Prediction(comparison=out.comparison, verdict=out.verdict, label=label)

    def judge_pair(self, prompt: str, a: str, b: str) -> float:
        """Score of ``a`` against ``b`` in 0..1, judged in both orders and averaged (ties 0.5).

        An order whose verdict cannot be parsed (or whose call fails to parse at all) counts 0.5.
        """
        first = self._score(prompt, a, b)
        second = self._score(prompt, b, a)
        return (first + (1.0 - second)) / 2.0

    def _score(self, prompt: str, a: str, b: str) -> float:
        try:
            label = self(prompt=prompt, response_a=a, response_b=b).label
        except ConfigurationError:
            raise
        except (ValueError, AdapterParseError) as exc:  # unparseable judge output
            logger.warning("judge output could not be parsed (%s); counting a tie", first_line(exc))
            return 0.5
        except Exception as exc:
            if is_endpoint_failure(exc):  # a dead judge is not a tie: the example fails, a rerun retries it
                raise _endpoint_error("judge", self.lm or dspy.settings.lm, exc) from exc
            raise
        if label is None:
            logger.warning("judge gave no verdict; counting a tie")
            return 0.5
        return VERDICT_SCORES[label]


def _response(prediction: Any, field: str = "response") -> str:
    if prediction is None:
        return ""
    if isinstance(prediction, str):
        return prediction
    value = prediction.get(field) if isinstance(prediction, dict) else getattr(prediction, field, None)
    return "" if value is None else str(value)


def pairwise_scores(
    prompts: Sequence[str], answers_a: Sequence[Any], answers_b: Sequence[Any], judge: PairwiseJudge | None = None,
    *, field: str = "response",
) -> list[float]:
    """Per-prompt score of A against B (1 win, 0.5 tie, 0 loss; both orders averaged).

    Answers are strings, or predictions / mappings whose ``field`` holds the answer.
    """
    if not (len(prompts) == len(answers_a) == len(answers_b)):
        raise ConfigurationError(f"lengths differ: {len(prompts)} prompts, {len(answers_a)} A answers, {len(answers_b)} B answers")
    judge = judge or PairwiseJudge()
    return [judge.judge_pair(p, _response(a, field), _response(b, field)) for p, a, b in zip(prompts, answers_a, answers_b, strict=True)]


def head_to_head(
    prompts: Sequence[str], answers_a: Sequence[Any], answers_b: Sequence[Any], judge: PairwiseJudge | None = None,
    *, field: str = "response",
) -> float:
    """Win rate of method A over method B (ties count half), judged in both orders per prompt."""
    scores = pairwise_scores(prompts, answers_a, answers_b, judge, field=field)
    if not scores:
        raise ConfigurationError("head_to_head needs at least one prompt")
    return sum(scores) / len(scores)


class ReasoningJudge(dspy.Module):
    """Grades a reasoning from 1 to 5 (:class:`~fusion_dspy.signatures.JudgeReasoning`); scores in 0..1.

    Args:
        lm: the judge model; ``dspy.settings.lm`` when None.
        retries: extra attempts (a fresh sample) when the grade cannot be read.
    """

    def __init__(self, lm: Any = None, *, retries: int = 1):
        super().__init__()
        self.lm = lm
        self.retries = retries
        self.grade = dspy.Predict(JudgeReasoning)

    def forward(self, question: str, accepted_answers: Sequence[str], reasoning: str, answer: str,
                reference_reasoning: str | None = None) -> dspy.Prediction:
        """``grade`` (1..5, None when unreadable), ``score`` (0..1 or None) and the judge's ``analysis``."""
        lm = self.lm or dspy.settings.lm
        if lm is None:
            raise ConfigurationError("the reasoning judge has no model: pass lm= or configure dspy.settings.lm (eval: --judge)")
        limits = field_char_limits(JudgeReasoning, (getattr(lm, "kwargs", {}) or {}).get("max_tokens"), short_fields={"analysis": 0.8})
        response = fence(f"{str(reasoning or '').strip()}\n\nAnswer: {str(answer or '').strip()}", "response")
        error = "no attempt"
        for attempt in range(1 + self.retries):
            attempt_lm = lm if attempt == 0 else lm.copy(rollout_id=attempt, temperature=max(0.3, (lm.kwargs or {}).get("temperature") or 0.0))
            try:
                with dspy.context(lm=attempt_lm, adapter=SchemaAdapter(limits, optional=("analysis",))):
                    out = self.grade(question=question, accepted_answers="\n".join(map(str, accepted_answers)) or "-",
                                     reference_reasoning=str(reference_reasoning or "").strip() or "-", response=response)
                grade = int(out.score)
                if not 1 <= grade <= 5:
                    raise ValueError(f"grade {grade} outside 1..5")
                return dspy.Prediction(grade=grade, score=(grade - 1) / 4.0, analysis=str(out.analysis or ""))
            except Exception as exc:  # noqa: BLE001 - an unreadable grade: retry, then no score
                if is_endpoint_failure(exc):
                    raise _endpoint_error("reasoning judge", lm, exc) from exc
                error = first_line(exc)
                logger.info("reasoning grade attempt %d failed: %s", attempt + 1, error)
        logger.warning("the reasoning judge gave no readable grade (%s)", error)
        return dspy.Prediction(grade=None, score=None, analysis=error)
