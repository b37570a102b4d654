"""Adaptive sampling: the Beta rule against its integral, rounds on a scripted LM, the token budget, replay."""

from __future__ import annotations

import math

import dspy
import pytest

from fusion_dspy.adaptive import (
    AGREED,
    BUDGET,
    MAX_N,
    NEAR_DUPLICATES,
    AdaptiveN,
    answer_key,
    beta_stop_probability,
    replay,
    sample_adaptive,
)
from fusion_dspy.errors import ConfigurationError
from fusion_dspy.sampling import sample_candidates
from tests.fakes.voting import VotingLM, first_word

QA = "question -> answer"
KEY = answer_key("answer", first_word)


def _beta_tail_by_integration(v1: int, v2: int, steps: int = 20000) -> float:
    """P(X > 1/2) for X ~ Beta(v1+1, v2+1): the density integrated with Simpson's rule."""
    a, b = v1 + 1, v2 + 1
    norm = math.gamma(a) * math.gamma(b) / math.gamma(a + b)
    h = 0.5 / steps
    xs = [0.5 + i * h for i in range(steps + 1)]
    f = [x ** (a - 1) * (1 - x) ** (b - 1) for x in xs]
    return h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2])) / norm


@pytest.mark.parametrize(("v1", "v2"), [(1, 0), (2, 0), (3, 0), (4, 0), (3, 1), (5, 2), (4, 4), (7, 1), (0, 0)])
def test_the_beta_rule_is_the_posterior_tail_of_its_formula(v1, v2):
    assert beta_stop_probability(v1, v2) == pytest.approx(_beta_tail_by_integration(v1, v2), abs=1e-9)


def test_the_beta_rule_at_known_points():
    assert beta_stop_probability(3, 0) == 15 / 16 and beta_stop_probability(4, 0) == 31 / 32
    assert beta_stop_probability(2, 2) == 0.5 and beta_stop_probability(3, 1) == 13 / 16


def test_stops_at_the_first_round_when_the_samples_agree():
    lm = VotingLM(lambda q, s: "42")
    cset, trace = sample_adaptive(dspy.Predict(QA), {"question": "Q1"}, AdaptiveN(start=4, step=2, max_n=8), lm=lm, key=KEY)
    assert trace.stop == AGREED and trace.rounds == 1 and trace.samples == 4 == len(cset.candidates)
    assert trace.evidence["p_leader"] == pytest.approx(31 / 32) and trace.agreed_index == 0
    assert [r["n"] for r in lm.requests] == [4]  # one n=k request
    assert trace.tokens == 30 + 4 * 20 and trace.fixed_tokens == 30 + 8 * 20 and trace.tokens_saved == 80


def test_goes_to_max_n_when_the_samples_disagree_each_round_one_request_with_a_fresh_rollout_id():
    lm = VotingLM(lambda q, s: str(s))  # every sample a different answer
    cset, trace = sample_adaptive(dspy.Predict(QA), {"question": "Q1"}, AdaptiveN(start=2, step=2, max_n=7), lm=lm, key=KEY)
    assert trace.stop == MAX_N and trace.rounds == 4 and trace.samples == 7
    assert [r["n"] for r in lm.requests] == [2, 2, 2, 1]
    rollouts = [r["rollout_id"] for r in lm.requests]
    assert len(set(rollouts)) == 4  # no round can be answered from an earlier round's cache entry
    answers = [c.outputs["answer"].split()[0] for c in cset.candidates]
    assert answers == [str(s) for s in range(7)]  # seven distinct samples, none repeated
    assert [c.index for c in cset.candidates] == list(range(7))


def test_rollout_offset_moves_every_round():
    lm = VotingLM(lambda q, s: str(s))
    sample_adaptive(dspy.Predict(QA), {"question": "Q1"}, AdaptiveN(start=2, step=2, max_n=4), lm=lm, key=KEY, rollout_offset=100)
    assert [r["rollout_id"] for r in lm.requests] == [100, 102]


