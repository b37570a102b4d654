"""Arena-Hard: both data formats, language from rows and paths, the pairwise judge (both orders)."""

from __future__ import annotations

import json
from pathlib import Path

import dspy
import pytest
from dspy.utils import DummyLM

from fusion_dspy.data import BadRows
from fusion_dspy.errors import ConfigurationError, DataError
from fusion_dspy.programs import arena

FIXTURES = Path(__file__).parent / "fixtures" / "arena"


def _verdicts(*labels: str) -> DummyLM:
    return DummyLM([{"comparison": "compared", "verdict": label} for label in labels])


# --- loading ---------------------------------------------------------------------------------------


def test_v2_format():
    examples = arena.load(FIXTURES / "arena_hard_v2" / "question.jsonl")
    assert [e.id for e in examples] == ["en:807ddb4c42a7432b", "en:74379ac8ceed44c0"]
    assert examples[0].language == "en"
    assert examples[0].prompt == "如何证明拉格朗日中值定理"
    assert examples[0].subcategory == "math"
    assert examples[0].inputs().toDict() == {"prompt": examples[0].prompt}


def test_multilingual_v01_formats_and_language_from_category():
    examples = arena.load(FIXTURES / "m-arena-hard-de" / "question.jsonl")
    assert {e.language for e in examples} == {"de"}
    assert examples[0].prompt == "C# - Hashtags aus Text extrahieren"
    english = arena.load(FIXTURES / "arena-hard-v0.1" / "question.jsonl")
    assert {e.language for e in english} == {"en"}
    assert english[0].uid in {e.uid for e in examples}


def test_folder_with_unseen_language():
    examples = arena.load(FIXTURES, limit=1)
    assert sorted(e.language for e in examples) == ["de", "en", "th"]
    th = next(e for e in examples if e.language == "th")
    assert th.id == "th:th-0001"


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("data/m-arena-hard-th/question.jsonl", "th"),
        ("data/th/question.jsonl", "th"),
        ("data/ko.jsonl", "ko"),
        ("data/question_ko.jsonl", "ko"),
        ("data/m-arena-hard-pt_BR/question.jsonl", "pt_BR"),
        ("data/m-arena-hard-zh_TW/question.jsonl", "zh_TW"),
        ("data/arena-hard-v0.1/question.jsonl", None),
        ("data/arena_hard_v2/question.jsonl", None),
    ],
)
def test_language_from_path(path, language):
    assert arena.language_from_path(path) == language


def test_language_from_folder_when_rows_do_not_say(tmp_path):
    folder = tmp_path / "sw"
    folder.mkdir()
    (folder / "question.jsonl").write_text(json.dumps({"uid": "1", "prompt": "Habari?"}) + "\n", encoding="utf-8")
    assert arena.load(tmp_path)[0].language == "sw"
    assert arena.load(tmp_path, language="swa")[0].language == "swa"


