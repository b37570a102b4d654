"""GeoFactX: geography factual questions in any language, scored by fuzzy answer match.

Data: JSONL rows with ``question``, ``answer_list`` (accepted answers), ``language`` (a name such as
``english`` or ``hindi``, or a code) and optionally ``corrected_answer_list``, ``reasoning``,
``topic``, ``region``, ``answer_type``. The language name becomes a code (``hindi`` -> ``hi``);
a name the tables do not know is kept (lower-cased), so results still split by it.

Gold answers: ``corrected_answer_list`` when the row has a non-empty one, else ``answer_list``. In the
released data ``answer_list`` still holds the invalid options the corrected list removed (e.g. the
Hindi and Thai words for "who"), which a lenient fuzzy match would otherwise accept.

Reasoning (the paper scores it with an LLM beside answer accuracy): ``make_task(judge_reasoning=True)``
(``eval --judge-reasoning``) adds the metric ``reasoning``: a
:class:`~fusion_dspy.judge.ReasoningJudge` grades each answer's reasoning 1-5 against the accepted
answers and the row's reference reasoning, reported as ``(grade - 1) / 4`` in 0..1 (none when the
judge gives no readable grade). The judge is ``judge_lm``, else ``dspy.settings.lm`` (``eval --judge``).
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Any

import dspy

from fusion_dspy.data import BadRows, read_jsonl
from fusion_dspy.errors import DataError
from fusion_dspy.judge import ReasoningJudge
from fusion_dspy.task import Task

from ._io import Collector, data_files
from ._languages import code_for_name

__all__ = [
    "DEFAULT_THRESHOLD",
    "TASK",
    "AnswerGeoQuestion",
    "load",
    "make_reasoning_metric",
    "make_task",
    "match_score",
    "metric",
    "normalize",
    "normalize_text",
]

DEFAULT_THRESHOLD = 85.0
_REQUIRED = {"question": str, "answer_list": list, "language": str}


class AnswerGeoQuestion(dspy.Signature):
    """Answer the geography question. Reason briefly, in a few short steps, then give the answer
    itself (a name, place, date or number) in the language of the question, without explanation."""

    question: str = dspy.InputField()
    reasoning: str = dspy.OutputField(desc="a few short reasoning steps")
    answer: str = dspy.OutputField(desc="the short answer only")


def program() -> dspy.Module:
    return dspy.Predict(AnswerGeoQuestion)


# --------------------------------------------------------------------------------------------------
# matching


def normalize_text(text: Any) -> str:
    """NFKC, case-folded, punctuation and symbols replaced by spaces, whitespace collapsed."""
    s = unicodedata.normalize("NFKC", str(text)).casefold()
    s = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in s)
    return " ".join(s.split())


def _variants(gold: str) -> list[str]:
    """A gold answer and, for ``X (Y)``, both X and Y (native name with a romanisation or acronym)."""
    out = [gold]
    match = re.fullmatch(r"\s*(.+?)\s*[(（]([^()（）]+)[)）]\s*", gold)
    if match:
        out += [match.group(1), match.group(2)]
    return out


def match_score(predicted: str, golds: list[str]) -> float:
    """Best fuzzy similarity (0..100) of a predicted answer with any gold answer.

    On normalised text, with rapidfuzz: for an answer at least as long as the gold, ``token_set_ratio``
    (word order and extra words do not matter) and ``partial_ratio`` (the
    gold inside the answer, also for scripts written without spaces); for a shorter answer,
    ``token_set_ratio`` if it is at least 40% of the gold's length, else plain ``ratio`` (so "WHO" or
    "Institution" do not match "Woods Hole Oceanographic Institution"). A gold of at most 4 characters
    (a year, an acronym) must appear whole. ``X (Y)`` golds also match X or Y.
    """
    from rapidfuzz import fuzz

    pred = normalize_text(predicted)
    if not pred:
        return 0.0
    best = 0.0
    for gold in golds:
        for variant in _variants(str(gold)):
            g = normalize_text(variant)
            if not g:
                continue
            if g == pred:
                return 100.0
            if len(g) <= 4:
                # short golds (years, acronyms): fuzzy ratios are meaningless ("WHO" ~ "WHOI"); require
                # the gold whole, not touching other Latin letters or digits ("1945年" has "1945")
                score = 100.0 if re.search(rf"(?<![a-z0-9]){re.escape(g)}(?![a-z0-9])", pred) else 0.0
            elif len(pred) >= len(g):
                # the gold inside a longer answer: word subsets, or a substring for unspaced scripts
                score = fuzz.token_set_ratio(pred, g)
                if len(g) >= 5:
                    score = max(score, fuzz.partial_ratio(g, pred))
            elif 5 * len(pred) >= 2 * len(g):
                score = fuzz.token_set_ratio(pred, g)  # a shorter form of the name ("Woods Hole")
            else:
                score = fuzz.ratio(pred, g)  # much shorter than the gold: must resemble all of it
            best = max(best, score)
    return best


def _answer(prediction: Any) -> str:
    if prediction is None:
        return ""
    if isinstance(prediction, str):
        return prediction
    value = prediction.get("answer") if isinstance(prediction, dict) else getattr(prediction, "answer", None)
    return "" if value is None else str(value)


def make_metric(threshold: float = DEFAULT_THRESHOLD):
    """Answer correctness: 1.0 if the fuzzy match with a gold answer reaches ``threshold`` (0..100)."""

    def metric(example: Any, prediction: Any, trace: Any = None) -> float:
        return float(match_score(_answer(prediction), list(example.answers)) >= threshold)

    return metric


metric = make_metric()


def make_reasoning_metric(judge_lm: Any = None):
    """The reasoning grade in 0..1 (None when the judge gives no readable grade): the prediction's
    ``reasoning`` and ``answer`` judged against the example's accepted answers and reference reasoning."""
    judge = ReasoningJudge(lm=judge_lm)

    def reasoning(example: Any, prediction: Any, trace: Any = None) -> float | None:
        text = prediction.get("reasoning") if isinstance(prediction, dict) else getattr(prediction, "reasoning", None)
        return judge(question=example.question, accepted_answers=list(example.answers), reasoning=str(text or ""),
                     answer=_answer(prediction), reference_reasoning=example.get("gold_reasoning")).score

    reasoning.judge = judge  # type: ignore[attr-defined]
    return reasoning


