"""eval --adaptive (issue 17): each method replayed as adaptive N on the sampled pools, an adaptive curve in tokens.

A scripted LM agrees on one question and disagrees on the other; the replay must stop early (no
fusor call) on the first, draw the whole pool on the second, cost no model call of its own, and
the summary must put the adaptive rows, their savings and their curve beside the fixed-N ones.
"""

from __future__ import annotations

import dspy
import pytest

from fusion_dspy.adaptive import AGREED, MAX_N, AdaptiveN
from fusion_dspy.aggregate import FUSION, MAJORITY
from fusion_dspy.errors import ConfigurationError
from fusion_dspy.eval import EvalRoles, evaluate, prepare
from fusion_dspy.records import iter_records
from fusion_dspy.sampling import sample_candidates
from tests.fakes.voting import VotingLM, agreeing_task

QUESTIONS = {"Q1": "42", "Q2": None}  # Q1: every sample says 42; Q2: every sample differs
TASK, _answer = agreeing_task("adaptive-voting", QUESTIONS, gold_when_split="7")


def _evaluate(tmp_path, lm, *, adaptive, out="run"):
    roles = EvalRoles(teachers={"voting": lm}, fusor=lm.copy(temperature=0.0), scorer=None, greedy_lm=lm)
    data = tmp_path / "data.txt"
    data.write_text("unused: the task's loader has the examples\n")
    return evaluate(TASK, data, pool=roles, out_dir=tmp_path / out, n="2,4,8", methods=f"{MAJORITY},{FUSION}", progress=False,
                    cache=False, adaptive=adaptive)


def test_the_replay_stops_on_agreement_without_a_fusor_call_and_draws_the_pool_otherwise(tmp_path):
    plain_lm = VotingLM(_answer)
    _evaluate(tmp_path, plain_lm, adaptive=None, out="plain")
    lm = VotingLM(_answer)
    summary = _evaluate(tmp_path, lm, adaptive=AdaptiveN(start=4, step=2))
    assert lm.fusor_calls == plain_lm.fusor_calls and len(lm.requests) == len(plain_lm.requests)  # the replay calls no model

    records = {r["example_id"]: r for r in iter_records(tmp_path / "run" / "records.jsonl")}
    agreed = records["Q1"]["adaptive"]["8"][FUSION]
    assert agreed["adaptive"]["stop"] == AGREED and agreed["adaptive"]["samples"] == 4 and agreed["adaptive"]["aggregation_skipped"]
    assert agreed["selection"]["method"] == "agreement" and agreed["score"] == 1.0
    assert agreed["usage"]["aggregation"]["total_tokens"] == 0
    # one round of 4 from the pool's one n=8 request: its prompt once (30) and 4 completions of 20 words
    assert agreed["usage"]["sampling"]["total_tokens"] == 30 + 4 * 20

    split = records["Q2"]["adaptive"]["8"][FUSION]
    fixed = records["Q2"]["methods"][FUSION]
    assert split["adaptive"]["stop"] == MAX_N and split["adaptive"]["samples"] == 8
    assert split["outputs"] == fixed["outputs"] and split["fusion"] == fixed["fusion"]  # the fixed-N fusion of the same 8
    # rounds of 4, 2, 2 pay the prompt three times; the aggregation is the fixed run's
    assert split["usage"]["sampling"]["total_tokens"] == 3 * 30 + 8 * 20
    assert split["usage"]["aggregation"] == fixed["usage"]["aggregation"]
    # at max_n 2 the rule (2 votes: P = 0.875 < 0.95) cannot stop: both examples draw both samples
    assert {r["adaptive"]["2"][FUSION]["adaptive"]["stop"] for r in records.values()} == {MAX_N}

    rows = {(r["method"], r["n"]): r for r in summary["adaptive"] if r["language"] == "all"}
    row = rows[(FUSION, 8)]
    assert row["samples"] == pytest.approx(6.0) and row["aggregation_skipped"] == 1 and row["stops"] == {AGREED: 1, MAX_N: 1}
    fixed_row = next(r for r in summary["rows"] if (r["method"], r["n"], r["language"]) == (FUSION, 8, "all"))
    assert row["tokens_saved"] == pytest.approx(fixed_row["tokens_total"] - row["tokens_total"]) and row["tokens_saved"] > 0
    # the scripted fusor answers FUSED (wrong); on Q1 the agreed 42 stands in for it
    assert (row["mean"], row["fixed_mean"]) == (0.5, fixed_row["mean"]) == (0.5, 0.0)
    assert any(p["adaptive"] for p in summary["pareto"])  # the cheaper adaptive point is on the front
    md = (tmp_path / "run" / "summary.md").read_text(encoding="utf-8")
    assert "## Adaptive N" in md and "| fusion | 8 |" in md
    assert (tmp_path / "run" / "scaling_tokens.png").read_bytes()[:4] == b"\x89PNG"


def test_a_smaller_n_costs_the_prompt_of_its_own_request():
    lm = VotingLM(lambda q, s: str(s))
    pool = sample_candidates(dspy.Predict("question -> answer"), {"question": "Q1"}, lm=lm, n=8)
    two = pool.first(2)
    assert (two.usage.prompt_tokens, two.usage.completion_tokens, two.usage.calls) == (30, 40, 1)
    assert pool.first(8) is pool


def test_adaptive_settings_are_checked_before_any_call(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("x\n")
    plan = prepare(TASK, data, n="2,4", adaptive="start=2,threshold=0.9")
    assert plan.adaptive == AdaptiveN(start=2, step=2, max_n=4, threshold=0.9)
    assert prepare(TASK, data, n=8, adaptive="on").adaptive == AdaptiveN(max_n=8)
    assert prepare(TASK, data, n="2,16", adaptive="start=10").adaptive == AdaptiveN(start=10, max_n=16)  # max_n is the largest N
    assert prepare(TASK, data, n=2, adaptive="on").adaptive == AdaptiveN(start=2, max_n=2)
    for bad in ("start=two", "speed=3", "start", "threshold=2"):
        with pytest.raises(ConfigurationError, match="adaptive"):
            prepare(TASK, data, n=8, adaptive=bad)
    with pytest.raises(ConfigurationError, match="at least 2"):
        prepare(TASK, data, n=1, adaptive="on")


def test_adaptive_with_several_teachers_is_refused(tmp_path):
    lm = VotingLM(_answer)
    roles = EvalRoles(teachers={"a": lm, "b": lm.copy()}, fusor=lm, scorer=None, greedy_lm=lm, samples_per_teacher=2)
    data = tmp_path / "data.txt"
    data.write_text("x\n")
    with pytest.raises(ConfigurationError, match="one teacher"):
        evaluate(TASK, data, pool=roles, out_dir=tmp_path / "run", n=4, methods=FUSION, progress=False, adaptive="on")
