"""Instruction tuning: only the fusor instruction changes, the held-out metric improves, and the
result loads back into FusionOfN."""

from __future__ import annotations

import json

import dspy
import pytest

from fusion_dspy.aggregate import FusionOfN
from fusion_dspy.errors import ConfigurationError
from fusion_dspy.optimizers.cache import CandidateCache
from fusion_dspy.optimizers.instruction import CachedFusion, check_budget, feedback_metric, split_examples, tune_instruction
from fusion_dspy.programs import mgsm
from fusion_dspy.signatures import PLAIN_FUSION_INSTRUCTION
from tests.optimizers.fakes import TASK, examples, magic_fusor, proposer, teacher


@pytest.mark.parametrize(("optimizer", "budget"), [("gepa", 12), ("miprov2", 2), ("copro", 2)])
def test_tuning_finds_the_magic_instruction_and_improves_the_held_out_metric(tmp_path, optimizer, budget):
    good = teacher("good")
    fusor = magic_fusor()
    result = tune_instruction(
        TASK, examples(3), examples(3, start=3), teachers={"good": good}, fusor_lm=fusor, proposer_lm=proposer(),
        cache=CandidateCache(tmp_path / "c.jsonl", task_name="sums"), optimizer=optimizer, budget=budget, n=2,
        temperature=0.5, out_dir=tmp_path / "out",
    )
    assert result.instruction_before == PLAIN_FUSION_INSTRUCTION
    assert "MAGIC" in result.instruction_after and result.changed
    assert result.before.metric == 0.0 and result.after.metric == 1.0
    assert result.before.fusor_usage.total_tokens > 0 and result.after.fusor_usage.calls == 3
    assert good.calls == 6  # candidates sampled once per example (one n=2 request each), never by the optimizer

    # DSPy's save, loaded back into a FusionOfN around the task's program
    loaded = FusionOfN(dspy.Predict("question -> answer"))
    assert loaded.fusor.instruction == PLAIN_FUSION_INSTRUCTION
    loaded.load(str(result.saved))
    assert "MAGIC" in loaded.fusor.instruction
    assert [name for name, _ in loaded.named_predictors()] == ["fusor.fuse"]
    summary = json.loads((tmp_path / "out" / "result.json").read_text())
    assert summary["before"]["metric"] == 0.0 and summary["after"]["metric"] == 1.0 and summary["instruction_changed"]


def test_the_student_has_only_the_fusor_as_a_predictor(tmp_path):
    student = CachedFusion(dspy.Predict("question -> answer").signature, {}, magic_fusor())
    assert [name for name, _ in student.named_predictors()] == ["fusor.fuse"]
    with pytest.raises(ConfigurationError, match="no cached candidate set"):
        student(question="What is 1 plus 2?")
    copy = student.deepcopy()
    assert copy._shared is student._shared  # candidate sets and LM are shared, not copied


def test_feedback_says_expected_and_got():
    metric = feedback_metric(mgsm.TASK)
    gold = dspy.Example(question="q", answer=42).with_inputs("question")
    out = metric(gold, dspy.Prediction(reasoning="...", answer="Answer: 41"))
    assert out.score == 0.0 and "expected 42, got 41" in out.feedback
    out = metric(gold, dspy.Prediction(reasoning="...", answer="42", fallback="unusable"))
    assert out.score == 1.0 and "correct" in out.feedback and "candidate was returned" in out.feedback


def test_bad_input_is_refused_before_any_model_call(tmp_path):
    with pytest.raises(ConfigurationError, match="unknown optimizer"):
        check_budget("sgd", "light")
    with pytest.raises(ConfigurationError, match="budget must be"):
        check_budget("gepa", "huge")
    with pytest.raises(ConfigurationError, match="breadth"):
        check_budget("copro", 1)
    with pytest.raises(ConfigurationError, match="need 9"):
        split_examples(examples(4), 4, 5)
    fusor = magic_fusor()
    with pytest.raises(ConfigurationError, match="held-out split is empty"):
        tune_instruction(TASK, examples(2), [], teachers={"good": teacher("good")}, fusor_lm=fusor, proposer_lm=proposer(),
                         cache=CandidateCache(tmp_path / "c.jsonl", task_name="sums"))
    assert fusor.calls == 0
