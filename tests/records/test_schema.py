"""The record format: every record carries its version and kind; records of format 1 still load.

``tests/fixtures/records/*-v1.jsonl`` were written by the release before format 2 (eval and synth
against the fake server) and are never rewritten: they are what users have on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusion_dspy.aggregate import BON, FUSION, GREEDY, MAJORITY, ORACLE
from fusion_dspy.analysis import analyze_records, record_view
from fusion_dspy.errors import DataError
from fusion_dspy.eval.summary import summarize
from fusion_dspy.records import EVAL, FORMAT_VERSION, SYNTH, iter_records, method_result, read_records, stamp, upgrade

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "records"
EVAL_V1 = FIXTURES / "eval-v1.jsonl"
SYNTH_V1 = FIXTURES / "synth-v1.jsonl"


def test_format_1_eval_records_load_as_format_2():
    raw = list(iter_records(EVAL_V1))
    assert raw and all("format" not in r for r in raw)  # the fixture really is the old format
    for old, new in zip(raw, read_records(EVAL_V1), strict=True):
        assert (new["format"], new["kind"]) == (FORMAT_VERSION, EVAL)
        assert {k: v for k, v in new.items() if k not in ("format", "kind")} == old  # nothing else changed shape
        assert set(new["methods"]) == {GREEDY, BON, FUSION, ORACLE, MAJORITY} and set(new["by_n"]) == {"1"}
        assert new["candidates"]["candidates"] and method_result(new, FUSION)["fusion"]["order"]


def test_a_format_1_eval_run_is_still_summarised():
    summary = summarize(EVAL_V1)
    assert summary["counts"]["done"] == 2
    assert {(r["method"], r["n"]) for r in summary["rows"] if r["language"] == "all"} >= {(GREEDY, 1), (FUSION, 2), (FUSION, 1), (BON, 2)}


def test_format_1_synth_rows_load_as_format_2():
    raw = list(iter_records(SYNTH_V1))
    assert raw and all("format" not in r and "best_of_n" in r for r in raw)
    for old, new in zip(raw, read_records(SYNTH_V1), strict=True):
        assert (new["format"], new["kind"]) == (FORMAT_VERSION, SYNTH)
        assert new["inputs"] == {"prompt": old["prompt"]} and new["messages"] == old["messages"]
        assert new["candidates"]["candidates"] == old["candidates"] and new["candidates"]["output_fields"] == ["response"]
        assert new["methods"][FUSION]["fusion"] == old["fusion"] and new["methods"][BON]["selection"] == old["best_of_n"]
        assert new["methods"][FUSION]["usage"]["aggregation"] == old["usage"]["fusion"]
        assert new["answer_from"] == FUSION and new["usage"]["total"] == old["usage"]["total"]
        assert new["config"] == old["config"] and new["filters"] == old["filters"] and new["source"] == old["source"]


def test_analysis_reads_both_old_formats():
    for path in (EVAL_V1, SYNTH_V1):
        views = [record_view(rec) for rec in iter_records(path)]
        assert all(v.sources for v in views) and all(len(v.positions) == len(v.sources) for v in views)
        assert all(v.selected is not None for v in views)
        assert views == [record_view(rec) for rec in read_records(path)]  # the same as their upgraded form
        assert analyze_records(path, workers=1, progress=False).aggregate is not None


def test_current_records_pass_through_unchanged_and_mixed_files_read_alike(tmp_path):
    rec = {"id": "x", **stamp(SYNTH, {"config": {}, "inputs": {}, "candidates": {"candidates": []}, "methods": {}})}
    assert upgrade(rec) == rec and list(rec)[:3] == ["id", "format", "kind"]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(SYNTH_V1.read_text() + json.dumps(rec) + "\n")
    assert [(r["format"], r["kind"]) for r in read_records(mixed)] == [(FORMAT_VERSION, SYNTH)] * 3


def test_unreadable_records_say_why():
    with pytest.raises(DataError, match="newer fusion-dspy"):
        upgrade({"id": "x", "format": FORMAT_VERSION + 1, "kind": SYNTH})
    with pytest.raises(DataError, match="unknown kind"):
        upgrade({"id": "x", "format": FORMAT_VERSION, "kind": "other"})
    with pytest.raises(DataError, match="not a fusion-dspy record"):
        upgrade({"id": "x", "answer": 4})
    with pytest.raises(ValueError, match="needs candidates, methods"):
        stamp(EVAL, {"config": {}, "inputs": {}})
