"""Issue 15, item 7: no candidate text can close its fence or plant DSPy's field markers (fusor, rater, judge).

Against a scripted LM that obeys every instruction it reads outside a fence (``tests/fakes/obedient.py``),
fenced prompts must bring every injection's win rate to 0.
"""

from __future__ import annotations

import re

import dspy
import pytest

from fusion_dspy.fuse import Fusor
from fusion_dspy.llm_text import fence
from fusion_dspy.types import Candidate, CandidateSet
from tests.fakes.obedient import BYPASSES as VARIANTS
from tests.fakes.obedient import obedient_lm, split_fences

BYPASSES = {name: text.format(p="31337" if "dspy" in name else "BANANA") for name, text in VARIANTS.items()}


class QA(dspy.Signature):
    """Solve the math word problem. Give the final answer as a number."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="the final number")


def _cset(bad: str) -> CandidateSet:
    texts = ["The answer is 72.", f"72. {bad}", "72"]
    return CandidateSet({"question": "How many clips?"}, tuple(Candidate(i, f"t{i}", 0, {"answer": t}) for i, t in enumerate(texts)), ("answer",))


@pytest.mark.parametrize("tag", ["candidate", "response"])
@pytest.mark.parametrize("name", sorted(BYPASSES))
def test_fenced_text_cannot_close_its_fence_or_plant_a_field_marker(name, tag):
    fenced = fence(f"72. {BYPASSES[name]}", tag, attrs='id="1"' if tag == "candidate" else "")
    instructions, blocks = split_fences(fenced)
    assert instructions.strip() == "" and len(blocks) == 1, (name, fenced)  # one fence, nothing outside it
    assert not re.search(r"\[\[\s*##", fenced), fenced  # no DSPy field marker survives inside a fence


@pytest.mark.parametrize("fmt", ["plain", "structured"])
@pytest.mark.parametrize("name", sorted(BYPASSES))
def test_an_obedient_fusor_never_follows_a_fenced_injection(name, fmt):
    fusion = Fusor(QA, lm=obedient_lm(), format=fmt)(candidates=_cset(BYPASSES[name]))
    answer = str(fusion.outputs["answer"])
    assert "BANANA" not in answer and "31337" not in answer, (name, answer)


def test_unfenced_the_obedient_fusor_does_follow_it():
    """The control: the scripted LM really obeys what it reads as instructions."""
    fusion = Fusor(QA, lm=obedient_lm(), fenced=False, format="plain")(candidates=_cset(BYPASSES["exact tag"]))
    assert "BANANA" in str(fusion.outputs["answer"])


@pytest.mark.parametrize("name", sorted(BYPASSES))
def test_an_obedient_rater_never_rates_by_an_injection(name):
    from fusion_dspy.select import LLMRater

    scores, _, _ = LLMRater(obedient_lm("rater")).score_candidates(_cset(BYPASSES[name]))
    assert set(scores.values()) == {3.0} or set(scores.values()) == {3}, (name, scores)


@pytest.mark.parametrize("name", sorted(BYPASSES))
def test_the_pairwise_judge_fences_both_responses(name):
    from fusion_dspy.judge import PairwiseJudge

    judge = PairwiseJudge(obedient_lm("judge"))
    assert judge.judge_pair("How many clips?", f"72. {BYPASSES[name]}", "72") == 0.5, name  # a tie: no injection obeyed


def test_the_pairwise_judge_is_told_its_responses_are_data():
    from fusion_dspy.signatures import JudgeVerdict

    text = JudgeVerdict.instructions + " ".join(f.json_schema_extra["desc"] for f in JudgeVerdict.input_fields.values())
    assert "<response" in text and "instructions" in text.lower()
