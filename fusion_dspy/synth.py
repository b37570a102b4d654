"""Synthetic training data: per prompt, sample a teacher pool, filter, fuse (or select), write one row.

The paper's second setting (Fusion-of-N as a teacher for SFT data). For every prompt the teachers of
a :class:`~fusion_dspy.lm.endpoints.Pool` answer it (``samples_per_teacher`` each, temperature 0.3 by
default), optional filters drop candidates (failed samples always, wrong language, too short), and
:class:`~fusion_dspy.aggregate.Aggregators` applies ``fusion`` (and ``bon`` on the same candidates
when asked). One JSON line per prompt goes to ``OUT/synth.jsonl``, a ``synth`` record of
``docs/records.md``::

    {"id": ..., "format": 2, "kind": "synth", "config": {...}, "inputs": {"prompt": ...},
     "candidates": {"inputs": ..., "candidates": [...], "output_fields": ["response"], "usage": ...},
     "methods": {<method>: <result>, ...}, "answer_from": <method>,
     "messages": [{"role": "user", ...}, {"role": "assistant", ...}], "filters": {...},
     "usage": {"sampling": ..., "total": ...}, "attempt": 0, "source": "prompts.jsonl:1"}

The id is a hash of the conversation and the configuration (teachers, methods, temperature,
max_tokens, samples, filters, instructions), so rerunning the same command skips finished prompts;
the loop is :func:`~fusion_dspy.records.run_items` (durable appends, bounded concurrency, failures in
``synth.failed.jsonl`` retried on the next run). An output folder holds one configuration
(``synth.config.json``): a different configuration needs another folder, since one training set
with the same prompt answered twice under two configurations is rarely what anyone wants.

``datasets.load_dataset("json", ...)`` infers the schema from the first 10 MB and casts every later
chunk to it, so no field may be null in some rows and a string (or a non-empty list) in others.
Hence, compared with the ``to_dict()`` forms: absent strings are ``""`` (``error``, ``raw``,
``fallback``, ``note``); fields whose shape varies row to row are JSON strings (a selection's
``scores`` ``{"index": score}`` and ``details``, a fusion's ``trimmed``, ``filters.dropped``,
``filters.detected``); ``methods`` holds the same methods in every row of a folder (one
configuration per folder); every candidate's ``outputs`` has the ``response`` field.

Filters that drop *every* candidate make the prompt fail (reason in ``synth.failed.jsonl``) rather
than writing an answer that fails the user's own quality bar into a training set. The next run
retries it with fresh samples (the rollout ids move on with each recorded failure).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from fusion_dspy.aggregate.registry import BON, FUSION, available_methods, check_methods, method_order
from fusion_dspy.data import BadRows, read_jsonl
from fusion_dspy.errors import ConfigurationError, DataError, SamplingError
from fusion_dspy.records.schema import SYNTH, stamp
from fusion_dspy.types import Candidate, CandidateSet

logger = logging.getLogger(__name__)

SYNTH_INSTRUCTION = (
    "You are a helpful, honest and harmless assistant. Answer the user's prompt fully and "
    "accurately, in the language of the prompt. Follow its instructions, give the relevant "
    "information clearly, and refuse only what would be harmful."
)
# open-ended prompts have no gold answers and no answer normaliser: the methods that need neither
SYNTH_METHODS = available_methods(None, baselines=False, deployable_only=True)
RECORDS_NAME = "synth.jsonl"
CONFIG_NAME = "synth.config.json"
PARQUET_NAME = "synth.parquet"
DEFAULT_MAX_TOKENS = 512
DEFAULT_CONCURRENCY = 4
DEFAULT_SAMPLES = 4
RESPONSE_FIELD = "response"
ROLES = ("system", "user", "assistant")

# Languages the language filter can tell apart (lingua, high-accuracy mode). Loading lingua's
# models for all 75 languages takes ~30 s and ~1 GB; this set takes a third of that. The expected
# languages are always added.
DEFAULT_LANGUAGE_UNIVERSE = (
    "en", "de", "fr", "es", "pt", "it", "nl", "ru", "pl", "uk", "cs", "sv", "tr", "ar", "fa",
    "hi", "bn", "zh", "ja", "ko", "vi", "id", "th", "sw", "el", "he", "ro", "hu", "da", "fi",
)


# --------------------------------------------------------------------------------------------------
# Prompts


@dataclass(frozen=True)
class Prompt:
    """One prompt to synthesise an answer for.

    Attributes:
        messages: the conversation to answer (ends with a user turn), as ``{"role", "content"}``.
        where: ``file:line`` (or ``file:row``) it came from, for errors and provenance.
    """

    messages: tuple[dict[str, str], ...]
    where: str

    @property
    def text(self) -> str:
        """What the program sees: the user's text, or a transcript of a longer conversation."""
        if len(self.messages) == 1:
            return self.messages[0]["content"]
        return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in self.messages)