def normalize(answer: Any) -> str | None:
    """The key majority vote counts: the normalised answer text (None if empty)."""
    text = normalize_text(_answer(answer))
    return text or None


# --------------------------------------------------------------------------------------------------
# loading


def load(
    path: str | os.PathLike[str],
    *,
    limit: int | None = None,
    skip_bad_rows: bool = False,
    bad_rows: BadRows | None = None,
) -> list[dspy.Example]:
    """Read GeoFactX JSONL into examples with input ``question``; labels ``answers`` (gold list).

    Args:
        path: a ``.jsonl`` file, or a folder whose ``.jsonl`` files are all read (sorted).
        limit: at most this many examples per language.
        skip_bad_rows: count malformed rows in ``bad_rows`` and go on instead of raising DataError.
    """
    files = data_files(path, (".jsonl",))
    out = Collector(limit=limit, skip_bad_rows=skip_bad_rows, bad_rows=bad_rows)
    for file in files:
        try:
            for lineno, row in read_jsonl(file, required=_REQUIRED, skip_bad_rows=skip_bad_rows, bad_rows=out.bad_rows):
                try:
                    example = _example(file, lineno, row)
                except DataError as err:
                    out.bad(err)
                    continue
                if not out.full(example.language):
                    out.add(example, path=file, line=lineno)
        except DataError as err:  # a whole-file problem (empty, not UTF-8)
            out.bad(err)
    return out.finish(files)


def _strings(row: dict[str, Any], name: str, file: Path, lineno: int) -> list[str]:
    value = row.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise DataError(f"field {name!r} should be a list of strings", path=str(file), line=lineno)
    return [str(v) for v in value if str(v).strip()]


def _example(file: Path, lineno: int, row: dict[str, Any]) -> dspy.Example:
    if not row["question"].strip():
        raise DataError("empty question", path=str(file), line=lineno)
    answers = _strings(row, "answer_list", file, lineno)
    corrected = _strings(row, "corrected_answer_list", file, lineno)
    golds = corrected or answers
    if not golds:
        raise DataError("no answers in 'answer_list'", path=str(file), line=lineno)
    language = code_for_name(row["language"])
    if not language:
        raise DataError("empty 'language'", path=str(file), line=lineno)
    return dspy.Example(
        id=f"{file.stem}:{lineno}",
        language=language,
        language_name=row["language"],
        question=row["question"],
        answers=golds,
        answer=golds[0],
        answer_list=answers,
        topic=row.get("topic"),
        region=row.get("region"),
        answer_type=row.get("answer_type"),
        gold_reasoning=row.get("reasoning"),
    ).with_inputs("question")


def make_task(threshold: float = DEFAULT_THRESHOLD, judge_reasoning: bool = False, judge_lm: Any = None) -> Task:
    """The GeoFactX task: answer correctness by fuzzy match at ``threshold`` (0..100), and with
    ``judge_reasoning`` the reasoning graded by an LLM judge (``judge_lm``, else ``dspy.settings.lm``)."""
    options: dict[str, Any] = {}
    if threshold != DEFAULT_THRESHOLD:
        options["threshold"] = threshold
    if judge_reasoning:
        options["judge_reasoning"] = True
    return Task(
        name="geofactx",
        load=load,
        program=program,
        metric=make_metric(threshold),
        answer_field="answer",
        normalize=normalize,
        has_gold=True,
        description="GeoFactX geography QA; answer correctness by fuzzy match (rapidfuzz)"
        + ("; reasoning graded 1-5 by an LLM judge" if judge_reasoning else ""),
        extras={"threshold": threshold},
        extra_metrics={"reasoning": make_reasoning_metric(judge_lm)} if judge_reasoning else {},
        metric_label="answer accuracy",
        make=make_task,
        options=options,
    )


TASK = make_task()
