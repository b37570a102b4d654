"""FusionOfN, BestOfN and majority on adaptively sampled pools: agreement skips the fusor and the scorer."""

from __future__ import annotations

import dspy
import pytest

import fusion_dspy as fd
from fusion_dspy.adaptive import AGREED, MAX_N, NEAR_DUPLICATES, AdaptiveN, answer_key, sample_adaptive
from fusion_dspy.aggregate import MajorityAggregator
from fusion_dspy.aggregate.adaptive import AGREEMENT_METHOD, run_adaptive
from fusion_dspy.errors import ConfigurationError
from tests.fakes.voting import VotingLM, first_word

QA = "question -> answer"


def test_fusion_returns_the_agreed_answer_without_a_fusor_call():
    lm = VotingLM(lambda q, s: "42")
    module = fd.FusionOfN(dspy.Predict(QA), fusor=lm, lm=lm, adaptive=AdaptiveN(start=4, max_n=8), normalize=first_word)
    pred = module(question="Q1")
    assert pred.answer.split()[0] == "42" and pred.fusion is None and pred.selection.method == AGREEMENT_METHOD
    assert lm.fusor_calls == 0 and len(lm.requests) == 1
    assert pred.adaptive["stop"] == AGREED and pred.adaptive["rounds"] == 1 and pred.adaptive["samples"] == 4
    assert pred.adaptive["aggregation_skipped"] is True and pred.adaptive["tokens_saved"] > 0
    assert pred.usage["aggregation"]["total_tokens"] == 0


def test_fusion_fuses_every_sample_up_to_max_n_when_they_disagree():
    lm = VotingLM(lambda q, s: str(s))
    pred = fd.FusionOfN(dspy.Predict(QA), fusor=lm, lm=lm, adaptive=AdaptiveN(start=2, step=2, max_n=6), normalize=first_word)(question="Q1")
    assert pred.answer.startswith("FUSED") and lm.fusor_calls == 1
    assert len(pred.candidates.candidates) == 6 and sorted(pred.fusion.order) == list(range(6))
    assert pred.adaptive["stop"] == MAX_N and pred.adaptive["rounds"] == 3 and pred.adaptive["aggregation_skipped"] is False
    assert [r["n"] for r in lm.sample_requests] == [2, 2, 2]


def test_free_form_fusion_is_skipped_on_near_duplicates_only():
    lm = VotingLM(lambda q, s: "Rivers carry salt to the sea", length=1)
    pred = fd.FusionOfN(dspy.Predict(QA), fusor=lm, lm=lm, adaptive=AdaptiveN(start=2, max_n=6))(question="Q1")
    assert pred.fusion is None and lm.fusor_calls == 0 and pred.adaptive["stop"] == NEAR_DUPLICATES
    differ = VotingLM(lambda q, s: ["Rivers carry salt", "Volcanoes did it", "Nobody knows why"][s % 3], length=1)
    pred = fd.FusionOfN(dspy.Predict(QA), fusor=differ, lm=differ, adaptive=AdaptiveN(start=2, max_n=4))(question="Q1")
    assert pred.answer == "FUSED" and differ.fusor_calls == 1


def test_best_of_n_skips_the_scorer_on_agreement_and_scores_otherwise():
    scored = []

    def scorer(inputs, prediction):
        scored.append(prediction.answer)
        return float(prediction.answer.split()[0] == "3")

    agree = VotingLM(lambda q, s: "8")
    pred = fd.BestOfN(dspy.Predict(QA), scorer=scorer, lm=agree, adaptive=AdaptiveN(start=4), normalize=first_word)(question="Q1")
    assert pred.answer.split()[0] == "8" and scored == [] and pred.selection.method == AGREEMENT_METHOD
    differ = VotingLM(lambda q, s: str(s))
    pred = fd.BestOfN(dspy.Predict(QA), scorer=scorer, lm=differ, adaptive=AdaptiveN(start=2, max_n=4), normalize=first_word)(question="Q1")
    assert pred.answer.split()[0] == "3" and len(scored) == 4 and pred.adaptive["stop"] == MAX_N


def test_majority_votes_on_the_rounds_and_records_them():
    answers = ["7", "9", "7", "7", "7", "7"]
    lm = VotingLM(lambda q, s: answers[s])
    cset, trace = sample_adaptive(dspy.Predict(QA), {"question": "Q1"}, AdaptiveN(start=2, step=2, max_n=6, threshold=0.9), lm=lm,
                                  key=answer_key("answer", first_word))
    result = run_adaptive(MajorityAggregator("answer", first_word), cset, trace)
    assert result.outputs["answer"].split()[0] == "7" and result.outcome.details["votes"] == {"7": 5, "9": 1}
    assert result.to_record()["adaptive"]["stop"] == AGREED and result.to_record()["adaptive"]["samples"] == 6


def test_adaptive_needs_one_lm_and_its_settings():
    lm = VotingLM(lambda q, s: "1")
    with pytest.raises(ConfigurationError, match="pool"):
        fd.FusionOfN(dspy.Predict(QA), fusor=lm, pool={"a": lm}, adaptive=AdaptiveN())
    with pytest.raises(ConfigurationError, match="AdaptiveN"):
        fd.FusionOfN(dspy.Predict(QA), fusor=lm, adaptive={"start": 2})
