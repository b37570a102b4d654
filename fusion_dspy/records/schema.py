"""The record format shared by ``eval`` and ``synth``, with its version; older records are upgraded on read.

Every record written since format 2 starts with ``id``, ``format`` (:data:`FORMAT_VERSION`) and
``kind`` (``eval`` or ``synth``), and holds the same core: ``config``, ``inputs``, ``candidates``
(a candidate set: ``inputs``, ``candidates``, ``output_fields``, ``usage``) and ``methods`` (one
result per aggregation method, keyed by its registry name). The fields of each kind, and the
datasets-safe encoding of synth rows, are in ``docs/records.md``.

Readers call :func:`upgrade` (or :func:`read_records`) and then see format 2 only. Records of
format 1 (no ``format`` field) came in two shapes, told apart by a documented rule, not by guessing
at their content: eval records nested the method results under ``methods``; synth rows carried
``fusion`` and ``best_of_n`` at the top level and their candidates as a bare list.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from fusion_dspy.aggregate.registry import BON, FUSION
from fusion_dspy.errors import DataError
from fusion_dspy.records.store import iter_records
from fusion_dspy.types import Usage

FORMAT_VERSION = 2
EVAL = "eval"
SYNTH = "synth"
KINDS = (EVAL, SYNTH)
#: the fields every format-2 record has (besides ``id``, ``format`` and ``kind``)
CORE_FIELDS = ("config", "inputs", "candidates", "methods")
#: the answer origin format-1 synth rows wrote for Best-of-N (format 2 writes the method's name)
_V1_BEST_OF_N = "best_of_n"


def stamp(kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A record of ``kind`` in the current format: ``format`` and ``kind`` first, then ``fields``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    missing = [name for name in CORE_FIELDS if name not in fields]
    if missing:
        raise ValueError(f"a {kind} record needs {', '.join(missing)}")
    return {"format": FORMAT_VERSION, "kind": kind, **fields}


def upgrade(rec: Mapping[str, Any], *, where: str = "record") -> dict[str, Any]:
    """``rec`` in format 2 (records of format 1 are converted; format 2 is returned as it is).

    Raises:
        DataError: a record of a newer format (upgrade fusion-dspy), an unknown format or kind,
            or a format-1 record of neither shape.
    """
    version = rec.get("format")
    if version == FORMAT_VERSION:
        if rec.get("kind") not in KINDS:
            raise DataError(f"{where}: format-{FORMAT_VERSION} record of unknown kind {rec.get('kind')!r} (expected {' or '.join(KINDS)})")
        return dict(rec)
    if version is None:
        return _from_v1(rec, where)
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise DataError(f"{where}: written in record format {version} by a newer fusion-dspy; this one reads up to {FORMAT_VERSION}: upgrade it")
    raise DataError(f"{where}: unknown record format {version!r}")


def read_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Stream the records of a file in format 2, whatever format each was written in."""
    for n, rec in enumerate(iter_records(path), 1):
        yield upgrade(rec, where=f"{path}: record {n}")


def method_result(rec: Mapping[str, Any], method: str) -> dict[str, Any] | None:
    """The result of ``method`` in a format-2 record, or None when it did not run or failed."""
    result = (rec.get("methods") or {}).get(method)
    if not isinstance(result, Mapping) or result.get("status") == "failed":
        return None
    return dict(result)


def candidate_list(rec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The candidates of a format-2 record (each with ``index``, ``model``, ``outputs``, ...)."""
    cands = rec.get("candidates")
    return list(cands.get("candidates") or []) if isinstance(cands, Mapping) else []


# --------------------------------------------------------------------------------------------------
# format 1


def _from_v1(rec: Mapping[str, Any], where: str) -> dict[str, Any]:
    if isinstance(rec.get("methods"), Mapping) and not {FUSION, _V1_BEST_OF_N} & set(rec):
        return {"id": rec.get("id"), "format": FORMAT_VERSION, "kind": EVAL, **{k: v for k, v in rec.items() if k != "id"}}
    if {FUSION, _V1_BEST_OF_N, "messages"} & set(rec):
        return _synth_from_v1(rec)
    raise DataError(f"{where}: not a fusion-dspy record: no 'format', and neither eval 'methods' nor synth {FUSION!r}/{_V1_BEST_OF_N!r}")


def _synth_from_v1(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A format-1 synth row in format 2: its candidates as a set, ``fusion``/``best_of_n`` as method results."""
    usage = rec.get("usage") if isinstance(rec.get("usage"), Mapping) else {}
    sampling = dict(usage.get("sampling") or {})
    cands = rec.get("candidates")
    cands = list(cands) if isinstance(cands, list) else cands
    inputs = {"prompt": rec["prompt"]} if "prompt" in rec else {}
    if isinstance(cands, list):
        fields = sorted({name for c in cands if isinstance(c, Mapping) for name in (c.get("outputs") or {})})
        cands = {"inputs": inputs, "candidates": cands, "output_fields": fields, "usage": sampling}
    methods: dict[str, Any] = {}
    # format 1 kept Best-of-N's selection under "best_of_n" and the fusion under the method's own name
    for method, old_key, detail_key in ((BON, _V1_BEST_OF_N, "selection"), (FUSION, FUSION, FUSION)):
        detail = rec.get(old_key)
        if not isinstance(detail, Mapping):
            continue
        aggregation = _usage(usage.get(old_key) or detail.get("usage") or {})
        methods[method] = {
            "outputs": detail.get("outputs"),
            "fallback": detail.get("fallback"),
            detail_key: dict(detail),
            "usage": Usage.breakdown(_usage(sampling), aggregation),
            "seconds": aggregation.seconds,
        }
    answer_from = rec.get("answer_from")
    out: dict[str, Any] = {
        "id": rec.get("id"), "format": FORMAT_VERSION, "kind": SYNTH,
        "config": rec.get("config"), "inputs": inputs, "candidates": cands, "methods": methods,
        "answer_from": BON if answer_from == _V1_BEST_OF_N else answer_from,
    }
    for name in ("messages", "filters", "attempt", "source"):
        if name in rec:
            out[name] = rec[name]
    if usage:
        out["usage"] = {"sampling": sampling, "total": dict(usage.get("total") or {})}
    return out


def _usage(d: Mapping[str, Any]) -> Usage:
    return Usage(int(d.get("prompt_tokens") or 0), int(d.get("completion_tokens") or 0), float(d.get("seconds") or 0.0), int(d.get("calls") or 0))
