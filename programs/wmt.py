"""WMT24++ translation for any language pair, scored by a chosen metric: chrF++, BLEU or COMET.

Data: JSONL rows with ``lp`` (``en-de_DE``: source language, then target language and country),
``source``, ``target`` and optionally ``domain``, ``document_id``, ``segment_id``, ``is_bad_source``
and ``original_target``. The canary row (``domain == "canary"``, a ``CANARY GUID`` text) and rows
marked ``is_bad_source`` are skipped unless asked for.

Metrics (:data:`METRICS`, per example, higher is better): ``chrf`` (sentence chrF++ in 0..1, the
default), ``bleu`` (sentence BLEU in 0..1, the target's tokenizer) and ``comet`` (a COMET-family
checkpoint such as XCOMET-XL, the paper's metric, in the model's scale; on a GPU when one is present,
``programs/_comet.py``). ``make_task(metric=..., oracle_metric=...)`` chooses the reported metric and,
separately, the one the oracle selects by (``eval --metric``, ``--oracle-metric``), so "fusion beats
the oracle" can be measured against the paper's XCOMET oracle. ``corpus_metrics`` returns sacrebleu's
corpus BLEU and chrF++ in **0..100**, and the mean COMET when a checkpoint is configured.
MetricX is not offered: it ships as a research repository, not as a package.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dspy

from fusion_dspy.data import BadRows, read_jsonl
from fusion_dspy.errors import ConfigurationError, DataError
from fusion_dspy.task import Task

from ._comet import COMET_MODEL_ENV, CometScorer
from ._io import Collector, data_files
from ._languages import country_name, describe_language, language_name, normalize_code, parse_locale

logger = logging.getLogger(__name__)

__all__ = [
    "COMET_MODEL_ENV",
    "METRICS",
    "TASK",
    "Translate",
    "bleu_tokenizer",
    "comet_scores",
    "corpus_metrics",
    "load",
    "make_metric",
    "make_task",
    "metric",
    "parse_lp",
    "sentence_bleu",
    "sentence_chrf",
]

#: the per-example metrics a WMT task can report or select its oracle by
METRICS = ("chrf", "bleu", "comet")
_REQUIRED = {"lp": str, "source": str, "target": str}


class Translate(dspy.Signature):
    """You are a professional translator. Translate the source text from the source language into the
    target language as it is written in the target country. Convey the full meaning and every nuance
    of the original, and follow the grammar, conventions and culture of the target language and
    country. Output only the translation: no notes, explanations, alternatives or quotation marks."""

    source_language: str = dspy.InputField()
    target_language: str = dspy.InputField()
    target_country: str = dspy.InputField()
    source: str = dspy.InputField(desc="the text to translate")
    translation: str = dspy.OutputField(desc="the translation, and nothing else")


def program() -> dspy.Module:
    return dspy.Predict(Translate)


def parse_lp(lp: str) -> dict[str, str]:
    """Prompt fields of a language pair: ``en-de_DE`` -> English, German, Germany.

    The part before the first ``-`` is the source; the rest is the target tag, which may carry a script
    and a country (``en-sr_Latn_RS``, ``en-pt_BR``, ``eng-deu``, ``en-de-DE``). Unknown codes stay as
    they are, so any pair works.

    Returns:
        ``source_language``, ``target_language``, ``target_country`` (names for the prompt) and
        ``target_code`` (the target's ISO 639 code, for tokenizers).
    """
    if "-" not in lp:
        raise ValueError(f"language pair {lp!r} is not of the form SRC-TGT (e.g. en-de_DE)")
    src, tgt = lp.split("-", 1)
    if not src.strip() or not tgt.strip():
        raise ValueError(f"language pair {lp!r} is not of the form SRC-TGT (e.g. en-de_DE)")
    target = parse_locale(tgt)
    return {
        "source_language": describe_language(src),
        "target_language": describe_language(tgt),
        "target_country": country_name(target.region) or f"any country where {language_name(target.language)} is used",
        "target_code": normalize_code(target.language),
    }


def _is_canary(row: dict[str, Any]) -> bool:
    return row.get("domain") == "canary" or str(row.get("source", "")).startswith("CANARY GUID")


def load(
    path: str | os.PathLike[str],
    *,
    limit: int | None = None,
    skip_bad_rows: bool = False,
    bad_rows: BadRows | None = None,
    include_bad_source: bool = False,
    include_canary: bool = False,
) -> list[dspy.Example]:
    """Read WMT24++ JSONL files into examples with inputs (languages, country, ``source``); label ``target``.

    Args:
        path: a ``.jsonl`` file, or a folder whose ``.jsonl`` files are all read (sorted).
        limit: at most this many examples per language pair.
        skip_bad_rows: count malformed rows in ``bad_rows`` and go on instead of raising DataError.
        include_bad_source: keep rows the dataset marks ``is_bad_source`` (skipped by default).
        include_canary: keep the canary row (skipped by default; it is not a translation).
    """
    files = data_files(path, (".jsonl",))
    out = Collector(limit=limit, skip_bad_rows=skip_bad_rows, bad_rows=bad_rows)
    skipped = {"canary": 0, "is_bad_source": 0}
    for file in files:
        try:
            for lineno, row in read_jsonl(file, required=_REQUIRED, skip_bad_rows=skip_bad_rows, bad_rows=out.bad_rows):
                try:
                    example = _example(file, lineno, row)
                except DataError as err:
                    out.bad(err)
                    continue
                if _is_canary(row) and not include_canary:
                    skipped["canary"] += 1
                    continue
                if row.get("is_bad_source") and not include_bad_source and not _is_canary(row):
                    skipped["is_bad_source"] += 1
                    continue
                if not out.full(example.language):
                    out.add(example, path=file, line=lineno)
        except DataError as err:  # a whole-file problem (empty, not UTF-8)
            out.bad(err)
    if any(skipped.values()):
        logger.info("skipped %s", ", ".join(f"{n} {k} rows" for k, n in skipped.items() if n))
    return out.finish(files, skipped=f" (skipped {skipped['canary']} canary, {skipped['is_bad_source']} is_bad_source rows)")


def _example(file: Path, lineno: int, row: dict[str, Any]) -> dspy.Example:
    for name, types in (("is_bad_source", bool), ("segment_id", (int, str)), ("document_id", str), ("domain", str)):
        if row.get(name) is not None and not isinstance(row[name], types):
            raise DataError(f"field {name!r} has the wrong type ({type(row[name]).__name__})", path=str(file), line=lineno)
    try:
        fields = parse_lp(row["lp"])
    except ValueError as exc:
        raise DataError(str(exc), path=str(file), line=lineno) from None
    if not row["source"].strip():
        raise DataError("empty source", path=str(file), line=lineno)
    segment = row.get("segment_id")
    example_id = f"{row['lp']}:{segment}" if segment is not None else f"{file.stem}:{lineno}"
    return dspy.Example(
        id=example_id,
        language=row["lp"],
        source_language=fields["source_language"],
        target_language=fields["target_language"],
        target_country=fields["target_country"],
        target_code=fields["target_code"],
        source=row["source"],
        target=row["target"],
        domain=row.get("domain"),
        document_id=row.get("document_id"),
    ).with_inputs("source_language", "target_language", "target_country", "source")


# --------------------------------------------------------------------------------------------------
# metrics


def _text(prediction: Any) -> str:
    """The translation of a prediction: a ``dspy.Prediction``, a mapping or a plain string."""
    if prediction is None:
        return ""
    if isinstance(prediction, str):
        return prediction.strip()
    value = prediction.get("translation") if isinstance(prediction, dict) else getattr(prediction, "translation", None)
    return "" if value is None else str(value).strip()


@functools.lru_cache(maxsize=1)
def _has_mecab() -> bool:
    return importlib.util.find_spec("MeCab") is not None and importlib.util.find_spec("ipadic") is not None


# Scripts written without spaces between words: BLEU on characters is the usual fallback.
_UNSPACED = {"th", "lo", "km", "my", "bo", "dz"}


def bleu_tokenizer(target_code: str) -> str:
    """sacrebleu tokenizer for a target language: ``zh`` for Chinese, ``ja-mecab`` for Japanese when
    mecab-python3 and ipadic are installed (else ``char``), ``ko-mecab`` likewise (else ``13a``),
    ``char`` for other unspaced scripts (Thai, Lao, Khmer, Burmese, Tibetan), ``13a`` otherwise."""
    code = normalize_code(parse_locale(target_code).language or target_code)
    if code in {"zh", "yue", "cmn", "wuu", "nan"}:
        return "zh"
    if code == "ja":
        return "ja-mecab" if _has_mecab() else "char"
    if code == "ko":
        return "ko-mecab" if _has_mecab() else "13a"
    if code in _UNSPACED:
        return "char"
    return "13a"


def sentence_chrf(hypothesis: str, reference: str) -> float:
    """Sentence chrF++ (character 6-grams + word 2-grams, sacrebleu defaults), in 0..1."""
    from sacrebleu.metrics import CHRF

    if not hypothesis:
        return 0.0
    return CHRF(word_order=2).sentence_score(hypothesis, [reference]).score / 100.0


def sentence_bleu(hypothesis: str, reference: str, target_code: str = "") -> float:
    """Sentence BLEU (sacrebleu, effective order, the target language's tokenizer), in 0..1."""
    from sacrebleu.metrics import BLEU

    if not hypothesis:
        return 0.0
    bleu = BLEU(tokenize=bleu_tokenizer(target_code) if target_code else "13a", effective_order=True)
    return bleu.sentence_score(hypothesis, [reference]).score / 100.0


def metric(example: Any, prediction: Any, trace: Any = None) -> float:
    """Sentence chrF++ of the translation against ``example.target``, in 0..1."""
    return sentence_chrf(_text(prediction), example.target)


def make_metric(name: str = "chrf", *, comet: CometScorer | None = None):
    """The per-example metric ``name`` (:data:`METRICS`); ``comet`` needs a :class:`CometScorer`."""
    if name == "chrf":
        return metric
    if name == "bleu":
        def bleu_metric(example: Any, prediction: Any, trace: Any = None) -> float:
            return sentence_bleu(_text(prediction), example.target, _target_code(example))

        return bleu_metric
    if name == "comet":
        if comet is None:
            raise ConfigurationError("the comet metric needs a COMET checkpoint (--comet-model or FUSION_DSPY_COMET_MODEL)")

        def comet_metric(example: Any, prediction: Any, trace: Any = None) -> float:
            return comet.score([(str(example.source), _text(prediction), str(example.target))])[0]

        return comet_metric
    raise ConfigurationError(f"unknown WMT metric {name!r}; valid: {', '.join(METRICS)}")


def corpus_metrics(
    examples: Sequence[Any], predictions: Sequence[Any], *, comet_model: str | None = None, comet: CometScorer | None = None,
    comet_device: str = "auto",
) -> dict[str, float]:
    """Corpus BLEU and chrF++ (0..100) of ``predictions`` against the examples' targets.

    The BLEU tokenizer follows the target language (:func:`bleu_tokenizer`); a set that mixes target
    languages uses ``13a`` (score languages separately instead). The mean COMET is added when a
    scorer or a model path is given, or a path is set in ``FUSION_DSPY_COMET_MODEL``.
    """
    from sacrebleu.metrics import BLEU, CHRF

    if len(examples) != len(predictions):
        raise ConfigurationError(f"{len(examples)} examples but {len(predictions)} predictions")
    if not examples:
        return {}
    hyps = [_text(p) for p in predictions]
    refs = [str(ex.target) for ex in examples]
    codes = {_target_code(ex) for ex in examples}
    if len(codes) == 1:
        tokenizer = bleu_tokenizer(codes.pop())
    else:
        logger.warning("corpus BLEU over %d target languages: using the 13a tokenizer", len(codes))
        tokenizer = "13a"
    scores = {
        "bleu": BLEU(tokenize=tokenizer).corpus_score(hyps, [refs]).score,
        "chrf++": CHRF(word_order=2).corpus_score(hyps, [refs]).score,
    }
    if comet is None and (comet_model or os.environ.get(COMET_MODEL_ENV)):
        comet = CometScorer(comet_model, device=comet_device)
    if comet is not None:
        scores["comet"] = sum(comet.score([(str(ex.source), h, str(ex.target)) for ex, h in zip(examples, hyps, strict=True)])) / len(examples)
    return scores


def _target_code(example: Any) -> str:
    code = getattr(example, "target_code", None) if not isinstance(example, dict) else example.get("target_code")
    if code:
        return str(code)
    return parse_lp(example["language"] if isinstance(example, dict) else example.language)["target_code"]




def comet_scores(
    examples: Sequence[Any], predictions: Sequence[Any], *, model_path: str | None = None, batch_size: int = 8, device: str = "auto"
) -> list[float]:
    """Segment COMET/XCOMET scores with a local checkpoint (``unbabel-comet``, imported only when scoring).

    ``device``: ``auto`` (a GPU when torch sees one), ``cpu`` or ``gpu``.

    Raises:
        ConfigurationError: no model path given, the checkpoint is missing, unbabel-comet is not
            installed, or ``gpu`` was asked for without one.
    """
    scorer = CometScorer(model_path, device=device, batch_size=batch_size)
    return scorer.score([(str(ex.source), _text(p), str(ex.target)) for ex, p in zip(examples, predictions, strict=True)])


_LABELS = {"chrf": "chrF++ (sentence, 0..1)", "bleu": "BLEU (sentence, 0..1)"}


def make_task(
    *,
    include_bad_source: bool = False,
    include_canary: bool = False,
    metric: str = "chrf",
    oracle_metric: str | None = None,
    comet_model: str | None = None,
    comet_device: str = "auto",
) -> Task:
    """The WMT task.

    Args:
        include_bad_source: keep rows marked ``is_bad_source``; include_canary: keep the canary row.
        metric: the reported per-example metric (:data:`METRICS`; default chrF++).
        oracle_metric: the metric the oracle selects by (default: ``metric``); the oracle's answer is
            still reported by ``metric``.
        comet_model: a local COMET-family checkpoint (default ``FUSION_DSPY_COMET_MODEL``); needed by
            ``comet`` and adds corpus COMET to summaries.
        comet_device: ``auto`` (a GPU when present), ``cpu`` or ``gpu``.

    Raises:
        ConfigurationError: an unknown metric or device, or ``comet`` without a checkpoint that exists.
    """
    for label, name in (("metric", metric), ("oracle_metric", oracle_metric)):
        if name is not None and name not in METRICS:
            raise ConfigurationError(f"unknown WMT {label} {name!r}; valid: {', '.join(METRICS)}")
    wants_comet = "comet" in (metric, oracle_metric)
    # a checkpoint given, or needed by a metric, is checked now; FUSION_DSPY_COMET_MODEL alone only adds corpus COMET to summaries
    comet = CometScorer(comet_model, device=comet_device) if (comet_model or wants_comet) else None
    oracle = make_metric(oracle_metric, comet=comet) if oracle_metric not in (None, metric) else None
    options: dict[str, Any] = {k: v for k, v in (("metric", metric), ("oracle_metric", oracle_metric)) if v not in (None, "chrf")}
    if comet is not None:
        options.update(comet_model=comet.model_path, comet_device=comet_device)
    if include_bad_source or include_canary:
        options.update(include_bad_source=include_bad_source, include_canary=include_canary)
    return Task(
        name="wmt",
        load=functools.partial(load, include_bad_source=include_bad_source, include_canary=include_canary),
        program=program,
        metric=make_metric(metric, comet=comet),
        answer_field="translation",
        normalize=None,
        corpus_metrics=functools.partial(corpus_metrics, comet=comet),
        has_gold=True,
        description=f"WMT24++ translation, any pair; sentence {metric} per example (oracle by {oracle_metric or metric}); "
        "corpus BLEU/chrF++ (0..100)",
        oracle_metric=oracle,
        metric_label=_LABELS.get(metric) or f"COMET ({comet.name if comet else '-'})",
        make=make_task,
        options=options,
    )


TASK = make_task()
