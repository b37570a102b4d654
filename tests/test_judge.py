"""The LLM judges: the pairwise judge (both orders, ties half, verdict parsing) and the reasoning judge."""

from __future__ import annotations

import dspy
import pytest
from dspy.utils import DummyLM

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.judge import PairwiseJudge, ReasoningJudge, head_to_head, pairwise_scores, parse_verdict


def _verdicts(*labels: str) -> DummyLM:
    return DummyLM([{"comparison": "compared", "verdict": label} for label in labels])


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
    judge = PairwiseJudge(lm=_verdicts("[[A>B]]", "[[A>B]]"))
    assert judge.judge_pair("prompt", "x", "y") == 0.5
    # A consistently better: wins as A (A>B) and as B (B>A) -> 1.0
    judge = PairwiseJudge(lm=_verdicts("[[A>>B]]", "[[B>A]]"))
    assert judge.judge_pair("prompt", "x", "y") == 1.0
    # consistently worse
    judge = PairwiseJudge(lm=_verdicts("[[B>A]]", "[[A>B]]"))
    assert judge.judge_pair("prompt", "x", "y") == 0.0


def test_judge_sees_responses_swapped_in_the_second_order():
    lm = _verdicts("[[A=B]]", "[[A=B]]")
    PairwiseJudge(lm=lm).judge_pair("the prompt", "FIRST-ANSWER", "SECOND-ANSWER")
    first, second = (entry["messages"][-1]["content"] for entry in lm.history[-2:])
    assert first.index("FIRST-ANSWER") < first.index("SECOND-ANSWER")
    assert second.index("SECOND-ANSWER") < second.index("FIRST-ANSWER")


def test_ties_count_half():
    assert PairwiseJudge(lm=_verdicts("[[A=B]]", "[[A=B]]")).judge_pair("p", "x", "y") == 0.5
    assert PairwiseJudge(lm=_verdicts("[[A>B]]", "[[A=B]]")).judge_pair("p", "x", "y") == 0.75


def test_unparseable_verdict_counts_as_a_tie_not_a_crash(caplog):
    judge = PairwiseJudge(lm=_verdicts("[[A>B]]", "I refuse to judge"))
    with caplog.at_level("WARNING"):
        assert judge.judge_pair("p", "x", "y") == 0.75
    assert "no verdict" in caplog.text
    # output that the adapter cannot parse at all (missing fields): both orders neutral
    judge = PairwiseJudge(lm=DummyLM([{"comparison": "only this"}] * 4))
    assert judge.judge_pair("p", "x", "y") == 0.5


def test_judge_uses_settings_lm_by_default_and_judge_lm_when_given():
    settings_lm = _verdicts("[[A>B]]", "[[B>A]]")
    with dspy.context(lm=settings_lm):
        assert PairwiseJudge().judge_pair("p", "x", "y") == 1.0
    assert len(settings_lm.history) == 2
    own = _verdicts("[[B>A]]", "[[A>B]]")
    with dspy.context(lm=settings_lm):
        assert PairwiseJudge(lm=own).judge_pair("p", "x", "y") == 0.0
    assert len(own.history) == 2 and len(settings_lm.history) == 2


def test_head_to_head_and_pairwise_scores():
    lm = _verdicts("[[A>B]]", "[[B>A]]", "[[A=B]]", "[[A=B]]", "[[B>>A]]", "[[A>>B]]")
    judge = PairwiseJudge(lm=lm)
    prompts = ["p1", "p2", "p3"]
    a = [dspy.Prediction(response="a1"), "a2", {"response": "a3"}]
    b = ["b1", "b2", "b3"]
    assert pairwise_scores(prompts, a, b, judge) == [1.0, 0.5, 0.0]
    lm2 = _verdicts("[[A>B]]", "[[B>A]]", "[[A=B]]", "[[A=B]]", "[[B>>A]]", "[[A>>B]]")
    assert head_to_head(prompts, a, b, PairwiseJudge(lm=lm2)) == pytest.approx(0.5)
    with pytest.raises(ConfigurationError, match="lengths differ"):
        head_to_head(prompts, a[:2], b, judge)
    with pytest.raises(ConfigurationError, match="at least one"):
        head_to_head([], [], [], judge)


def test_judge_asks_for_a_verdict_label_by_schema():
    """Small local judges write prose verdicts; the schema restricts the verdict to the five labels."""
    lm = _verdicts("[[A>B]]", "[[B>A]]")
    PairwiseJudge(lm=lm).judge_pair("p", "a", "b")
    schema = lm.history[-1]["kwargs"]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["verdict"]["enum"] == ["[[A>>B]]", "[[A>B]]", "[[A=B]]", "[[B>A]]", "[[B>>A]]"]
    assert schema["properties"]["comparison"]["maxLength"] > 0


# --- the reasoning judge ---------------------------------------------------------------------------


def _grades(*grades) -> DummyLM:
    return DummyLM([{"analysis": "looked at it", "score": g} for g in grades])


def test_reasoning_grade_maps_1_to_5_onto_0_to_1_and_sees_the_reference():
    lm = _grades(4)
    out = ReasoningJudge(lm=lm)(question="Capital of Kenya?", accepted_answers=["Nairobi"], reasoning="Kenya's capital is Nairobi.",
                                answer="Nairobi", reference_reasoning="<step> Nairobi is the capital.")
    assert (out.grade, out.score) == (4, 0.75)
    prompt = lm.history[-1]["messages"][-1]["content"]
    assert "Nairobi is the capital" in prompt and "<response>" in prompt and "Answer: Nairobi" in prompt
    assert ReasoningJudge(lm=_grades(1))(question="q", accepted_answers=["a"], reasoning="r", answer="a").score == 0.0
    assert ReasoningJudge(lm=_grades(5))(question="q", accepted_answers=["a"], reasoning="r", answer="a").score == 1.0


def test_an_unreadable_grade_is_retried_then_no_score():
    judge = ReasoningJudge(lm=_grades(9, 3))  # 9 is outside 1..5: one retry reads 3
    assert judge(question="q", accepted_answers=["a"], reasoning="r", answer="a").score == 0.5
    none = ReasoningJudge(lm=DummyLM([{"analysis": "no grade here"}] * 4))(question="q", accepted_answers=["a"], reasoning="r", answer="a")
    assert none.score is None and none.grade is None


def test_judges_without_a_model_say_how_to_give_one():
    with pytest.raises(ConfigurationError, match="--judge"):
        ReasoningJudge()(question="q", accepted_answers=["a"], reasoning="r", answer="a")
    with pytest.raises(ConfigurationError, match="--judge"):
        PairwiseJudge().judge_pair("p", "a", "b")
