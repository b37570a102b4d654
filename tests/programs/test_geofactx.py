"""GeoFactX: loader (language names to codes, any language), fuzzy answer matching, metric."""

from __future__ import annotations

import json
from pathlib import Path

import dspy
import pytest
from dspy.utils import DummyLM

from fusion_dspy.data import BadRows
from fusion_dspy.errors import DataError
from fusion_dspy.programs import geofactx
from fusion_dspy.programs.geofactx import match_score, normalize_text

FIXTURES = Path(__file__).parent / "fixtures" / "geofactx"


def test_load_real_rows():
    examples = geofactx.load(FIXTURES / "geofact_x_test.jsonl")
    assert [e.language for e in examples] == ["en", "hi", "ja", "en", "th"]  # row 4 is labelled english
    assert examples[0].id == "geofact_x_test:1"
    assert examples[0].inputs().toDict() == {"question": examples[0].question}
    # the corrected list drops the invalid "who" option of answer_list
    hindi = examples[1]
    assert "हू" in hindi.answer_list and "हू" not in hindi.answers
    assert hindi.language_name == "hindi"


def test_unseen_languages_and_fallback_to_answer_list():
    examples = geofactx.load(FIXTURES / "geofact_x_other.jsonl")
    assert [e.language for e in examples] == ["ko", "klingon"]
    assert examples[1].answers == ["Danube", "Donau"]  # corrected list empty: answer_list serves


def test_limit_per_language_across_a_folder():
    examples = geofactx.load(FIXTURES, limit=1)
    assert [e.language for e in examples] == ["ko", "klingon", "en", "hi", "ja", "th"]


def test_normalize_text():
    assert normalize_text("  Woods-Hole,  INSTITUTION! ") == "woods hole institution"
    assert normalize_text("ＷＨＯＩ") == "whoi"  # NFKC folds fullwidth letters


@pytest.mark.parametrize(
    ("predicted", "golds", "correct"),
    [
        ("WHOI", ["Woods Hole Oceanographic Institution", "WHOI"], True),
        ("The Woods Hole Oceanographic Institution (WHOI) in Massachusetts", ["Woods Hole Oceanographic Institution"], True),
        ("woods-hole oceanographic institute", ["Woods Hole Oceanographic Institution"], True),
        ("WHO", ["Woods Hole Oceanographic Institution", "WHOI"], False),
        ("Institution", ["Woods Hole Oceanographic Institution"], False),
        ("ウッズホール海洋研究所です", ["ウッズホール海洋研究所 (Uzzuhōru Kaiyō Kenkyūjo)"], True),
        ("Uzzuhōru Kaiyō Kenkyūjo", ["ウッズホール海洋研究所 (Uzzuhōru Kaiyō Kenkyūjo)"], True),
        ("1945年", ["1945"], True),
        ("In 1945.", ["1945"], True),
        ("1946", ["1945"], False),
        ("Paris", ["Paris, France"], True),
        ("Lyon", ["Paris"], False),
        ("", ["Paris"], False),
        # a short gold in a script without Latin word boundaries may sit inside longer text
        ("서울입니다", ["서울"], True),
        ("WHOIS", ["WHOI"], False),
    ],
)
def test_fuzzy_match(predicted, golds, correct):
    assert (match_score(predicted, golds) >= geofactx.DEFAULT_THRESHOLD) is correct


def test_metric_threshold_and_normalize():
    example = dspy.Example(id="x", language="en", question="q", answers=["Danube"]).with_inputs("question")
    assert geofactx.metric(example, dspy.Prediction(answer="The Danube")) == 1.0
    assert geofactx.metric(example, dspy.Prediction(answer="Dnieper")) == 0.0
    assert geofactx.metric(example, "Danube") == 1.0
    assert geofactx.metric(example, dspy.Prediction(answer="Danub")) == 1.0  # a typo within the threshold
    assert geofactx.make_task(threshold=100).metric(example, dspy.Prediction(answer="Danub")) == 0.0
    assert geofactx.normalize(dspy.Prediction(answer=" The DANUBE. ")) == "the danube"
    assert geofactx.normalize(dspy.Prediction(answer="...")) is None


def test_program_runs_with_dummy_lm_and_metric_scores_it():
    example = geofactx.load(FIXTURES / "geofact_x_other.jsonl")[0]
    with dspy.context(lm=DummyLM([{"reasoning": "수도는 서울이다.", "answer": "서울특별시"}])):
        prediction = geofactx.TASK.program()(**example.inputs())
    assert geofactx.TASK.metric(example, prediction) == 1.0


# --- bad input -------------------------------------------------------------------------------------

GOOD = {"question": "Capital of Kenya?", "answer_list": ["Nairobi"], "language": "english"}


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"question": "x", ', "bad JSON"),
        (json.dumps({"question": "x", "language": "english"}), "missing field 'answer_list'"),
        (json.dumps({"question": "x", "answer_list": "Nairobi", "language": "english"}), "'answer_list' should be list"),
        (json.dumps({"question": "x", "answer_list": [{"a": 1}], "language": "english"}), "list of strings"),
        (json.dumps({"question": "x", "answer_list": [], "language": "english"}), "no answers"),
        (json.dumps({"question": "x", "answer_list": ["y"], "language": 7}), "'language' should be str"),
        (json.dumps({"question": " ", "answer_list": ["y"], "language": "english"}), "empty question"),
    ],
)
def test_bad_rows(tmp_path, bad_line, message):
    f = tmp_path / "geo.jsonl"
    f.write_text(json.dumps(GOOD) + "\n" + bad_line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        geofactx.load(f)
    assert info.value.path == str(f) and info.value.line == 2
    bad = BadRows()
    assert len(geofactx.load(f, skip_bad_rows=True, bad_rows=bad)) == 1
    assert bad.count == 1


def test_empty_and_non_utf8(tmp_path):
    empty = tmp_path / "geo.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no rows"):
        geofactx.load(empty)
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes(json.dumps(GOOD, ensure_ascii=False).replace("Kenya", "Kény").encode("latin-1") + b"\n")
    with pytest.raises(DataError, match="UTF-8") as info:
        geofactx.load(bad)
    assert info.value.path == str(bad)
