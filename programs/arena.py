"""Arena-Hard: open-ended prompts in any language, scored by a pairwise LLM judge.

Data (JSONL), either format:
  * Arena-Hard v2.0 / English v0.1: ``uid``, ``category``, ``subcategory`` or ``cluster``, ``prompt``;
  * multilingual v0.1: ``question_id``, ``category`` (``m-arena-hard-de``), ``cluster``, ``turns``
    (a list of ``{"content": ...}``; the first turn is the prompt).
The language comes from ``category`` (``m-arena-hard-XX``), else from the file or folder name
(``th.jsonl``, ``m-arena-hard-th/question.jsonl``, ``de/question.jsonl``), else it is ``en``.

Scoring (the paper's): a :class:`~fusion_dspy.judge.PairwiseJudge` compares the prediction with a
reference answer in BOTH orders, ties counting half. Reference answers come in Arena-Hard's
``model_answer`` layout (``references=`` a file or folder, :func:`load_references`): one JSONL file
per model, rows ``{uid|question_id, model, messages: [..., {"role": "assistant", "content":
{"answer": ...}}]}`` (v2.0) or ``choices[0].turns[0].content`` (v0.1) or a plain ``answer``, matched
by question id and, for multilingual data, by language (from the folders: ``m-arena-hard-de/
model_answer/gemini.jsonl``). Without references (the data as shipped), ``eval`` scores every method
by its win rate against the greedy answer of the same run (greedy itself scores 0.5);
:func:`~fusion_dspy.judge.head_to_head` compares any two methods. The judge is ``judge_lm``, else
``dspy.settings.lm`` (``eval``: ``--judge``, else the pool's judge or rater).

Why one file over 400 lines: a task is one module (its program, metric and loaders, as every task in
``programs/``); this task reads two question formats and the model-answer layout of references.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dspy

from fusion_dspy.aggregate import GREEDY
from fusion_dspy.data import BadRows, read_jsonl
from fusion_dspy.errors import ConfigurationError, DataError
from fusion_dspy.judge import PairwiseJudge
from fusion_dspy.task import Task

from ._io import Collector, data_files
from ._languages import is_language_code

logger = logging.getLogger(__name__)

__all__ = [
    "TASK",
    "References",
    "Respond",
    "language_from_path",
    "load",
    "load_references",
    "make_metric",
    "make_task",
]


class Respond(dspy.Signature):
    """Respond to the user's request as a helpful, accurate and thorough assistant, in the language of
    the request."""

    prompt: str = dspy.InputField(desc="the user's request")
    response: str = dspy.OutputField()


def program() -> dspy.Module:
    return dspy.Predict(Respond)


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
    judge = PairwiseJudge(lm=judge_lm)

    def metric(example: Any, prediction: Any, trace: Any = None) -> float:
        reference = _field(example, "reference")
        if reference is None:
            reference = _field(example, "baseline")
            if reference is not None and _response(prediction).strip() == str(reference).strip():
                return 0.5
        if reference is None:
            raise ConfigurationError(
                f"arena example {example.id!r} has no reference answer: give references (eval --references FILE|DIR, "
                "make_task(references=...)), evaluate with greedy among the methods (win rate against greedy), "
                "or compare two methods with fusion_dspy.judge.head_to_head"
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


@dataclass(frozen=True)
class References:
    """Reference answers of one model, by (language, question id); language None where the files do not say.

    Attributes:
        answers: ``{(language or None, question id): answer}``.
        model: the model whose answers these are (the rows' ``model``, else the file name).
        source: the file or folder they were read from.
    """

    answers: Mapping[tuple[str | None, str], str]
    model: str
    source: str

    def get(self, language: str | None, uid: str) -> str | None:
        """The reference for a question: the one of its language, else one without a language."""
        found = self.answers.get((language, uid))
        return found if found is not None else self.answers.get((None, uid))

    def __len__(self) -> int:
        return len(self.answers)


def _reference_files(root: Path) -> list[Path]:
    """A file itself; in a folder, the files under ``model_answer`` folders if there are any, else every
    ``.jsonl`` except ``question.jsonl`` (questions stored beside the answers)."""
    if root.is_file():
        return [root]
    files = data_files(root, (".jsonl",))
    in_layout = [f for f in files if "model_answer" in f.relative_to(root).parts[:-1] or root.name == "model_answer"]
    files = in_layout or [f for f in files if f.name != "question.jsonl"]
    if not files:
        raise DataError("no reference answer files (.jsonl other than question.jsonl) in this folder", path=str(root))
    return files


def _reference_language(file: Path, root: Path) -> str | None:
    """The language of a reference file: from its name when given alone, else from the folders between
    the root and the file, or the root's own name (``m-arena-hard-de/model_answer/x.jsonl`` -> de)."""
    if root.is_file():
        return language_from_path(file)
    folder = file.parent
    while True:
        if folder.name != "model_answer":
            lang = language_from_path(Path(folder.name))
            if lang:
                return lang
        if folder == root or folder == folder.parent:
            return None
        folder = folder.parent


def load_references(
    path: str | os.PathLike[str],
    *,
    model: str | None = None,
    skip_bad_rows: bool = False,
    bad_rows: BadRows | None = None,
) -> References:
    """Reference answers from a JSONL file or a folder in Arena-Hard's ``model_answer`` layout.

    Rows: ``{uid|question_id, answer}``, or arena-hard-auto model answers (``messages[-1].content``,
    a string or ``{"answer": ...}``; v0.1 ``choices[0].turns[0].content``), optionally with ``model``
    (else the file name is the model) and ``language``. A folder may hold one language per subfolder.

    Args:
        model: the reference model to use when the files hold answers of several (e.g. ``gemini-2.5-pro``).

    Raises:
        ConfigurationError: several models and none chosen, or the chosen model is absent (the models found are listed).
        DataError: a malformed row (file and line), unless ``skip_bad_rows``.
    """
    root = Path(path)
    if not root.exists():
        raise DataError("reference answers: file or folder does not exist", path=str(root))
    bad_rows = bad_rows if bad_rows is not None else BadRows()
    by_model: dict[str, dict[tuple[str | None, str], str]] = {}
    for file in _reference_files(root):
        file_lang = _reference_language(file, root)
        for lineno, row in read_jsonl(file, skip_bad_rows=skip_bad_rows, bad_rows=bad_rows):
            try:
                uid = _uid(row, file, lineno)
                answer = _reference_text(row)
                if answer is None:
                    raise DataError("no answer: expected 'answer' (str), 'messages' or 'choices'", path=str(file), line=lineno)
            except DataError as err:
                if not skip_bad_rows:
                    raise
                bad_rows.add(err)
                continue
            row_model = str(row.get("model") or file.stem)
            row_lang = row.get("language") if isinstance(row.get("language"), str) else file_lang
            answers = by_model.setdefault(row_model, {})
            if (row_lang, uid) in answers:
                logger.warning("%s:%d: a second %s answer for %s (%s); the first is kept", file, lineno, row_model, uid, row_lang or "-")
                continue
            answers[(row_lang, uid)] = answer
    if not by_model:
        raise DataError("no reference answers", path=str(root))
    if model is None:
        if len(by_model) > 1:
            raise ConfigurationError(
                f"{root} holds answers of {len(by_model)} models ({', '.join(sorted(by_model))}); "
                "choose the reference model (eval --reference-model NAME, make_task(reference_model=...))"
            )
        model = next(iter(by_model))
    elif model not in by_model:
        raise ConfigurationError(f"{root} has no answers of model {model!r}; models found: {', '.join(sorted(by_model))}")
    return References(by_model[model], model, str(root))


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
    references: str | os.PathLike[str] | References | Mapping[str, str] | None = None,
    reference_model: str | None = None,
) -> list[dspy.Example]:
    """Read Arena-Hard question files into examples with input ``prompt``.

    Args:
        path: a ``.jsonl`` file, or a folder (its ``question.jsonl`` files if any, else all ``.jsonl``).
        limit: at most this many examples per language.
        skip_bad_rows: count malformed rows in ``bad_rows`` and go on instead of raising DataError.
        language: override the language found in rows or the path.
        references: reference answers attached as ``reference``: a file or folder (:func:`load_references`),
            :class:`References`, or a dict question id -> answer.
        reference_model: which model's answers, when the references hold several.
    """
    files = data_files(path, (".jsonl",), prefer_names=("question.jsonl",))
    refs = _as_references(references, reference_model)
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
                    reference = refs.get(lang, uid)
                    if reference is not None:
                        fields["reference"] = reference
                    else:
                        missing_refs += 1
                out.add(dspy.Example(**fields).with_inputs("prompt"), path=file, line=lineno)
        except DataError as err:  # a whole-file problem (empty, not UTF-8)
            out.bad(err)
    if missing_refs:
        logger.warning("%d arena prompts have no %s reference answer; the metric cannot score them", missing_refs,
                       refs.model if refs is not None else "")
    return out.finish(files)


