"""The row ``synth`` writes per prompt, in the datasets-safe encoding, and its export to parquet.

A row is a ``synth`` record of ``docs/records.md``::

    {"id": ..., "format": 2, "kind": "synth", "config": {...}, "inputs": {"prompt": ...},
     "candidates": {"inputs": ..., "candidates": [...], "output_fields": ["response"], "usage": ...},
     "methods": {<method>: <result>, ...}, "answer_from": <method>,
     "messages": [{"role": "user", ...}, {"role": "assistant", ...}], "filters": {...},
     "usage": {"sampling": ..., "total": ...}, "attempt": 0, "source": "prompts.jsonl:1"}

``datasets.load_dataset("json", ...)`` infers the schema from the first 10 MB and casts every later
chunk to it, so no field may be null in some rows and a string (or a non-empty list) in others.
Hence, compared with the ``to_dict()`` forms: absent strings are ``""`` (``error``, ``raw``,
``fallback``, ``note``); fields whose shape varies row to row are JSON strings (a selection's
``scores`` ``{"index": score}`` and ``details``, a fusion's ``trimmed``, ``filters.dropped``,
``filters.detected``); ``methods`` holds the same methods in every row of a folder (one
configuration per folder); every candidate's ``outputs`` has the ``response`` field.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fusion_dspy.aggregate.registry import FUSION, MethodResult
from fusion_dspy.errors import DataError
from fusion_dspy.records.schema import SYNTH, stamp
from fusion_dspy.types import Candidate, CandidateSet

RESPONSE_FIELD = "response"
RECORDS_NAME = "synth.jsonl"
PARQUET_NAME = "synth.parquet"


def synth_row(
    *,
    messages: Sequence[Mapping[str, str]],
    answer: str,
    answer_from: str,
    cset: CandidateSet,
    results: Mapping[str, MethodResult],
    filters: Mapping[str, Any],
    config: Mapping[str, Any],
    attempt: int,
    source: str,
) -> dict[str, Any]:
    """One prompt's row (without its ``id``): the conversation with its answer, and how it was made."""
    total = cset.usage
    for result in results.values():
        total = total + result.outcome.usage
    return stamp(SYNTH, {
        "config": dict(config),
        "inputs": dict(cset.inputs),
        "candidates": {
            "inputs": dict(cset.inputs),
            "candidates": [_candidate_row(c, cset.output_fields) for c in cset.candidates],
            "output_fields": list(cset.output_fields),
            "usage": cset.usage.to_dict(),
        },
        "methods": {name: _method_row(result) for name, result in results.items()},
        "answer_from": answer_from,
        "messages": [*messages, {"role": "assistant", "content": answer}],
        "filters": _filters_row(filters),
        "usage": {"sampling": cset.usage.to_dict(), "total": total.to_dict()},
        "attempt": attempt,
        "source": source,
    })


def text_of(value: Any) -> str:
    """A field's value as text (non-strings as JSON, None as empty)."""
    return value if isinstance(value, str) else ("" if value is None else json.dumps(value, ensure_ascii=False))


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
    return "" if value is None else text_of(value)


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


def sft_dataset(path: str | os.PathLike[str], *, method: str | None = None, cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """The rows as a chat dataset for supervised fine-tuning: one column, ``messages`` (the prompt's
    turns, then the answer as the last, ``assistant``, turn), the format TRL's ``SFTTrainer`` reads.

    Args:
        method: whose answer to train on (``fusion``, ``bon``: the rows hold both when both ran, on the
            same candidates, so the two datasets differ only in the aggregation); None: each row's own
            ``answer_from``. Rows without an answer of that method are left out.
    """
    ds = load_records(path, cache_dir=cache_dir)
    if method is not None:
        if method not in (ds.features.get("methods") or {}):
            known = ", ".join(ds.features.get("methods") or {}) or "none"
            raise DataError(f"the rows have no {method!r} answers (methods: {known})",
                            path=str(path))

        def with_answer(row: dict[str, Any]) -> dict[str, Any]:
            answer = ((row["methods"].get(method) or {}).get("outputs") or {}).get(RESPONSE_FIELD) or ""
            return {"messages": [*row["messages"][:-1], {"role": "assistant", "content": answer}]}

        ds = ds.map(with_answer)
        ds = ds.filter(lambda row: bool(row["messages"][-1]["content"].strip()))
    return ds.select_columns(["messages"])

