"""How good is the synthetic data: each row's answers judged against a reference answer (the paper's Table 2).

For every row of a ``synth.jsonl`` and every method it holds (``fusion``, ``bon``: the same prompt,
the same candidates), a :class:`~fusion_dspy.judge.PairwiseJudge` compares the method's answer with a
reference answer to the prompt in both orders (ties half); the win rate of a dataset is the mean over
its rows. References come from a JSONL of prompts with an answer field (the paper used Gemini 2.5
Flash's answers; UltraFeedback's own ``chosen`` answer is the stand-in when no other is given),
matched by the prompt's text. The judgements go to a records file of their own, one line per row,
so an interrupted scoring resumes (:func:`~fusion_dspy.records.run_items`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fusion_dspy.data import read_jsonl
from fusion_dspy.errors import ConfigurationError, DataError
from fusion_dspy.synth.prompts import prompt_from_value
from fusion_dspy.synth.rows import RESPONSE_FIELD

logger = logging.getLogger(__name__)

QUALITY_NAME = "quality.jsonl"


def load_reference_answers(path: str | os.PathLike[str], *, field: str = "chosen", prompt_field: str = "prompt") -> dict[str, str]:
    """Reference answers by prompt text from JSONL rows ``{prompt, <field>}``.

    The prompt is a string or chat messages (read as ``synth`` reads prompts); the answer is a string,
    or chat messages whose last assistant turn is the answer. ``field`` falls back to ``answer``.

    A row whose answer is empty or missing is skipped (counted in a warning): its prompt has no reference.

    Raises:
        DataError: a row without a usable prompt (file and line named), or no reference answer at all.
    """
    refs: dict[str, str] = {}
    skipped = 0
    for line, row in read_jsonl(path):
        prompt = prompt_from_value(row.get(prompt_field), path=str(path), line=line)
        answer = _answer_text(row.get(field, row.get("answer")))
        if answer is None:
            skipped += 1
            continue
        refs.setdefault(prompt.text, answer)
    if skipped:
        logger.warning("%s: %d rows have no %r answer; their prompts have no reference", path, skipped, field)
    if not refs:
        raise DataError(f"no reference answers: expected {field!r} (or 'answer') as a string or chat messages", path=str(path))
    return refs


def _answer_text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list):
        turns = [m.get("content") for m in value if isinstance(m, Mapping) and m.get("role") == "assistant"]
        if turns and isinstance(turns[-1], str) and turns[-1].strip():
            return turns[-1]
    return None


def score_quality(
    records_path: str | os.PathLike[str],
    references: Mapping[str, str],
    *,
    judge: Any,
    out_path: str | os.PathLike[str] | None = None,
    methods: Sequence[str] | None = None,
    concurrency: int = 2,
    reference_name: str = "reference",
) -> dict[str, Any]:
    """Judge every row's answers against the reference answer of its prompt; resumable.

    Args:
        records_path: a ``synth.jsonl``.
        references: prompt text -> reference answer (:func:`load_reference_answers`).
        judge: a :class:`~fusion_dspy.judge.PairwiseJudge` (or anything with ``judge_pair(prompt, a, b)``).
        out_path: the judgements file (default ``quality.jsonl`` beside the records); rows judged
            there before with the same judge and references are not judged again.
        methods: the methods to judge (default: every method of each row).
        reference_name: what the references are (recorded, and part of each judgement's id).

    Returns:
        ``{"methods": {method: {"scores": [...], "mean": ...}}, "rows": n, "missing_reference": n, "path": ...}``.
    """
    from fusion_dspy.records import RecordStore, read_records, record_id, run_items

    src = Path(records_path)
    store = RecordStore(Path(out_path) if out_path is not None else src.with_name(QUALITY_NAME))
    judge_name = str(getattr(getattr(judge, "lm", None), "fd_name", None) or getattr(getattr(judge, "lm", None), "model", None) or "judge")
    missing = 0
    wanted: list[str] = []

    def items():
        nonlocal missing
        for row in read_records(src):
            prompt = str((row.get("inputs") or {}).get("prompt") or "")
            reference = references.get(prompt)
            if reference is None:
                missing += 1
                continue
            answers = {m: str((r.get("outputs") or {}).get(RESPONSE_FIELD) or "") for m, r in (row.get("methods") or {}).items()
                       if isinstance(r, Mapping) and (methods is None or m in methods)}
            wanted.extend(m for m in answers if m not in wanted)
            rid = record_id("quality", row["id"], judge_name, reference_name, sorted(answers))
            yield rid, (row["id"], prompt, reference, answers)

    def work(payload: tuple[str, str, str, dict[str, str]]) -> dict[str, Any]:
        row_id, prompt, reference, answers = payload
        scores = {m: judge.judge_pair(prompt, answer, reference) for m, answer in answers.items()}
        return {"row": row_id, "judge": judge_name, "reference": reference_name, "scores": scores}

    stats = run_items(items(), work, store, concurrency=concurrency)
    if missing:
        logger.warning("%d rows of %s have no reference answer for their prompt and were not judged", missing, src)
    if stats.failed:
        logger.warning("%d rows could not be judged (%s); rerun to retry them", stats.failed, "; ".join(stats.failures[:3]))
    by_method: dict[str, list[float]] = {m: [] for m in wanted}
    for rec in store:
        if rec.get("judge") == judge_name and rec.get("reference") == reference_name:
            for m, value in (rec.get("scores") or {}).items():
                if value is not None and (methods is None or m in methods):
                    by_method.setdefault(m, []).append(float(value))
    if not any(by_method.values()) and not stats.failed:
        raise ConfigurationError(f"no row of {src} has a reference answer for its prompt; give references for these prompts")
    return {
        "path": str(store.path),
        "rows": sum(1 for _ in read_records(src)),
        "missing_reference": missing,
        "failed": stats.failed,
        "judge": judge_name,
        "reference": reference_name,
        "methods": {m: {"scores": v, "mean": sum(v) / len(v) if v else float("nan")} for m, v in by_method.items()},
    }