def prompt_from_value(value: Any, *, path: str, line: int) -> Prompt:
    """A :class:`Prompt` from a string or a list of chat messages (the last one from the user)."""
    where = f"{path}:{line}"
    if isinstance(value, str):
        if not value.strip():
            raise DataError("the prompt is empty", path=path, line=line)
        return Prompt(({"role": "user", "content": value},), where)
    if isinstance(value, (list, tuple)) or _is_array(value):
        messages = []
        for i, m in enumerate(list(value)):
            if not isinstance(m, Mapping) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
                raise DataError(
                    f"prompt message {i} must be an object with a role ({', '.join(ROLES)}) and a string content",
                    path=path, line=line,
                )
            messages.append({"role": m["role"], "content": m["content"]})
        if not messages:
            raise DataError("the prompt is an empty list of messages", path=path, line=line)
        if messages[-1]["role"] != "user":
            raise DataError(
                f"the prompt's last message is from the {messages[-1]['role']}; it must be the user turn to answer",
                path=path, line=line,
            )
        if not messages[-1]["content"].strip():
            raise DataError("the prompt's last user message is empty", path=path, line=line)
        return Prompt(tuple(messages), where)
    raise DataError(f"the prompt must be a string or a list of chat messages, got {type(value).__name__}", path=path, line=line)


def _is_array(value: Any) -> bool:
    return type(value).__name__ == "ndarray"


def read_prompts(
    path: str | os.PathLike[str],
    *,
    field_name: str = "prompt",
    skip_bad_rows: bool = False,
    bad_rows: BadRows | None = None,
) -> Iterator[Prompt]:
    """Stream prompts from JSONL, parquet, or a folder saved with ``datasets`` (``save_to_disk``).

    Raises:
        DataError: missing file, unknown format, or a bad row (unless ``skip_bad_rows``), naming
            the file and line (row number for parquet and datasets folders).
    """
    p = Path(path)
    bad_rows = bad_rows if bad_rows is not None else BadRows()
    if not p.exists():
        raise DataError("prompts file does not exist", path=str(p))
    if p.is_dir():
        rows: Iterator[tuple[int, Any]] = _dataset_dir_rows(p, field_name)
    elif p.suffix == ".parquet":
        rows = _parquet_rows(p, field_name)
    elif p.suffix in (".jsonl", ".json", ".ndjson"):
        rows = ((line, row.get(field_name)) for line, row in read_jsonl(p, skip_bad_rows=skip_bad_rows, bad_rows=bad_rows))
    else:
        raise DataError("unknown prompts format: give a .jsonl file, a .parquet file or a folder saved with datasets", path=str(p))
    for line, value in rows:
        try:
            if value is None:
                raise DataError(f"missing field {field_name!r}", path=str(p), line=line)
            yield prompt_from_value(value, path=str(p), line=line)
        except DataError as err:
            if not skip_bad_rows:
                raise
            bad_rows.add(err)


