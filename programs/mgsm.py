"""MGSM: grade-school math word problems in any language, scored by the final integer.

Data: TSV files without header, one ``question<TAB>answer`` per line, read with ``csv.QUOTE_NONE``
semantics (a plain tab split: quotes are text). The language comes from the file name:
``mgsm_de.tsv`` and ``de.tsv`` are German; any other name is used whole as the language.

The prompt follows OpenAI simple-evals: reason step by step, then give the final integer on its own
last line after ``Answer:``. Extraction is lenient about what models really write: thousand
separators, currency signs, ``Answer:`` in other languages and scripts, and local digits.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

import dspy

from fusion_dspy.data import BadRows, read_rows
from fusion_dspy.errors import DataError
from fusion_dspy.task import Task

from ._io import Collector, data_files

logger = logging.getLogger(__name__)

__all__ = ["TASK", "MGSMSolve", "extract_integer", "load", "metric", "normalize", "predicted_integer"]


class MGSMSolve(dspy.Signature):
    """Solve the math word problem. Think step by step and show your reasoning, in the language of the
    problem. Then give the final answer as a single integer with no units, on its own last line,
    after "Answer:"."""

    question: str = dspy.InputField(desc="a math word problem")
    reasoning: str = dspy.OutputField(desc="step-by-step solution")
    answer: str = dspy.OutputField(desc='the final answer: one integer only, e.g. "Answer: 42"')


def program() -> dspy.Module:
    return dspy.Predict(MGSMSolve)


# --------------------------------------------------------------------------------------------------
# integer extraction

# "Answer:" in the languages of MGSM and the common languages beyond it; any of them followed by a
# colon marks where the final answer starts. Unknown languages fall back to the last number.
_ANSWER_WORDS = [
    "final answer", "answer", "antwort", "endgültige antwort", "réponse finale", "réponse", "reponse",
    "respuesta final", "respuesta", "resposta", "risposta", "antwoord", "svar", "vastaus", "odpowiedź",
    "odpověď", "odpoveď", "válasz", "răspuns", "отговор", "ответ", "відповідь", "απάντηση", "cevap",
    "yanıt", "jibu", "jawaban", "jawapan", "đáp án", "trả lời", "sagot", "sagot na", "tugon",
    "答え", "解答", "回答", "答案", "答", "정답", "답", "উত্তর", "సమాధానం", "జవాబు", "คำตอบ", "उत्तर",
    "जवाब", "பதில்", "ಉತ್ತರ", "ഉത്തരം", "જવાબ", "ਜਵਾਬ", "جواب", "الإجابة", "الجواب", "پاسخ",
    "תשובה", "መልስ", "amsa", "idahun", "azịza", "impendulo", "karabo",
]
_ANSWER_ALTERNATIVES = "|".join(re.escape(w) for w in sorted(_ANSWER_WORDS, key=len, reverse=True))
_MARKER = re.compile(rf"(?:{_ANSWER_ALTERNATIVES})\s*[*_]*\s*[:：꞉]", re.IGNORECASE)
# thousands grouping (1,234 / 1.234 / 1 234 / 1'234), then a plain number with an optional fraction.
_SEP = ",.\u00a0\u202f\u2009\u2007' ’٬"
_NUMBER = re.compile(
    rf"(?<![A-Za-z\d.,])([-−]?)(\d{{1,3}}(?:[{_SEP}]\d{{3}})+(?!\d)|\d+)(?:[.,٫](\d+))?"
)


def _ascii_digits(text: str) -> str:
    """Replace every Unicode decimal digit (Devanagari, Arabic-Indic, Thai, fullwidth...) by 0-9."""
    out = []
    for ch in text:
        if ch.isdigit() and not ch.isascii() and unicodedata.category(ch) == "Nd":
            out.append(str(unicodedata.decimal(ch)))
        else:
            out.append(ch)
    return "".join(out)


def _to_int(sign: str, whole: str, frac: str | None) -> int | None:
    digits = re.sub(rf"[{_SEP}]", "", whole)
    if frac and frac.strip("0"):
        return None  # a non-integer answer: wrong for an integer task, and not to be rounded
    value = int(digits)
    return -value if sign else value


def extract_integer(text: Any) -> int | None:
    """The final integer of a model's answer, or None when there is none.

    After the last "Answer:"-like marker (in any of many languages) the first number is taken; with no
    marker, the last number in the text. Thousand separators (``1,234``, ``1.234``, ``1 234``),
    currency signs, ``**bold**``, the Unicode minus and local digits (``४२``, ``٤٢``, ``４２``) are
    understood. A number with a non-zero fraction (``2.5``) gives None: the task's answers are integers.

    Example:
        >>> extract_integer("Sie verdient 18 $ am Tag.\\nAntwort: 18")
        18
    """
    if text is None:
        return None
    s = _ascii_digits(unicodedata.normalize("NFKC", str(text)))
    markers = list(_MARKER.finditer(s))
    if markers:
        tail = s[markers[-1].end() :]
        found = _NUMBER.search(tail)
        if found:
            return _to_int(*found.groups())
    numbers = list(_NUMBER.finditer(s))
    if not numbers:
        return None
    return _to_int(*numbers[-1].groups())


def predicted_integer(prediction: Any) -> int | None:
    """The integer of a prediction: from its ``answer`` field, else from the end of its reasoning.

    Accepts a ``dspy.Prediction``, a mapping, or a plain string (e.g. a fused answer).
    """
    if isinstance(prediction, str):
        return extract_integer(prediction)
    get = prediction.get if isinstance(prediction, dict) else lambda k, d=None: getattr(prediction, k, d)
    value = extract_integer(get("answer", None))
    if value is None:
        value = extract_integer(get("reasoning", None))
    return value


def metric(example: Any, prediction: Any, trace: Any = None) -> float:
    """Accuracy: 1.0 if the predicted integer equals the gold answer, else 0.0."""
    value = predicted_integer(prediction)
    return float(value is not None and value == int(example.answer))


def normalize(answer: Any) -> str | None:
    """The key majority vote counts: the extracted integer as a string (None if no integer)."""
    value = predicted_integer(answer)
    return None if value is None else str(value)


# --------------------------------------------------------------------------------------------------
# loading

_GOLD = re.compile(r"[-−]?\d+")


def language_from_filename(path: str | os.PathLike[str]) -> str:
    """``mgsm_de.tsv`` -> ``de``; ``sw.tsv`` -> ``sw``; ``mgsm-zh_TW.tsv`` -> ``zh_TW``; else the stem."""
    stem = Path(path).stem
    rest = re.sub(r"^mgsm[_\-.]?", "", stem, flags=re.IGNORECASE)
    return rest or stem


def _parse_gold(raw: str) -> int:
    text = _ascii_digits(unicodedata.normalize("NFKC", raw)).strip()
    compact = re.sub(r"[,_\s\u00a0\u202f\u2009']", "", text)
    if not _GOLD.fullmatch(compact):
        raise ValueError(f"answer {raw!r} is not an integer")
    return int(compact.replace("−", "-"))


def load(
    path: str | os.PathLike[str],
    *,
    limit: int | None = None,
    skip_bad_rows: bool = False,
    bad_rows: BadRows | None = None,
    language: str | None = None,
) -> list[dspy.Example]:
    """Read MGSM TSV files into examples with inputs ``question``; labels ``answer`` (int).

    Args:
        path: a ``.tsv`` file, or a folder whose ``.tsv`` files are all read (sorted).
        limit: at most this many examples per language.
        skip_bad_rows: count malformed lines in ``bad_rows`` and go on instead of raising DataError.
        language: override the language taken from the file name.
    """
    files = data_files(path, (".tsv",))
    out = Collector(limit=limit, skip_bad_rows=skip_bad_rows, bad_rows=bad_rows)
    for file in files:
        lang = language or language_from_filename(file)
        stem = file.stem

        def parse(lineno: int, line: str, *, _file: Path = file, _lang: str = lang, _stem: str = stem) -> dspy.Example:
            fields = line.lstrip("\ufeff").split("\t")  # a byte-order mark is not part of the question
            if len(fields) != 2:
                raise DataError(f"expected 2 tab-separated fields (question, answer), got {len(fields)}", path=str(_file), line=lineno)
            question, answer = fields[0].strip(), fields[1]
            if not question:
                raise DataError("empty question", path=str(_file), line=lineno)
            gold = _parse_gold(answer)
            return dspy.Example(id=f"{_stem}:{lineno}", language=_lang, question=question, answer=gold, line=lineno).with_inputs("question")

        try:
            for example in read_rows(file, parse, skip_bad_rows=skip_bad_rows, bad_rows=out.bad_rows):
                if out.full(lang):
                    break
                out.add(example, path=file, line=example.line)
        except DataError as err:  # a whole-file problem (empty, not UTF-8)
            out.bad(err)
    return out.finish(files)


TASK = Task(
    name="mgsm",
    load=load,
    program=program,
    metric=metric,
    answer_field="answer",
    normalize=normalize,
    has_gold=True,
    description="MGSM grade-school math (simple-evals prompt), accuracy of the final integer",
)