def test_references_attached(tmp_path):
    refs = tmp_path / "answers.jsonl"
    rows = [
        {"uid": "807ddb4c42a7432b", "answer": "Use Rolle's theorem."},
        {"uid": "74379ac8ceed44c0", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": {"answer": "-π²/48"}}]},
    ]
    refs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    examples = arena.load(FIXTURES / "arena_hard_v2", references=refs)
    assert [e.reference for e in examples] == ["Use Rolle's theorem.", "-π²/48"]
    task = arena.make_task(references=refs)
    assert task.has_gold and task.load(FIXTURES / "arena_hard_v2")[0].reference == "Use Rolle's theorem."
    assert not arena.TASK.has_gold


def test_v01_model_answer_format_as_references(tmp_path):
    refs = tmp_path / "gpt.jsonl"
    row = {"question_id": "th-0001", "choices": [{"index": 0, "turns": [{"content": "ต้มน้ำ..."}]}]}
    refs.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    found = arena.load_references(refs)
    assert dict(found.answers) == {(None, "th-0001"): "ต้มน้ำ..."} and found.model == "gpt"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"uid": "1", "model": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:1: no answer"):
        arena.load_references(bad)


# --- the metric ------------------------------------------------------------------------------------


def test_metric_against_reference_and_without():
    judge_lm = _verdicts("[[A>B]]", "[[B>A]]")
    task = arena.make_task(judge_lm=judge_lm)
    example = dspy.Example(id="en:1", prompt="p", reference="ref", language="en").with_inputs("prompt")
    assert task.metric(example, dspy.Prediction(response="mine")) == 1.0
    no_ref = dspy.Example(id="en:2", prompt="p", language="en").with_inputs("prompt")
    with pytest.raises(ConfigurationError, match="no reference answer"):
        task.metric(no_ref, dspy.Prediction(response="mine"))


def test_program_runs_with_dummy_lm_and_metric_scores_it():
    example = arena.load(FIXTURES / "m-arena-hard-th" / "question.jsonl")[0]
    example = example.copy(reference="ตอบ").with_inputs("prompt")
    with dspy.context(lm=DummyLM([{"response": "สูตรต้มยำกุ้ง ..."}])):
        prediction = arena.TASK.program()(**example.inputs())
    assert prediction.response.startswith("สูตร")
    with dspy.context(lm=_verdicts("[[A=B]]", "[[B>A]]")):
        assert arena.TASK.metric(example, prediction) == 0.75


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"uid": "2", "prompt": ', "bad JSON"),
        (json.dumps({"uid": "2"}), "missing field 'prompt'"),
        (json.dumps({"prompt": "hi"}), "missing field 'uid'"),
        (json.dumps({"uid": "2", "prompt": ["hi"]}), "'prompt' should be str"),
        (json.dumps({"question_id": "2", "turns": []}), "non-empty list"),
        (json.dumps({"question_id": "2", "turns": [{"content": 3}]}), "content"),
        (json.dumps({"uid": "1", "prompt": "again"}), "duplicate id"),
    ],
)
def test_bad_rows(tmp_path, bad_line, message):
    f = tmp_path / "question.jsonl"
    f.write_text(json.dumps({"uid": "1", "prompt": "hello"}) + "\n" + bad_line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        arena.load(f)
    assert info.value.path == str(f) and info.value.line == 2
    bad = BadRows()
    assert [e.uid for e in arena.load(f, skip_bad_rows=True, bad_rows=bad)] == ["1"]
    assert bad.count == 1


def test_empty_and_non_utf8(tmp_path):
    empty = tmp_path / "question.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        arena.load(empty)
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes(b'{"uid": "1", "prompt": "caf\xe9"}\n')
    with pytest.raises(DataError, match="UTF-8") as info:
        arena.load(bad)
    assert info.value.path == str(bad)


def _answer_row(uid, answer, model="gemini-2.5-pro"):
    """A row of Arena-Hard v2.0's model_answer files."""
    return {"uid": uid, "ans_id": f"a-{uid}", "model": model,
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": {"answer": answer}}], "tstamp": 0}


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_model_answer_folder_per_language_matches_language_and_id(tmp_path):
    # m-ArenaHard shares question ids across languages: each language's references come from its own folder
    uid = "8fc630418a6648de93c52240c9a27086"
    _write(tmp_path / "m-arena-hard-de" / "model_answer" / "gemini-2.5-pro.jsonl", [_answer_row(uid, "REF-de")])
    _write(tmp_path / "m-arena-hard-th" / "model_answer" / "gemini-2.5-pro.jsonl", [_answer_row("th-0001", "REF-th")])
    _write(tmp_path / "m-arena-hard-de" / "question.jsonl", [{"uid": "x", "prompt": "not an answer"}])
    refs = arena.load_references(tmp_path)
    assert refs.model == "gemini-2.5-pro" and dict(refs.answers) == {("de", uid): "REF-de", ("th", "th-0001"): "REF-th"}
    examples = arena.load(FIXTURES, references=refs)
    by_id = {e.id: e.get("reference") for e in examples}
    assert by_id[f"de:{uid}"] == "REF-de" and by_id["th:th-0001"] == "REF-th"
    assert by_id["en:8fc630418a6648de93c52240c9a27086"] is None  # no English reference: not another language's
    # a folder of answers without languages applies to every language
    flat = _write(tmp_path / "flat" / "model_answer" / "m.jsonl", [_answer_row(uid, "REF-any", model="m")])
    assert {e.language: e.get("reference") for e in arena.load(FIXTURES, references=flat.parent) if e.uid == uid} == {
        "de": "REF-any", "en": "REF-any"}


def test_several_reference_models_need_a_choice(tmp_path):
    folder = tmp_path / "arena-hard-v2.0" / "model_answer"
    _write(folder / "gemini-2.5-pro.jsonl", [_answer_row("807ddb4c42a7432b", "pro")])
    _write(folder / "gemini-2.5-flash.jsonl", [_answer_row("807ddb4c42a7432b", "flash", model="gemini-2.5-flash")])
    with pytest.raises(ConfigurationError, match=r"2 models \(gemini-2.5-flash, gemini-2.5-pro\).*--reference-model"):
        arena.load_references(folder)
    assert arena.load_references(folder, model="gemini-2.5-flash").get("en", "807ddb4c42a7432b") == "flash"
    with pytest.raises(ConfigurationError, match="no answers of model 'gpt-4o'; models found: gemini-2.5-flash, gemini-2.5-pro"):
        arena.load_references(folder, model="gpt-4o")
    task = arena.make_task(references=folder, reference_model="gemini-2.5-pro")
    assert task.options == {"references": str(folder), "reference_model": "gemini-2.5-pro"}
    assert task.load(FIXTURES / "arena_hard_v2")[0].reference == "pro"
    assert "gemini-2.5-pro" in task.metric_label


def test_configure_makes_the_task_with_references_and_rejects_foreign_options(tmp_path):
    refs = _write(tmp_path / "r.jsonl", [_answer_row("807ddb4c42a7432b", "ref")])
    task = arena.TASK.configure(references=refs, reference_model=None)
    assert task.has_gold and task.baseline_method is None and task.options["reference_model"] == "gemini-2.5-pro"
    assert arena.TASK.configure() is arena.TASK
    with pytest.raises(ConfigurationError, match=r"task 'arena' has no option 'oracle_metric' \(its options: judge_lm, references"):
        arena.TASK.configure(oracle_metric="chrf")