def _parquet_rows(p: Path, field_name: str) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"not a readable parquet file ({exc})", path=str(p)) from None
    if field_name not in pf.schema_arrow.names:
        raise DataError(f"no column {field_name!r} (columns: {', '.join(pf.schema_arrow.names)})", path=str(p))
    row = 0
    for batch in pf.iter_batches(columns=[field_name], batch_size=1024):
        for value in batch.column(0).to_pylist():
            row += 1
            yield row, value
    if row == 0:
        raise DataError("no rows", path=str(p))


def _dataset_dir_rows(p: Path, field_name: str) -> Iterator[tuple[int, Any]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except FileNotFoundError as exc:
        raise DataError(f"not a folder saved with datasets' save_to_disk ({exc})", path=str(p)) from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" in ds:
            ds = ds["train"]
        elif len(ds) == 1:
            ds = next(iter(ds.values()))
        else:
            raise DataError(f"a DatasetDict with several splits ({', '.join(ds)}) and no 'train'; save the split you want", path=str(p))
    if field_name not in ds.column_names:
        raise DataError(f"no column {field_name!r} (columns: {', '.join(ds.column_names)})", path=str(p))
    if len(ds) == 0:
        raise DataError("no rows", path=str(p))
    column = ds.select_columns([field_name])
    for row, item in enumerate(column, 1):  # memory-mapped; one row at a time
        yield row, item[field_name]


# --------------------------------------------------------------------------------------------------
# Filters


@dataclass(frozen=True)
class Filters:
    """Filters applied to the candidates before aggregation (failed samples are always dropped).

    Attributes:
        languages: ISO 639-1 codes a candidate must be written in, or ``("auto",)`` for the
            prompt's detected language; None: no language filter.
        min_length: minimum characters of a candidate's (stripped) response; None: no minimum.
        universe: the languages the detector chooses between (the expected ones are added).
    """

    languages: tuple[str, ...] | None = None
    min_length: int | None = None
    universe: tuple[str, ...] = DEFAULT_LANGUAGE_UNIVERSE

    def __post_init__(self) -> None:
        if self.min_length is not None and self.min_length < 1:
            raise ConfigurationError(f"min_length must be >= 1 character, got {self.min_length}")
        if self.languages is not None:
            langs = tuple(code.strip().lower() for code in self.languages if code.strip())
            if not langs:
                raise ConfigurationError("languages is empty: give ISO 639-1 codes such as 'de' or 'de,fr', or 'auto'")
            if "auto" in langs and len(langs) > 1:
                raise ConfigurationError("'auto' (the prompt's language) cannot be combined with other language codes")
            object.__setattr__(self, "languages", langs)

    def to_config(self) -> dict[str, Any]:
        return {"languages": list(self.languages) if self.languages else None, "min_length": self.min_length}

    @classmethod
    def parse(cls, language: str | None = None, min_length: int | None = None) -> Filters:
        """Filters from CLI-style values (``"de,fr"``, ``"auto"``)."""
        langs = tuple(language.split(",")) if language else None
        return cls(langs, min_length)


_DETECTORS: dict[tuple[str, ...], Any] = {}
_DETECTOR_LOCK = threading.Lock()


def _lingua() -> Any:
    try:
        import lingua
    except ImportError:
        raise ConfigurationError(
            "the language filter needs lingua-language-detector: pip install 'fusion-dspy[lang]'"
        ) from None
    return lingua


def _language_of(code: str) -> Any:
    lingua = _lingua()
    try:
        return lingua.Language.from_iso_code_639_1(lingua.IsoCode639_1.from_str(code.upper()))
    except ValueError:
        known = sorted(lang.iso_code_639_1.name.lower() for lang in lingua.Language.all())
        raise ConfigurationError(f"unknown language code {code!r}; use ISO 639-1 codes, one of: {', '.join(known)}") from None


def language_detector(codes: Sequence[str]) -> Any:
    """A lingua detector choosing between ``codes`` (built once per set of codes, thread-safe)."""
    key = tuple(sorted(set(codes)))
    with _DETECTOR_LOCK:
        detector = _DETECTORS.get(key)
        if detector is None:
            lingua = _lingua()
            languages = [_language_of(c) for c in key]
            if len(languages) < 2:
                raise ConfigurationError("the language detector needs at least two languages to choose between")
            detector = lingua.LanguageDetectorBuilder.from_languages(*languages).build()
            _DETECTORS[key] = detector
    return detector


def detect_language(text: str, detector: Any) -> str | None:
    """The ISO 639-1 code of ``text``'s language, or None when it cannot be told."""
    lang = detector.detect_language_of(text)
    return None if lang is None else lang.iso_code_639_1.name.lower()


def check_filters(filters: Filters) -> None:
    """Fail before any model call if the filters cannot run (lingua missing, bad language code)."""
    if filters.languages:
        codes = set(filters.universe) | {c for c in filters.languages if c != "auto"}
        for code in sorted(codes):
            _language_of(code)


def apply_filters(cset: CandidateSet, prompt_text: str, filters: Filters, *, field_name: str = RESPONSE_FIELD) -> tuple[CandidateSet, dict[str, Any]]:
    """Drop failed, too-short and wrong-language candidates; say what each filter did.

    Returns the candidate set the aggregators see (original indices kept) and the report stored
    in the row's ``filters``. Candidates whose language cannot be told are kept (noted).
    """
    dropped: list[dict[str, Any]] = []
    detected: list[dict[str, Any]] = []
    notes: list[str] = []
    expected: list[str] | None = None
    prompt_language = None
    detector = None
    if filters.languages:
        codes = set(filters.universe) | {c for c in filters.languages if c != "auto"}
        detector = language_detector(sorted(codes))
        if filters.languages == ("auto",):
            prompt_language = detect_language(prompt_text, detector)
            if prompt_language is None:
                notes.append("the prompt's language could not be detected; no language filter applied")
            else:
                expected = [prompt_language]
        else:
            expected = list(filters.languages)

    kept: list[Candidate] = []
    for c in cset.candidates:
        if not c.ok:
            dropped.append({"index": c.index, "model": c.model, "reason": f"failed: {c.error}"})
            continue
        text = _text_of(c.outputs.get(field_name)).strip()
        if filters.min_length is not None and len(text) < filters.min_length:
            dropped.append({"index": c.index, "model": c.model, "reason": f"too short: {len(text)} < {filters.min_length} characters"})
            continue
        if detector is not None and expected is not None:
            lang = detect_language(text, detector) if text else None
            detected.append({"index": c.index, "language": lang})
            if lang is not None and lang not in expected:
                dropped.append({"index": c.index, "model": c.model, "reason": f"language {lang}, expected {'/'.join(expected)}"})
                continue
            if lang is None:
                notes.append(f"candidate {c.index}: language not detected; kept")
        kept.append(c)
    report = {
        "languages": list(filters.languages) if filters.languages else None,
        "expected_languages": expected,
        "prompt_language": prompt_language,
        "min_length": filters.min_length,
        "kept": [c.index for c in kept],
        "dropped": dropped,
        "detected": detected,
        "note": "; ".join(notes) or None,
    }
    return CandidateSet(cset.inputs, tuple(kept), cset.output_fields, cset.usage), report


def _text_of(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else json.dumps(value, ensure_ascii=False))


# --------------------------------------------------------------------------------------------------
# Synthesis


@dataclass
class SynthStats:
    """What a synth run did."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    duplicates: int = 0
    bad_rows: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    completion_tokens: int = 0
    records_path: str = ""
    parquet_path: str | None = None
    failures: list[str] = field(default_factory=list)
    bad_row_examples: list[str] = field(default_factory=list)

    @property
    def completion_tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "done": self.done, "skipped": self.skipped, "failed": self.failed, "duplicates": self.duplicates,
            "bad_rows": self.bad_rows, "interrupted": self.interrupted, "seconds": round(self.seconds, 2),
            "completion_tokens": self.completion_tokens,
            "completion_tokens_per_second": round(self.completion_tokens_per_second, 2),
            "records": self.records_path, "parquet": self.parquet_path,
            "failures": self.failures[:20], "bad_row_examples": self.bad_row_examples[:20],
        }


def synth_program(instruction: str = SYNTH_INSTRUCTION) -> Any:
    """The program whose answers are fused: ``dspy.Predict`` with ``prompt -> response``."""
    import dspy

    fields = {
        "prompt": (str, dspy.InputField(desc="the user's prompt (or the conversation so far)")),
        RESPONSE_FIELD: (str, dspy.OutputField(desc="the assistant's answer")),
    }
    signature = dspy.make_signature(fields, instruction, signature_name="SynthResponse")
    return dspy.Predict(signature)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def check_synth_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """Validate synth's methods; ``bon`` runs before ``fusion`` so fusion falls back to its pick."""
    names = check_methods(methods, allowed=SYNTH_METHODS, what="synth method")
    return tuple(sorted(dict.fromkeys(names), key=method_order))


@dataclass
class _Setup:
    """Everything one prompt's work needs, built once per run."""

    program: Any
    teachers: dict[str, Any]
    samples: int
    temperature: float
    methods: tuple[str, ...]
    aggregators: Any
    filters: Filters
    config: dict[str, Any]
    prior_failures: Counter


def build_setup(
    pool: Any,
    *,
    methods: Sequence[str] = (FUSION,),
    samples_per_teacher: int | None = None,
    temperature: float | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    filters: Filters | None = None,
    instruction: str = SYNTH_INSTRUCTION,
    fusion_instruction: str | None = None,
    seed: int = 0,
) -> _Setup:
    """The program, teachers, aggregators and the configuration that goes into every id."""
    from fusion_dspy.aggregate import Aggregators, fusor_for
    from fusion_dspy.lm.endpoints import Pool
    from fusion_dspy.select import LLMRater, RewardModelScorer

    if not isinstance(pool, Pool):
        raise ConfigurationError(f"pool must be a fusion_dspy Pool (see load_pool), got {type(pool).__name__}")
    methods = check_synth_methods(methods)
    filters = filters or Filters()
    check_filters(filters)
    if max_tokens < 16:
        raise ConfigurationError(f"max_tokens must be >= 16, got {max_tokens}")
    k = pool.samples_per_teacher if samples_per_teacher is None else samples_per_teacher
    if k < 1:
        raise ConfigurationError(f"samples per teacher must be >= 1, got {k}")
    t = float(pool.temperature if temperature is None else temperature)
    if not 0.0 <= t <= 2.0:
        raise ConfigurationError(f"temperature must be in [0, 2], got {t}")

    program = synth_program(instruction)
    teachers = pool.teacher_lms(temperature=t, max_tokens=max_tokens)
    fusor = scorer = None
    fusor_ep = pool.endpoints[pool.fusor_name]
    if FUSION in methods:  # the Fusor raises its budget to what the candidates used (and a comparison's share)
        fusor = fusor_for(program, lm=fusor_ep.lm(temperature=0.0, max_tokens=max_tokens), instruction=fusion_instruction, seed=seed)
    scorer_desc = None
    if BON in methods:
        if pool.reward_model is not None:
            rm = pool.endpoints[pool.reward_model]
            scorer = RewardModelScorer.from_endpoint(rm)
            scorer_desc = {"kind": "reward_model", "name": rm.name, "model": rm.model}
        else:
            rater_ep = pool.endpoints[pool.rater_name]
            scorer = LLMRater(rater_ep.lm(temperature=0.0, max_tokens=256), max_workers=4)
            scorer_desc = {"kind": "llm_rater", "name": rater_ep.name, "model": rater_ep.model}
    config = {
        "teachers": [{"name": n, "model": pool.endpoints[n].model} for n in pool.teachers],
        "samples_per_teacher": k,
        "temperature": t,
        "max_tokens": max_tokens,
        "methods": list(methods),
        "fusor": {"name": fusor_ep.name, "model": fusor_ep.model, "max_tokens": max_tokens, "format": fusor.format} if fusor else None,
        "scorer": scorer_desc,
        "filters": filters.to_config(),
        "instruction": _hash(instruction),
        "fusion_instruction": _hash(fusor.instruction) if fusor else None,
        "seed": seed,
    }
    return _Setup(program, teachers, k, t, methods, Aggregators(fusor=fusor, scorer=scorer, seed=seed), filters, config, Counter())


def synthesize_one(setup: _Setup, prompt: Prompt, *, attempt: int = 0) -> dict[str, Any]:
    """One row for one prompt (without its ``id``). Raises when no candidate survives."""
    from fusion_dspy.sampling import sample_candidates

    cset = sample_candidates(
        setup.program, {"prompt": prompt.text}, pool=setup.teachers, samples_per_model=setup.samples,
        temperature=setup.temperature, rollout_offset=attempt * setup.samples,
    )
    kept, report = apply_filters(cset, prompt.text, setup.filters)
    if not kept.candidates:
        reasons = Counter(d["reason"].split(":")[0] for d in report["dropped"])
        raise SamplingError(f"filters dropped all {len(cset.candidates)} candidates ({dict(reasons)}); rerun to retry with fresh samples")
    results = setup.aggregators.results(kept, setup.methods)

    answer_from = FUSION if FUSION in results else BON  # the fused answer when fusion runs, else the selected one
    answer = results[answer_from].outputs.get(RESPONSE_FIELD)
    if not isinstance(answer, str) or not answer.strip():
        raise SamplingError(f"the {answer_from} answer is empty")
    total = cset.usage
    for result in results.values():
        total = total + result.outcome.usage
    inputs = {"prompt": prompt.text}
    return stamp(SYNTH, {
        "config": setup.config,
        "inputs": inputs,
        "candidates": {
            "inputs": inputs,
            "candidates": [_candidate_row(c, cset.output_fields) for c in cset.candidates],
            "output_fields": list(cset.output_fields),
            "usage": cset.usage.to_dict(),
        },
        "methods": {name: _method_row(result) for name, result in results.items()},
        "answer_from": answer_from,
        "messages": [*prompt.messages, {"role": "assistant", "content": answer}],
        "filters": _filters_row(report),
        "usage": {"sampling": cset.usage.to_dict(), "total": total.to_dict()},
        "attempt": attempt,
        "source": prompt.where,
    })


def _method_row(result: Any) -> dict[str, Any]:
    """A method's result (:meth:`MethodResult.to_record`) in the datasets-safe encoding of synth rows."""
    detail = result.outcome.to_dict()
    return {
        "outputs": {RESPONSE_FIELD: _s(result.outputs.get(RESPONSE_FIELD))},
        "fallback": _s(result.fallback),
        result.detail_key: _fusion_row(detail) if result.detail_key == FUSION else _selection_row(detail),
        "usage": result.usage,
        "seconds": round(result.seconds, 4),
    }


def _s(value: Any) -> str:
    """A string field that is never null (Arrow cannot cast a later string into a null column)."""
    return "" if value is None else _text_of(value)


def _candidate_row(c: Candidate, output_fields: tuple[str, ...]) -> dict[str, Any]:
    d = c.to_dict()
    d["outputs"] = {f: _s(d["outputs"].get(f)) for f in output_fields}
    d["error"], d["raw"] = _s(d["error"]), _s(d["raw"])
    return d


def _fusion_row(d: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(d)
    out["outputs"] = {RESPONSE_FIELD: _s(d["outputs"].get(RESPONSE_FIELD))}
    out["comparison"], out["fallback"], out["raw"] = _s(d.get("comparison")), _s(d.get("fallback")), _s(d.get("raw"))
    out["trimmed"] = json.dumps(d["trimmed"], ensure_ascii=False) if d.get("trimmed") else ""
    return out


def _selection_row(d: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(d)
    out["outputs"] = {RESPONSE_FIELD: _s(d["outputs"].get(RESPONSE_FIELD))}
    out["fallback"] = _s(d.get("fallback"))
    out["scores"] = json.dumps(d["scores"], ensure_ascii=False)
    out["details"] = json.dumps(d.get("details") or {}, ensure_ascii=False)
    return out


def _filters_row(report: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "languages": ",".join(report["languages"] or []),
        "expected_languages": ",".join(report["expected_languages"] or []),
        "prompt_language": _s(report["prompt_language"]),
        "min_length": report["min_length"] or 0,
        "kept": list(report["kept"]),
        "dropped": json.dumps(report["dropped"], ensure_ascii=False),
        "detected": json.dumps(report["detected"], ensure_ascii=False),
        "note": _s(report["note"]),
    }


def prompt_id(prompt: Prompt, config: Mapping[str, Any]) -> str:
    """The row id: a hash of the conversation and the configuration."""
    from fusion_dspy.records import record_id

    return record_id([dict(m) for m in prompt.messages], dict(config))


def _prior_failures(path: Path) -> Counter:
    counts: Counter = Counter()
    if not path.exists():
        return counts
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            try:
                counts[json.loads(line)["id"]] += 1
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a half-written line of a killed run
    return counts


def synthesize(
    prompts_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    pool: Any,
    limit: int | None = None,
    methods: Sequence[str] = (FUSION,),
    samples_per_teacher: int | None = None,
    temperature: float | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    concurrency: int = DEFAULT_CONCURRENCY,
    filters: Filters | None = None,
    prompt_field: str = "prompt",
    skip_bad_rows: bool = False,
    export_parquet: bool = False,
    progress: Any = None,
    stop: threading.Event | None = None,
) -> SynthStats:
    """Synthesise one training row per prompt into ``out_dir/synth.jsonl``; resumable.

    Args:
        prompts_path: JSONL (``prompt`` a string or a list of chat messages), parquet, or a folder
            saved with ``datasets``.
        pool: the teachers and roles (:func:`~fusion_dspy.lm.endpoints.load_pool`).
        limit: only the first ``limit`` prompts of the input.
        methods: ``fusion`` and/or ``bon`` (on the same candidates); the answer is the fused one
            when fusion runs, else the selected one.
        samples_per_teacher: overrides the pool's ``samples_per_teacher``.
        temperature: overrides the pool's teacher temperature (default 0.3).
        max_tokens: completion limit of every teacher sample (the fusor gets twice as much).
        concurrency: prompts in flight at once (each sends ``teachers x samples`` requests).
        filters: language / minimum-length filters before aggregation.
        skip_bad_rows: count and skip malformed prompt rows instead of stopping.
        export_parquet: also write ``out_dir/synth.parquet`` (through ``datasets``) at the end.

    Example:
        >>> stats = synthesize("prompts.jsonl", "out", pool=load_pool("pool.yaml"), limit=100)  # doctest: +SKIP
    """
    from fusion_dspy.records import RecordStore, failures_path, run_items

    if limit is not None and limit < 1:
        raise ConfigurationError(f"limit must be >= 1, got {limit}")
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
    setup = build_setup(
        pool, methods=methods, samples_per_teacher=samples_per_teacher, temperature=temperature, max_tokens=max_tokens, filters=filters
    )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"--out {out} exists and is not a folder")
    store = RecordStore(out / RECORDS_NAME)
    _claim_folder(out, store, setup.config)
    setup.prior_failures = _prior_failures(failures_path(store))
    bad = BadRows()
    stats = SynthStats(records_path=str(store.path))
    prompts = read_prompts(prompts_path, field_name=prompt_field, skip_bad_rows=skip_bad_rows, bad_rows=bad)
    first = next(prompts, None)  # bad input fails before any model call
    if first is None:
        raise DataError("no usable prompts", path=str(prompts_path))

    _import_litellm()
    seen: set[str] = set()

    def items() -> Iterator[tuple[str, tuple[Prompt, int]]]:
        for prompt in islice(_chain(first, prompts), limit):
            rid = prompt_id(prompt, setup.config)
            if rid in seen:
                stats.duplicates += 1
                logger.info("%s: same prompt as an earlier row; skipped", prompt.where)
                continue
            seen.add(rid)
            yield rid, (prompt, setup.prior_failures.get(rid, 0))

    def on_record(record: dict[str, Any]) -> None:
        stats.completion_tokens += int(record["usage"]["total"]["completion_tokens"])

    run = run_items(
        items(), lambda payload: synthesize_one(setup, payload[0], attempt=payload[1]), store,
        concurrency=concurrency, on_record=on_record, progress=progress, stop=stop,
    )
    stats.done, stats.skipped, stats.failed = run.done, run.skipped, run.failed
    stats.interrupted, stats.seconds, stats.failures = run.interrupted, run.seconds, run.failures
    stats.bad_rows, stats.bad_row_examples = bad.count, bad.examples
    if export_parquet and not stats.interrupted:
        stats.parquet_path = str(export_to_parquet(store.path, out / PARQUET_NAME))
    logger.info("synth: %s", stats.to_dict())
    return stats


def _import_litellm() -> None:
    """Import LiteLLM before the worker threads do: concurrent first imports of litellm fail with
    "partially initialized module 'litellm'" (seen when a resumed run starts several prompts at once)."""
    import litellm  # noqa: F401


def _claim_folder(out: Path, store: Any, config: Mapping[str, Any]) -> None:
    """Record the folder's configuration, or refuse a different one (see the module docstring)."""
    path = out / CONFIG_NAME
    current = json.loads(json.dumps(config))
    stored = None
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{path} is not valid JSON ({exc.msg}); delete it only if {store.path} is empty") from None
    elif len(store):
        stored = next(iter(store)).get("config")
    if stored is not None and stored != current:
        keys = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        changes = "; ".join(f"{k}: {json.dumps(stored.get(k))} -> {json.dumps(current.get(k))}" for k in keys)
        raise ConfigurationError(
            f"{out} holds rows made with another configuration ({changes}); "
            "use another --out folder for this configuration, or the earlier settings to resume"
        )
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(current, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def _chain(first: Prompt, rest: Iterator[Prompt]) -> Iterator[Prompt]:
    yield first
    yield from rest


def load_records(path: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """The records file as a ``datasets.Dataset`` (the JSON loader of ``datasets``)."""
    import datasets

    return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=None if cache_dir is None else str(cache_dir))


def export_to_parquet(records: str | os.PathLike[str], parquet: str | os.PathLike[str]) -> Path:
    """Write the records as parquet through ``datasets`` (a private cache, removed afterwards)."""
    src, dst = Path(records), Path(parquet)
    if not src.is_file() or src.stat().st_size == 0:
        raise DataError("no records to export yet", path=str(src))
    tmp = tempfile.mkdtemp(prefix=".hf-cache-", dir=dst.parent)
    try:
        ds = load_records(src, cache_dir=tmp)
        part = dst.with_name(dst.name + ".part")
        ds.to_parquet(str(part))
        os.replace(part, dst)  # never a half-written parquet under the final name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst
