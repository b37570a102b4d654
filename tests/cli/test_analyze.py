"""``fusion-dspy analyze`` on a small records fixture: every output written, bad input reported."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from fusion_dspy.cli.analyze import OUTPUT_FILES
from fusion_dspy.cli.main import app

TEACHER_A = "Preheat the oven to 200 C. Season the steak with salt and pepper on both sides."
TEACHER_B = "Sear the steak in a hot pan for two minutes per side, then roast it for ten minutes."
TEACHER_C = "Let the meat rest for five minutes before slicing <so the juices stay> inside & serve."


def _records(path, *, shape="synth"):
    fused = TEACHER_A[:40] + " Then " + TEACHER_B[:50] + "! " + TEACHER_C[30:]
    cands = [
        {"index": i, "model": m, "sample": 0, "outputs": {"answer": t}, "error": None}
        for i, (m, t) in enumerate([("teacher-a", TEACHER_A), ("teacher-b", TEACHER_B), ("teacher-c", TEACHER_C)])
    ]
    rows = []
    for i in range(4):
        fusion = {
            "outputs": {"answer": fused},
            "comparison": "c",
            "order": [(i + k) % 3 for k in range(3)],
            "fallback": None,
        }
        bon = {"index": i % 3, "scores": {"0": 1.0, "1": 2.0, "2": 3.0}, "method": "best_of_n", "fallback": None}
        if shape == "synth-v1":  # a row of the first synth format (still read)
            rows.append({"id": f"p{i}", "messages": [], "candidates": cands, "fusion": fusion, "best_of_n": bon})
        else:  # the current format, docs/records.md
            rows.append({
                "id": f"p{i}", "format": 2, "kind": shape, "config": {}, "inputs": {"question": "q"},
                "candidates": {"inputs": {"question": "q"}, "candidates": cands, "output_fields": ["answer"], "usage": {}},
                "methods": {
                    "fusion": {"outputs": fusion["outputs"], "fallback": None, "fusion": fusion, "status": "ok"},
                    "bon": {"outputs": cands[i % 3]["outputs"], "fallback": None, "selection": bon, "status": "ok"},
                },
            })
    rows.append({"id": "failed", "status": "failed", "error": "boom"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return fused


@pytest.mark.parametrize("shape,workers", [("synth", "1"), ("eval", "2"), ("synth-v1", "1")])
def test_analyze_writes_every_output(tmp_path, shape, workers):
    records = tmp_path / "records.jsonl"
    fused = _records(records, shape=shape)
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["analyze", str(records), "--out", str(out), "--workers", workers])
    assert result.exit_code == 0, result.output
    for name in OUTPUT_FILES:
        assert (out / name).stat().st_size > 0, name
    for png in ("sources.png", "positions.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["records"] == 4 and summary["analysed"] == 4 and summary["field"] == "answer"
    shares = {r["name"]: r["char_share"] for r in summary["sources"]}
    assert set(shares) == {"teacher-a", "teacher-b", "teacher-c", "multiple", "unmatched"}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["teacher-a"] > 0.2 and shares["teacher-b"] > 0.2 and shares["teacher-c"] > 0.2
    # each teacher was shown first once or twice over 4 records; positions cover every teacher
    assert [r["position"] for r in summary["positions"]["rows"]] == [1, 2, 3]
    assert summary["best_of_n"]["records"] == 4

    with (out / "contributions.csv").open() as fh:
        groups = {row["group"] for row in csv.DictReader(fh)}
    assert groups == {"source", "position", "bon_source", "bon_position"}
    page = (out / "example.html").read_text()
    assert "&lt;so the juices stay&gt;" in page and "<so the" not in page
    assert "teacher-c" in page and str(len(fused)) in page
    assert "| teacher-a |" in (out / "contributions.md").read_text()


def test_analyze_limit_field_and_example(tmp_path):
    records = tmp_path / "records.jsonl"
    _records(records)
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        [
            "analyze",
            str(records),
            "--out",
            str(out),
            "--workers",
            "1",
            "--limit",
            "2",
            "--field",
            "answer",
            "--example",
            "p1",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records"] == 2 and summary["example_id"] == "p1"


def test_bad_json_line_names_file_and_line(tmp_path):
    records = tmp_path / "records.jsonl"
    _records(records)
    lines = records.read_text().splitlines(keepends=True)
    lines.insert(2, '{"id": "x", broken\n')
    records.write_text("".join(lines))
    result = CliRunner().invoke(app, ["analyze", str(records), "--out", str(tmp_path / "o"), "--workers", "1"])
    assert result.exit_code != 0
    from fusion_dspy.errors import DataError

    assert isinstance(result.exception, DataError)
    assert f"{records}:3:" in str(result.exception)


def test_main_turns_data_error_into_one_line(tmp_path, capsys, monkeypatch):
    from fusion_dspy.cli import main as main_mod

    missing = tmp_path / "nope.jsonl"
    monkeypatch.setattr("sys.argv", ["fusion-dspy", "analyze", str(missing), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exc:
        main_mod.main()
    assert exc.value.code == 2
    assert "nope.jsonl" in capsys.readouterr().err
