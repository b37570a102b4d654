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
from fusion_dspy.programs.arena import ArenaJudge, head_to_head, pairwise_scores, parse_verdict

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
    assert arena.load_references(refs) == {"th-0001": "ต้มน้ำ..."}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"uid": "1", "model": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:1: no answer"):
        arena.load_references(bad)


# --- the judge -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("[[A>>B]]", "A>>B"),
        ("My final verdict is [[B>A]].", "B>A"),
        ("[[ A = B ]]", "A=B"),
        ("first [[A>B]] then on reflection [[B>>A]]", "B>>A"),
        ("[[A]]", "A>B"),
        ("[[B]]", "B>A"),
        ("[[tie]]", "A=B"),
        ("[[C]]", "A=B"),
        ("A<B", "B>A"),
        ("Assistant A is better: A>B", "A>B"),
        ("B", "B>A"),
        ("**A=B**", "A=B"),
        ("［［A＞B］］".replace("［［", "[[").replace("］］", "]]"), "A>B"),
        ("A is better", "A>B"),
        ("Response B is much better than A.", "B>>A"),
        ("It is a tie.", "A=B"),
        ("I cannot decide", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_verdict(text, label):
    assert parse_verdict(text) == label


def test_judge_pair_both_orders_cancel_position_bias():
    # A judge that always prefers the first position: A wins as A, loses as B -> 0.5
    judge = ArenaJudge(lm=_verdicts("[[A>B]]", "[[A>B]]"))
    assert judge.judge_pair("prompt", "x", "y") == 0.5
    # A consistently better: wins as A (A>B) and as B (B>A) -> 1.0
    judge = ArenaJudge(lm=_verdicts("[[A>>B]]", "[[B>A]]"))
    assert judge.judge_pair("prompt", "x", "y") == 1.0
    # consistently worse
    judge = ArenaJudge(lm=_verdicts("[[B>A]]", "[[A>B]]"))
    assert judge.judge_pair("prompt", "x", "y") == 0.0


def test_judge_sees_responses_swapped_in_the_second_order():
    lm = _verdicts("[[A=B]]", "[[A=B]]")
    ArenaJudge(lm=lm).judge_pair("the prompt", "FIRST-ANSWER", "SECOND-ANSWER")
    first, second = (entry["messages"][-1]["content"] for entry in lm.history[-2:])
    assert first.index("FIRST-ANSWER") < first.index("SECOND-ANSWER")
    assert second.index("SECOND-ANSWER") < second.index("FIRST-ANSWER")


def test_ties_count_half():
    assert ArenaJudge(lm=_verdicts("[[A=B]]", "[[A=B]]")).judge_pair("p", "x", "y") == 0.5
    assert ArenaJudge(lm=_verdicts("[[A>B]]", "[[A=B]]")).judge_pair("p", "x", "y") == 0.75


def test_unparseable_verdict_counts_as_a_tie_not_a_crash(caplog):
    judge = ArenaJudge(lm=_verdicts("[[A>B]]", "I refuse to judge"))
    with caplog.at_level("WARNING"):
        assert judge.judge_pair("p", "x", "y") == 0.75
    assert "no verdict" in caplog.text
    # output that the adapter cannot parse at all (missing fields): both orders neutral
    judge = ArenaJudge(lm=DummyLM([{"comparison": "only this"}] * 4))
    assert judge.judge_pair("p", "x", "y") == 0.5


def test_judge_uses_settings_lm_by_default_and_judge_lm_when_given():
    settings_lm = _verdicts("[[A>B]]", "[[B>A]]")
    with dspy.context(lm=settings_lm):
        assert ArenaJudge().judge_pair("p", "x", "y") == 1.0
    assert len(settings_lm.history) == 2
    own = _verdicts("[[B>A]]", "[[A>B]]")
    with dspy.context(lm=settings_lm):
        assert ArenaJudge(lm=own).judge_pair("p", "x", "y") == 0.0
    assert len(own.history) == 2 and len(settings_lm.history) == 2


def test_head_to_head_and_pairwise_scores():
    lm = _verdicts("[[A>B]]", "[[B>A]]", "[[A=B]]", "[[A=B]]", "[[B>>A]]", "[[A>>B]]")
    judge = ArenaJudge(lm=lm)
    prompts = ["p1", "p2", "p3"]
    a = [dspy.Prediction(response="a1"), "a2", {"response": "a3"}]
    b = ["b1", "b2", "b3"]
    assert pairwise_scores(prompts, a, b, judge) == [1.0, 0.5, 0.0]
    lm2 = _verdicts("[[A>B]]", "[[B>A]]", "[[A=B]]", "[[A=B]]", "[[B>>A]]", "[[A>>B]]")
    assert head_to_head(prompts, a, b, ArenaJudge(lm=lm2)) == pytest.approx(0.5)
    with pytest.raises(ConfigurationError, match="lengths differ"):
        head_to_head(prompts, a[:2], b, judge)
    with pytest.raises(ConfigurationError, match="at least one"):
        head_to_head([], [], [], judge)


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


def test_judge_asks_for_a_verdict_label_by_schema():
    """Small local judges write prose verdicts; the schema restricts the verdict to the five labels."""
    lm = _verdicts("[[A>B]]", "[[B>A]]")
    ArenaJudge(lm=lm).judge_pair("p", "a", "b")
    schema = lm.history[-1]["kwargs"]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["verdict"]["enum"] == ["[[A>>B]]", "[[A>B]]", "[[A=B]]", "[[B>A]]", "[[B>>A]]"]
    assert schema["properties"]["comparison"]["maxLength"] > 0
