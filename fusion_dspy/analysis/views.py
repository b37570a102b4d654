"""What the analysis reads from one record: the fused text, its sources, shown positions, Best-of-N's pick.

Records of ``eval`` and ``synth`` share one format (``docs/records.md``); each is brought to the
current format version (:func:`fusion_dspy.records.upgrade`) before it is read.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from fusion_dspy.aggregate.registry import BON, FUSION
from fusion_dspy.analysis.attribution import RESERVED_LABELS
from fusion_dspy.errors import DataError
from fusion_dspy.records.schema import method_result, upgrade


@dataclass(frozen=True)
class RecordView:
    """What the analysis needs from one record.

    Attributes:
        id: the record's id.
        field: the output field analysed.
        fused: the fused text, or None when the record has no usable fusion.
        sources: source name -> text of every candidate the fusor was shown (that has the field).
        positions: source name -> 1-based position in which the fusor was shown it (when known).
        selected: source name of the Best-of-N pick, or None.
        selected_position: shown position of the Best-of-N pick, or None.
        skip: why the fusion is not analysed ("no fusion", "fallback", "empty", "no sources"), or None.
    """

    id: str
    field: str
    fused: str | None
    sources: dict[str, str]
    positions: dict[str, int]
    selected: str | None = None
    selected_position: int | None = None
    skip: str | None = None


def _method_parts(rec: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """(candidates, fusion, Best-of-N selection) of a record in the current format (either kind)."""
    cset = rec.get("candidates")
    candidates = cset.get("candidates") if isinstance(cset, Mapping) else None
    fusion = (method_result(rec, FUSION) or {}).get(FUSION)
    bon = (method_result(rec, BON) or {}).get("selection")
    return candidates, fusion, bon


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _choose_field(outputs: Mapping[str, Any], field_name: str | None, where: str) -> str:
    if field_name is not None:
        return field_name
    if len(outputs) == 1:
        return next(iter(outputs))
    for default in ("answer", "response"):
        if default in outputs:
            return default
    raise DataError(f"{where}: cannot tell which output field to analyse among {sorted(outputs)}; pass --field NAME")


def record_view(rec: Mapping[str, Any], *, field_name: str | None = None, where: str = "record") -> RecordView | None:
    """Extract fused text, sources, shown positions and the Best-of-N pick from one record.

    Returns None for a record whose status is ``"failed"``. ``where`` names the record in errors.

    Raises:
        DataError: the record's candidates or aggregator results are not shaped as expected.
    """
    if rec.get("status") == "failed":
        return None
    rid = str(rec.get("id"))
    where = f"{where} (id {rid})"
    candidates, fusion, bon = _method_parts(upgrade(rec, where=where))
    if not isinstance(candidates, list):
        raise DataError(f"{where}: no 'candidates' list (is this a synth or eval records file?)")
    if fusion is not None and not isinstance(fusion, Mapping):
        raise DataError(f"{where}: the fusion's details must be an object, not {type(fusion).__name__}")
    if bon is not None and not isinstance(bon, Mapping):
        raise DataError(f"{where}: Best-of-N's 'selection' must be an object, not {type(bon).__name__}")

    by_model: dict[str, int] = defaultdict(int)
    for cand in candidates:
        if not isinstance(cand, Mapping) or not isinstance(cand.get("index"), int) or "model" not in cand:
            raise DataError(f"{where}: every candidate needs an integer 'index' and a 'model'")
        by_model[str(cand["model"])] += 1
    names: dict[int, str] = {}
    for cand in candidates:
        model = str(cand["model"])
        name = f"{model}#{cand.get('sample', cand['index'])}" if by_model[model] > 1 else model
        if name in RESERVED_LABELS:
            name = f"{name}#model"
        if name in names.values():
            raise DataError(f"{where}: two candidates would both be called {name!r} (same model and sample)")
        names[cand["index"]] = name

    # the field: decided on the fused outputs when there are some, else on the candidates'
    fused_outputs = fusion.get("outputs") if fusion is not None else None
    probe = fused_outputs if isinstance(fused_outputs, Mapping) and fused_outputs else None
    if probe is None:
        probe = next(
            (c.get("outputs") for c in candidates if isinstance(c.get("outputs"), Mapping) and c.get("outputs")), {}
        )
    chosen = field_name or (_choose_field(probe, None, where) if probe else "answer")

    order = fusion.get("order") if fusion is not None else None
    if order is not None and (not isinstance(order, list) or not all(isinstance(i, int) for i in order)):
        raise DataError(f"{where}: fusion 'order' must be a list of candidate indices")
    positions = {names[i]: p for p, i in enumerate(order or [], 1) if i in names}
    shown = set(order) if order else None

    sources: dict[str, str] = {}
    for cand in candidates:
        outs = cand.get("outputs")
        if cand.get("error") or not isinstance(outs, Mapping) or outs.get(chosen) is None:
            continue
        if shown is not None and cand["index"] not in shown:
            continue  # the fusor never saw it (filtered out before fusion)
        sources[names[cand["index"]]] = _text(outs[chosen])

    fused: str | None = None
    skip: str | None = None
    if fusion is None:
        skip = "no fusion"
    elif fusion.get("fallback"):
        skip = "fallback"
    elif not isinstance(fused_outputs, Mapping) or fused_outputs.get(chosen) is None:
        skip = "no fusion"
    else:
        fused = _text(fused_outputs[chosen])
        if not fused:
            skip = "empty"
        elif not sources:
            skip = "no sources"
    if skip is not None:
        fused = None

    selected = selected_position = None
    if bon is not None and not bon.get("fallback") and isinstance(bon.get("index"), int):
        selected = names.get(bon["index"])
        bon_order = bon.get("order") if isinstance(bon.get("order"), list) else order
        if bon_order and bon["index"] in bon_order:
            selected_position = bon_order.index(bon["index"]) + 1
    return RecordView(rid, chosen, fused, sources, positions, selected, selected_position, skip)


def iter_views(
    path: str | os.PathLike[str], *, field_name: str | None = None, limit: int | None = None
) -> Iterator[RecordView]:
    """Stream :class:`RecordView` objects of a records file (skipping failed records)."""
    from fusion_dspy.records import iter_records

    if not Path(path).is_file():
        raise DataError("records file not found", path=str(path))
    for n, rec in enumerate(islice(iter_records(path), limit), 1):
        view = record_view(rec, field_name=field_name, where=f"{path}: record {n}")
        if view is not None:
            yield view

