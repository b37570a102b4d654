"""Arena-Hard: open-ended prompts in any language, scored by a pairwise LLM judge.

Data (JSONL), either format:
  * Arena-Hard v2.0 / English v0.1: ``uid``, ``category``, ``subcategory`` or ``cluster``, ``prompt``;
  * multilingual v0.1: ``question_id``, ``category`` (``m-arena-hard-de``), ``cluster``, ``turns``
    (a list of ``{"content": ...}``; the first turn is the prompt).
The language comes from ``category`` (``m-arena-hard-XX``), else from the file or folder name
(``th.jsonl``, ``m-arena-hard-th/question.jsonl``, ``de/question.jsonl``), else it is ``en``.

Scoring: the judge compares two responses in BOTH orders (A/B, then B/A) to cancel position bias;
a win counts 1, a tie 0.5, a loss 0, and the two orders are averaged. A verdict that cannot be parsed
counts as a tie for that order (a neutral 0.5) and is logged, so one bad judge output never stops a run.
With reference answers (``references=`` a JSONL of ``{uid|question_id, answer}``), the metric is the
win rate of the prediction against the reference. Without them (the data as shipped), ``eval``
scores every method by its win rate against the greedy answer of the same run (greedy itself scores
0.5), as the paper reports win rates against a baseline; :func:`head_to_head` compares any two.
The judge is ``dspy.settings.lm``, else the pool's rater.

Why one file over 400 lines: a task is one module (its program, metric and loader, as every task in
``programs/``); this task's metric is a pairwise judge with its own signature and verdict parsing,
and its loader reads two data formats.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from fusion_dspy.aggregate import GREEDY
from fusion_dspy.data import BadRows, read_jsonl
from fusion_dspy.errors import ConfigurationError, DataError
from fusion_dspy.lm import SchemaAdapter, field_char_limits
from fusion_dspy.task import Task

from ._io import Collector, data_files
from ._languages import is_language_code

logger = logging.getLogger(__name__)

__all__ = [
    "TASK",
    "ArenaJudge",
    "JudgeVerdict",
    "Respond",
    "head_to_head",
    "language_from_path",
    "load",
    "load_references",
    "make_metric",
    "make_task",
    "pairwise_scores",
    "parse_verdict",
]


class Respond(dspy.Signature):
    """Respond to the user's request as a helpful, accurate and thorough assistant, in the language of
    the request."""

    prompt: str = dspy.InputField(desc="the user's request")
    response: str = dspy.OutputField()


def program() -> dspy.Module:
    return dspy.Predict(Respond)


# --------------------------------------------------------------------------------------------------
# the judge


class JudgeVerdict(dspy.Signature):
    """You are an impartial judge. Compare the two assistant responses to the user's prompt. Judge
    helpfulness, correctness, relevance, completeness, clarity and whether the response is written in
    the language of the prompt. Do not let the order of the responses, their length or the assistants'
    names sway you. Write a short comparison, then your verdict, exactly one of:
    [[A>>B]] (A is much better), [[A>B]] (A is better), [[A=B]] (tie), [[B>A]] (B is better),
    [[B>>A]] (B is much better)."""

    prompt: str = dspy.InputField(desc="the user's prompt")
    response_a: str = dspy.InputField(desc="the response of assistant A")
    response_b: str = dspy.InputField(desc="the response of assistant B")
    comparison: str = dspy.OutputField(desc="a short comparison of the two responses")
    verdict: str = dspy.OutputField(desc="one of [[A>>B]], [[A>B]], [[A=B]], [[B>A]], [[B>>A]]")


# verdict label -> score of response A
_SCORES = {"A>>B": 1.0, "A>B": 1.0, "A=B": 0.5, "B>A": 0.0, "B>>A": 0.0}
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
    if key in _SCORES:
        return key
    return _ALIASES.get(key)


class ArenaJudge(dspy.Module):
    """A pairwise judge around :class:`JudgeVerdict`.

    Args:
        lm: the judge model; ``dspy.settings.lm`` when None.
    """

    def __init__(self, lm: Any = None):
        super().__init__()
        self.lm = lm
        self.judge = dspy.Predict(JudgeVerdict)

    def forward(self, prompt: str, response_a: str, response_b: str) -> dspy.Prediction:
        """One judgement in the order given; ``label`` is None when the verdict cannot be parsed.

        The judge answers in JSON constrained by a schema with bounded field lengths (small local
        judges ramble past ``max_tokens`` otherwise), parsed leniently.
        """
        lm = self.lm or dspy.settings.lm
        max_tokens = (getattr(lm, "kwargs", {}) or {}).get("max_tokens")
        limits = field_char_limits(JudgeVerdict, max_tokens, short_fields={"comparison": 0.75, "verdict": 0.05})
        adapter = SchemaAdapter(limits, optional=("comparison",), enums={"verdict": [f"[[{label}]]" for label in _SCORES]})
        with dspy.context(lm=lm, adapter=adapter):
            out = self.judge(prompt=prompt, response_a=response_a, response_b=response_b)
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
        except (ValueError, AdapterParseError) as exc:  # unparseable judge output
            first_line = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            logger.warning("judge output could not be parsed (%s); counting a tie", first_line)
            return 0.5
        if label is None:
            logger.warning("judge gave no verdict; counting a tie")
            return 0.5
        return _SCORES[label]


def pairwise_scores(
    prompts: Sequence[str], answers_a: Sequence[Any], answers_b: Sequence[Any], judge: ArenaJudge | None = None
) -> list[float]:
    """Per-prompt score of A against B (1 win, 0.5 tie, 0 loss; both orders averaged)."""
    if not (len(prompts) == len(answers_a) == len(answers_b)):
        raise ConfigurationError(f"lengths differ: {len(prompts)} prompts, {len(answers_a)} A answers, {len(answers_b)} B answers")
    judge = judge or ArenaJudge()
    return [judge.judge_pair(p, _response(a), _response(b)) for p, a, b in zip(prompts, answers_a, answers_b, strict=True)]


def head_to_head(
    prompts: Sequence[str], answers_a: Sequence[Any], answers_b: Sequence[Any], judge: ArenaJudge | None = None
) -> float:
    """Win rate of method A over method B (ties count half), judged in both orders per prompt."""
    scores = pairwise_scores(prompts, answers_a, answers_b, judge)
    if not scores:
        raise ConfigurationError("head_to_head needs at least one prompt")
    return sum(scores) / len(scores)


def _field(example: Any, name: str) -> Any:
    return example.get(name) if hasattr(example, "get") else getattr(example, name, None)


def _response(prediction: Any) -> str:
    if prediction is None:
        return ""
    if isinstance(prediction, str):
        return prediction
    value = prediction.get("response") if isinstance(prediction, dict) else getattr(prediction, "response", None)
    return "" if value is None else str(value)


def make_metric(judge_lm: Any = None):
    """The metric: win rate (0..1, ties half) of the prediction against ``example.reference``, or,
    without one, against ``example.baseline`` (the answer of the run's baseline method, greedy: the
    eval harness attaches it). An answer identical to the baseline ties (0.5) without a judge call."""
    judge = ArenaJudge(lm=judge_lm)

    def metric(example: Any, prediction: Any, trace: Any = None) -> float:
        reference = _field(example, "reference")
        if reference is None:
            reference = _field(example, "baseline")
            if reference is not None and _response(prediction).strip() == str(reference).strip():
                return 0.5
        if reference is None:
            raise ConfigurationError(
                f"arena example {example.id!r} has no reference answer: load with references=<answers.jsonl> "
                "(make_task(references=...)), evaluate with greedy among the methods (win rate against greedy), "
                "or compare two methods with fusion_dspy.programs.arena.head_to_head"
            )
        return judge.judge_pair(example.prompt, _response(prediction), str(reference))

    metric.judge = judge  # type: ignore[attr-defined]
    return metric


# --------------------------------------------------------------------------------------------------
# loading

_CATEGORY_LANG = re.compile(r"^m-arena-hard-(.+)$")


def language_from_path(path: str | os.PathLike[str]) -> str | None:
    """A language code found in the file name or folder name (last ``-``/``_`` token), or None.

    ``th.jsonl`` -> th; ``m-arena-hard-de/question.jsonl`` -> de; ``arena-hard-v0.1/question.jsonl`` -> None.
    """
    p = Path(path)
    for name in (p.stem, p.parent.name):
        match = re.search(r"(?:^|[-_.])([a-z]{2,3}[-_](?:[A-Z][a-z]{3}|[A-Z]{2}|\d{3}))$", name)  # pt_BR, sr-Latn
        if match and is_language_code(match.group(1)):
            return match.group(1)
        for candidate in (name, re.split(r"[-_.]", name)[-1]):
            if re.fullmatch(r"[a-z]{2,3}", candidate) and is_language_code(candidate):
                return candidate
    return None


def _prompt(row: dict[str, Any], file: Path, lineno: int) -> str:
    if "prompt" in row and row["prompt"] is not None:
        if not isinstance(row["prompt"], str):
            raise DataError(f"field 'prompt' should be str, got {type(row['prompt']).__name__}", path=str(file), line=lineno)
        return row["prompt"]
    turns = row.get("turns")
    if turns is None:
        raise DataError("missing field 'prompt' (or 'turns')", path=str(file), line=lineno)
    if not isinstance(turns, list) or not turns:
        raise DataError("field 'turns' should be a non-empty list", path=str(file), line=lineno)
    first = turns[0]
    content = first.get("content") if isinstance(first, dict) else first
    if not isinstance(content, str):
        raise DataError("field 'turns' should hold {\"content\": <str>} objects", path=str(file), line=lineno)
    if len(turns) > 1:
        logger.debug("%s:%d: %d turns; only the first is used", file, lineno, len(turns))
    return content


def _uid(row: dict[str, Any], file: Path, lineno: int) -> str:
    for key in ("uid", "question_id"):
        value = row.get(key)
        if value is not None:
            if not isinstance(value, (str, int)):
                raise DataError(f"field {key!r} should be str, got {type(value).__name__}", path=str(file), line=lineno)
            return str(value)
    raise DataError("missing field 'uid' (or 'question_id')", path=str(file), line=lineno)


def load_references(path: str | os.PathLike[str], *, skip_bad_rows: bool = False, bad_rows: BadRows | None = None) -> dict[str, str]:
    """Reference answers by question id from JSONL: ``{uid|question_id, answer}``, or arena-hard-auto
    model answers (``messages[-1].content`` (str or ``{"answer": ...}``) / ``choices[0].turns[0].content``)."""
    refs: dict[str, str] = {}
    for file in data_files(path, (".jsonl",)):
        for lineno, row in read_jsonl(file, skip_bad_rows=skip_bad_rows, bad_rows=bad_rows):
            try:
                uid = _uid(row, file, lineno)
                answer = _reference_text(row)
                if answer is None:
                    raise DataError("no answer: expected 'answer' (str), 'messages' or 'choices'", path=str(file), line=lineno)
            except DataError as err:
                if not skip_bad_rows:
                    raise
                (bad_rows if bad_rows is not None else BadRows()).add(err)
                continue
            refs[uid] = answer
    return refs


def _reference_text(row: dict[str, Any]) -> str | None:
    if isinstance(row.get("answer"), str):
        return row["answer"]
    messages = row.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        content = messages[-1].get("content")
        if isinstance(content, dict):
            content = content.get("answer")
        if isinstance(content, str):
            return content
    choices = row.get("choices")
    try:
        content = choices[0]["turns"][0]["content"]  # type: ignore[index]
    except (TypeError, KeyError, IndexError):
        return None
    return content if isinstance(content, str) else None


def load(
    path: str | os.PathLike[str],
    *,
    limit: int | None = None,
    skip_bad_rows: bool = False,
    bad_rows: BadRows | None = None,
    language: str | None = None,
    references: str | os.PathLike[str] | dict[str, str] | None = None,
) -> list[dspy.Example]:
    """Read Arena-Hard question files into examples with input ``prompt``.

    Args:
        path: a ``.jsonl`` file, or a folder (its ``question.jsonl`` files if any, else all ``.jsonl``).
        limit: at most this many examples per language.
        skip_bad_rows: count malformed rows in ``bad_rows`` and go on instead of raising DataError.
        language: override the language found in rows or the path.
        references: reference answers (a JSONL path or a dict id -> answer) attached as ``reference``.
    """
    files = data_files(path, (".jsonl",), prefer_names=("question.jsonl",))
    refs = load_references(references) if isinstance(references, (str, os.PathLike)) else references
    out = Collector(limit=limit, skip_bad_rows=skip_bad_rows, bad_rows=bad_rows)
    missing_refs = 0
    for file in files:
        path_lang = language_from_path(file)
        try:
            for lineno, row in read_jsonl(file, skip_bad_rows=skip_bad_rows, bad_rows=out.bad_rows):
                try:
                    uid = _uid(row, file, lineno)
                    prompt = _prompt(row, file, lineno)
                except DataError as err:
                    out.bad(err)
                    continue
                category = row.get("category")
                match = _CATEGORY_LANG.match(category) if isinstance(category, str) else None
                lang = language or (match.group(1) if match else None) or path_lang or "en"
                if out.full(lang):
                    continue
                fields: dict[str, Any] = {
                    "id": f"{lang}:{uid}",
                    "uid": uid,
                    "language": lang,
                    "prompt": prompt,
                    "category": category if isinstance(category, str) else None,
                    "subcategory": row.get("subcategory") or row.get("cluster"),
                }
                if refs is not None:
                    if uid in refs:
                        fields["reference"] = refs[uid]
                    else:
                        missing_refs += 1
                out.add(dspy.Example(**fields).with_inputs("prompt"), path=file, line=lineno)
        except DataError as err:  # a whole-file problem (empty, not UTF-8)
            out.bad(err)
    if missing_refs:
        logger.warning("%d arena prompts have no reference answer; the metric cannot score them", missing_refs)
    return out.finish(files)


def make_task(judge_lm: Any = None, references: str | os.PathLike[str] | None = None) -> Task:
    """The arena task; ``judge_lm`` judges (default ``dspy.settings.lm``), ``references`` gives gold answers."""
    loader = functools.partial(load, references=references) if references is not None else load
    judge_metric = make_metric(judge_lm)
    return Task(
        name="arena",
        load=loader,
        program=program,
        metric=judge_metric,
        answer_field="response",
        normalize=None,
        has_gold=references is not None,
        baseline_method=None if references is not None else GREEDY,
        description="Arena-Hard open-ended prompts; pairwise LLM-judge win rate (both orders, ties half)",
        extras={"judge": judge_metric.judge, "head_to_head": head_to_head, "pairwise_scores": pairwise_scores},
    )


TASK = make_task()
