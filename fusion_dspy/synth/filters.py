"""The filters applied to a prompt's candidates before aggregation: language and minimum length.

Failed samples are always dropped. Filters that drop *every* candidate make the prompt fail
(reason in ``synth.failed.jsonl``) rather than writing an answer that fails the user's own quality
bar into a training set; the next run retries it with fresh samples.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.synth.rows import RESPONSE_FIELD, text_of
from fusion_dspy.types import Candidate, CandidateSet

# Languages the language filter can tell apart (lingua, high-accuracy mode). Loading lingua's
# models for all 75 languages takes ~30 s and ~1 GB; this set takes a third of that. The expected
# languages are always added.
DEFAULT_LANGUAGE_UNIVERSE = (
    "en", "de", "fr", "es", "pt", "it", "nl", "ru", "pl", "uk", "cs", "sv", "tr", "ar", "fa",
    "hi", "bn", "zh", "ja", "ko", "vi", "id", "th", "sw", "el", "he", "ro", "hu", "da", "fi",
)

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
        text = text_of(c.outputs.get(field_name)).strip()
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