def _as_references(references: Any, model: str | None) -> References | None:
    if references is None or isinstance(references, References):
        return references
    if isinstance(references, Mapping):
        return References({(None, str(k)): str(v) for k, v in references.items()}, model or "reference", "dict")
    return load_references(references, model=model)


def make_task(judge_lm: Any = None, references: str | os.PathLike[str] | None = None, reference_model: str | None = None) -> Task:
    """The arena task.

    Args:
        judge_lm: the pairwise judge (default ``dspy.settings.lm``; ``eval`` sets its ``--judge`` there).
        references: reference answers (a file or a ``model_answer`` folder, :func:`load_references`);
            the metric is then the win rate against them. Read here, so a bad file fails before any model call.
        reference_model: which model's answers, when the references hold several.
    """
    refs = load_references(references, model=reference_model) if references is not None else None
    loader = functools.partial(load, references=refs) if refs is not None else load
    judge_metric = make_metric(judge_lm)
    options = {"references": str(references), "reference_model": refs.model} if refs is not None else {}
    return Task(
        name="arena",
        load=loader,
        program=program,
        metric=judge_metric,
        answer_field="response",
        normalize=None,
        has_gold=refs is not None,
        baseline_method=None if refs is not None else GREEDY,
        description="Arena-Hard open-ended prompts; pairwise LLM-judge win rate (both orders, ties half)",
        extras={"judge": judge_metric.judge, "reference_model": refs.model if refs is not None else GREEDY},
        uses_judge=True,
        metric_label=f"win rate vs {refs.model if refs is not None else GREEDY}",
        make=make_task,
        options=options,
    )


TASK = make_task()
