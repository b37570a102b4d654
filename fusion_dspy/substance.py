"""Is a fused answer an answer? Checks of what a user reads, not of whether it parsed.

A fusor can parse every time and still write ``{answer}``, a field list copied from the prompt, or
two words where the candidates wrote paragraphs. :func:`assess` measures the answer itself:

- **framing**: prompt scaffolding in the text (DSPy field markers, ``{placeholders}``, "input/output
  fields", fence tags, a Python repr of the inputs, the fusor's own field names as labels, references
  to numbered drafts such as "Candidate 2:");
- **copied share**: the share of its characters in runs of at least 12 characters that also occur in
  a candidate (the paper reports that most fused text comes from the samples; short matches are
  ignored so that common words do not count);
- **length ratio**: its length over the candidates' median length.

An answer is *substantive* when it came from the fusor (no fallback), is free of framing, draws at
least 30% of its text from the candidates, and is not a stub (under 40 characters where the
candidates are longer). Apart from that, an answer is *degenerate* when more than half of its word
4-grams repeat earlier ones, or when a sentence of six words or more outside code comes three times (decoding
loops, the second of whole passages in an otherwise varied answer): reported beside substance, for
the answer and for the candidates it came from, since a small model's candidates loop too.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

MIN_BLOCK = 12
MIN_COPIED_SHARE = 0.3
STUB_CHARS = 40
DEGENERATE_REPETITION = 0.5
LOOP_SENTENCE_WORDS = 6
LOOP_SENTENCE_TIMES = 3
LOOP_SENTENCE_CHARS = 24
_CODE_BLOCK = re.compile(r"```.*?(?:```|\Z)", re.S)
_LIST_MARK = re.compile(r"^\W*(?:\d{1,3}[.)]|[-*•])?\W*")
_LIST_TOKEN = re.compile(r"\d{1,3}[.)]|[-*•]")

# names DSPy's adapters and fusion-dspy's own prompts use, which never belong in an answer
_PROMPT_FIELDS = ("candidates", "comparison", "compare", "analysis", "prompt", "response", "answer",
                  "reasoning", "question", "translation", "task", "completed")
_INPUT_NAMES = ("source_language", "target_language", "target_country", "source", "text", "instruction", "context")
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("DSPy field marker", re.compile(r"\[\[\s*#+\s*\w+\s*#+\s*\]\]|\[\s*#+\s*\w+\s*#+\s*\]|^\s*#{1,3}\s*\w+\s*#{1,3}\s*$", re.M)),
    ("placeholder", re.compile(r"\{\s*(?:" + "|".join(_PROMPT_FIELDS) + r")\s*\}", re.I)),
    # DSPy's "Your input fields are:", "The output fields should be ..."; not a form's "type of input field"
    ("field list", re.compile(r"\byour\s+(?:input|output)\s+fields?\b|\b(?:input|output)\s+fields\s+(?:are|is|should|were)\b", re.I)),
    ("fence tag", re.compile(r"<\s*/?\s*(?:candid\w*|response|draft)s?\b[^>]*>", re.I)),
    # a Python repr of the task's inputs ({'source_language': ...}); a dict in an answer's code is not one
    ("inputs repr", re.compile(r"\{\s*'(?:" + "|".join(_PROMPT_FIELDS + _INPUT_NAMES) + r")'\s*:\s*['\"]")),
    ("field label", re.compile(r"^\W{0,3}(?:candidates|comparison|source_language|target_language|target_country)\W{0,3}:", re.I | re.M)),
    ("completion marker", re.compile(r"#\s*completed\s*#", re.I)),
    # the fusor talking about its inputs ("**Candidate 1:**", "draft 2 says") instead of answering
    ("draft reference", re.compile(r"\b(?:candidate|draft)\s*(?:#|no\.?\s*)?\d+\b", re.I)),
    # a review of the drafts instead of the answer: "Your answer meets all the requirements", "Your response
    # contains a mix of ... Here's a revised version", "Both drafts are ..."
    ("review of the drafts", re.compile(
        r"\A\W*your\s+(?:answer|response|draft|solution)s?\s+(?:should|has|have|meets?|is|are|does|do|looks?|seems?"
        r"|contains?|includes?|provides?|offers?|gives?|covers?|lacks?|miss(?:es)?|needs?|could|can|was|were|reads?)\b"
        r"|\b(?:the|these|both|all|each of the)\s+(?:draft|candidate)(?:\s+(?:answer|response)s?|s)\b", re.I)),
)


def repetition(text: str, *, n: int = 4) -> float:
    """Share of the text's word ``n``-grams that repeat an earlier one (0: none; near 1: a loop).

    Small models at low temperature fall into loops ("400MA + 20A = 400MA + 20A = ..."); such an
    answer can copy every character from the candidates and still say nothing.
    """
    words = (text or "").split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def loop_start(text: str, *, n: int = 4, min_words: int = 12, share: float = 0.8) -> int | None:
    """Where a decoding loop takes over ``text``: the character offset from which the rest repeats itself, or None.

    The rest must be at least ``min_words`` word ``n``-grams long and ``share`` of them must repeat
    earlier ones. A small model that starts to loop goes on until ``max_tokens`` (a paragraph said
    five times, measured on the embedded model); what it wrote before the loop is often a fair answer.
    """
    # list markers aside: "2. Ask a neighbour ..." and "3. Ask a neighbour ..." are the same line said again
    spans = [m.span() for m in re.finditer(r"\S+", text or "") if not _LIST_TOKEN.fullmatch(m.group())]
    words = [text[a:b] for a, b in spans]
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    seen: set[tuple[str, ...]] = set()
    repeats = []
    for gram in grams:
        repeats.append(gram in seen)
        seen.add(gram)
    after = 0  # repeated n-grams from position i to the end
    start = None
    for i in range(len(grams) - 1, -1, -1):
        after += repeats[i]
        rest = len(grams) - i
        if repeats[i] and (i == 0 or not repeats[i - 1]) and rest >= min_words and after >= share * rest:
            start = i  # keep going: the earliest such run is where the loop took over
    return spans[start][0] if start is not None else None


def repeated_sentences(text: str) -> int:
    """How many sentences of six words or 24 characters or more the text says three times or more, code blocks aside.

    A looping passage inside a long answer ("You can buy a small amount of fuel ..." under three
    list items of a 2,000-character answer, measured on the embedded model) repeats too few 4-grams
    for :func:`repetition` to call it a loop; whole sentences said again and again are one.
    """
    prose = _CODE_BLOCK.sub("\n", text or "")  # code repeats lines by nature (`except Exception as e:`); 4-grams judge it
    parts = re.split(r"(?<=[.!?])\s+|(?<=[。！？．])|\n+", prose)
    counts = Counter(" ".join(_LIST_MARK.sub("", p).lower().split()) for p in parts)  # "1. x" and "3. x" are one sentence
    return sum(1 for sentence, times in counts.items() if times >= LOOP_SENTENCE_TIMES and (
        len(sentence.split()) >= LOOP_SENTENCE_WORDS or len(sentence) >= LOOP_SENTENCE_CHARS))  # chars: scripts without spaces


def framing_found(text: str) -> list[str]:
    """The kinds of prompt framing found in ``text`` (empty when it reads as a plain answer)."""
    return [name for name, pattern in _PATTERNS if pattern.search(text or "")]


def copied_share(text: str, sources: Iterable[str], *, min_block: int = MIN_BLOCK) -> float:
    """Share of ``text``'s characters inside a run of ``min_block``+ characters that occurs in a source.

    Every window of ``min_block`` characters of ``text`` that also occurs somewhere in a source marks
    its characters as copied, in whatever order the passages were reassembled (unlike difflib's
    alignment in :func:`fusion_dspy.analysis.contributions`, which credits each source only with
    blocks in its own order). Linear in the lengths: the sources' windows are hashed once.
    """
    if not text or len(text) < min_block:
        return 0.0
    windows: set[str] = set()
    for source in sources:
        windows.update(source[i : i + min_block] for i in range(len(source) - min_block + 1))
    if not windows:
        return 0.0
    covered = bytearray(len(text))
    for i in range(len(text) - min_block + 1):
        if text[i : i + min_block] in windows:
            covered[i : i + min_block] = b"\x01" * min_block
    return sum(covered) / len(text)


@dataclass(frozen=True)
class Substance:
    """What :func:`assess` found in one answer."""

    chars: int
    candidate_chars: float
    length_ratio: float
    copied_share: float
    framing: tuple[str, ...]
    fallback: bool = False
    repetition: float = 0.0
    repeated_sentences: int = 0

    @property
    def framing_free(self) -> bool:
        return not self.framing

    @property
    def stub(self) -> bool:
        """Under 40 characters where the candidates are longer."""
        return self.chars < STUB_CHARS and self.candidate_chars > self.chars

    @property
    def degenerate(self) -> bool:
        """Most of it repeats itself, or a sentence comes three times (a decoding loop)."""
        return self.repetition > DEGENERATE_REPETITION or self.repeated_sentences > 0

    @property
    def substantive(self) -> bool:
        return not self.fallback and self.framing_free and self.copied_share >= MIN_COPIED_SHARE and not self.stub

    def to_dict(self) -> dict[str, object]:
        return {
            "chars": self.chars, "length_ratio": round(self.length_ratio, 3), "copied_share": round(self.copied_share, 3),
            "framing": list(self.framing), "stub": self.stub, "fallback": self.fallback, "substantive": self.substantive,
            "repetition": round(self.repetition, 3), "repeated_sentences": self.repeated_sentences, "degenerate": self.degenerate,
        }


def assess(answer: str, candidates: Sequence[str], *, fallback: bool = False, min_block: int = MIN_BLOCK) -> Substance:
    """Measure one answer against the candidates it was made from."""
    answer = (answer or "").strip()
    texts = [c for c in candidates if c]
    median = statistics.median(len(c) for c in texts) if texts else 0.0
    return Substance(
        chars=len(answer),
        candidate_chars=float(median),
        length_ratio=(len(answer) / median) if median else 0.0,
        copied_share=copied_share(answer, texts, min_block=min_block),
        framing=tuple(framing_found(answer)),
        fallback=fallback,
        repetition=repetition(answer),
        repeated_sentences=repeated_sentences(answer),
    )


def summarize(items: Sequence[Substance]) -> dict[str, float | int]:
    """Rates and medians over many answers (what the substance benchmark and summaries report)."""
    n = len(items)
    if not n:
        return {"answers": 0}
    return {
        "answers": n,
        "parsed": sum(not s.fallback for s in items) / n,
        "substantive": sum(s.substantive for s in items) / n,
        "framing_free": sum(s.framing_free for s in items) / n,
        "median_copied_share": statistics.median(s.copied_share for s in items),
        "median_length_ratio": statistics.median(s.length_ratio for s in items),
        "stubs": sum(s.stub for s in items),
        "degenerate": sum(s.degenerate for s in items),
    }


def answer_text(outputs: Mapping[str, object], field: str | None = None) -> str:
    """The text of an answer's ``field`` (default: the last output field)."""
    if not outputs:
        return ""
    key = field if field in outputs else list(outputs)[-1]
    value = outputs.get(key)
    return "" if value is None else str(value)