def test_stops_once_the_leader_is_clear_after_a_split_start():
    answers = ["7", "9", "7", "7", "7", "7", "7", "7"]
    lm = VotingLM(lambda q, s: answers[s])
    _, trace = sample_adaptive(dspy.Predict(QA), {"question": "Q1"}, AdaptiveN(start=2, step=2, max_n=8, threshold=0.9), lm=lm, key=KEY)
    # 1-1 (0.5), 3-1 (0.8125), 5-1 (0.9375 >= 0.9)
    assert trace.stop == AGREED and trace.samples == 6 and trace.evidence["votes"] == {"7": 5, "9": 1}


def test_free_form_stops_on_near_duplicates_and_not_on_different_answers():
    same = VotingLM(lambda q, s: "The sea is salty because rivers carry dissolved minerals" + ("." if s % 2 else ""), length=1)
    _, trace = sample_adaptive(dspy.Predict(QA), {"question": "Q1"}, AdaptiveN(start=2, step=2, max_n=6), lm=same)
    assert trace.stop == NEAR_DUPLICATES and trace.samples == 2 and trace.evidence["min_similarity"] >= 90
    differ = VotingLM(lambda q, s: ["Salt comes from rocks", "Volcanic vents add chlorine", "I do not know"][s % 3], length=1)
    _, trace = sample_adaptive(dspy.Predict(QA), {"question": "Q1"}, AdaptiveN(start=2, step=2, max_n=6), lm=differ)
    assert trace.stop == MAX_N and trace.samples == 6
    _, strict = sample_adaptive(dspy.Predict(QA), {"question": "Q1"}, AdaptiveN(start=2, max_n=4, similarity=100.0), lm=same)
    assert strict.stop == MAX_N  # the threshold is the user's


@pytest.mark.parametrize("budget", [150, 200, 260, 333, 500])
def test_the_token_budget_is_never_exceeded(budget):
    lm = VotingLM(lambda q, s: str(s), length=40, prompt_tokens=30, max_tokens=64)
    cset, trace = sample_adaptive(dspy.Predict(QA), {"question": "Q1"}, AdaptiveN(start=2, step=2, max_n=8, max_tokens_total=budget),
                                  lm=lm, key=KEY)
    assert trace.tokens == cset.usage.total_tokens <= budget
    assert trace.stop in (BUDGET, MAX_N)
    if trace.samples < 8:
        assert trace.stop == BUDGET


def test_a_budget_below_one_sample_is_refused():
    lm = VotingLM(lambda q, s: "1", max_tokens=64)
    with pytest.raises(ConfigurationError, match="max_tokens_total"):
        sample_adaptive(dspy.Predict(QA), {"question": "Q1"}, AdaptiveN(max_tokens_total=5), lm=lm, key=KEY)


def test_settings_are_checked():
    for bad in ({"start": 0}, {"start": 9, "max_n": 8}, {"threshold": 0.5}, {"similarity": 0}, {"max_tokens_total": 0}):
        with pytest.raises(ConfigurationError):
            AdaptiveN(**bad)
    assert AdaptiveN(start=3, step=2, max_n=8).round_sizes() == [3, 2, 2, 1]


def test_replay_on_a_pool_stops_where_the_rounds_would():
    lm = VotingLM(lambda q, s: "5" if s != 1 else "6")
    pool = sample_candidates(dspy.Predict(QA), {"question": "Q1"}, lm=lm, n=8)
    used, trace = replay(pool, AdaptiveN(start=2, step=2, max_n=8, threshold=0.9), key=KEY)
    # 1-1, then 3-1 (0.8125), then 5-1 (0.9375)
    assert trace.stop == AGREED and trace.samples == 6 == len(used.candidates) and trace.rounds == 3
    assert trace.tokens == 3 * 30 + 6 * 20  # each round pays the prompt
    live, live_trace = sample_adaptive(dspy.Predict(QA), {"question": "Q1"}, AdaptiveN(start=2, step=2, max_n=8, threshold=0.9),
                                       lm=VotingLM(lambda q, s: "5" if s != 1 else "6"), key=KEY)
    assert (live_trace.samples, live_trace.tokens, live_trace.stop) == (trace.samples, trace.tokens, trace.stop)
