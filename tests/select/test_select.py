"""Selection: Best-of-N scorers (LLM rater, reward model, callables) and majority vote."""

from __future__ import annotations

import json

import pytest

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.lm.endpoints import Endpoint
from fusion_dspy.select import LLMRater, RewardModelScorer, majority_vote, select_best
from fusion_dspy.types import Candidate, CandidateSet
from tests.fakes.openai_server import FakeOpenAIServer


def _cset(answers, field="answer"):
    return CandidateSet({"question": "q"}, tuple(Candidate(i, "m", i, {field: a}) for i, a in enumerate(answers)), (field,))


def test_callable_scorer_ties_are_a_seeded_draw_not_the_earliest_candidate():
    picks = []
    for seed in range(12):
        sel = select_best(_cset(["a", "bb", "cc"]), lambda inputs, pred: len(pred.answer), seed=seed)
        assert sel.scores == {0: 1.0, 1: 2.0, 2: 2.0} and sel.fallback is None
        assert sel.details["tie"]["between"] == [1, 2] and sel.index in (1, 2)
        assert select_best(_cset(["a", "bb", "cc"]), lambda inputs, pred: len(pred.answer), seed=seed).index == sel.index
        picks.append(sel.index)
    assert set(picks) == {1, 2}  # both tied candidates win under some seed


def test_candidates_are_scored_in_a_shuffled_order():
    seen_orders = set()
    for seed in range(6):
        order = []
        select_best(_cset(["a", "b", "c", "d"]), lambda inputs, pred, order=order: order.append(pred.answer) or 1.0, seed=seed)
        seen_orders.add(tuple(order))
    assert len(seen_orders) > 1 and all(sorted(o) == ["a", "b", "c", "d"] for o in seen_orders)


def test_scorer_errors_give_no_score_not_a_crash():
    def scorer(inputs, pred):
        if pred.answer == "bad":
            raise RuntimeError("nope")
        return 1.0

    sel = select_best(_cset(["bad", "good"]), scorer)
    assert sel.index == 1 and sel.scores[0] is None and "nope" in sel.details["errors"][0]


def test_no_scores_falls_back_to_first():
    sel = select_best(_cset(["a", "b"]), lambda i, p: float("nan"))
    assert sel.index == 0 and "no candidate could be scored" in sel.fallback


def test_llm_rater_reads_json_scores_and_bracket_scores():
    replies = {"x": json.dumps({"analysis": "meh", "score": 2}), "y": "Fine answer. [[5]]", "z": json.dumps({"analysis": "ok", "score": 3})}

    def reply(body, i):  # each candidate's own rating, whatever order they are rated in
        return next(v for k, v in replies.items() if f"<response>\n{k}\n</response>" in body["messages"][-1]["content"])

    with FakeOpenAIServer(reply=reply) as server:
        lm = Endpoint("r", "openai/fake", api_base=server.api_base, api_key="x").lm(cache=False, max_tokens=100)
        sel = select_best(_cset(["x", "y", "z"]), LLMRater(lm))
        body = server.requests[0]
    assert sel.scores == {0: 2.0, 1: 5.0, 2: 3.0} and sel.index == 1
    assert body["response_format"]["json_schema"]["schema"]["properties"]["score"]["maximum"] == 5
    assert "<response>" in body["messages"][-1]["content"]


def test_llm_rater_unparseable_gives_no_score_after_one_retry():
    with FakeOpenAIServer(reply="I cannot rate this") as server:
        lm = Endpoint("r", "openai/fake", api_base=server.api_base, api_key="x").lm(cache=False, max_tokens=100)
        sel = select_best(_cset(["x"]), LLMRater(lm))
        calls = len(server.requests)
    assert calls == 2
    assert sel.scores == {0: None} and sel.fallback and "fallbacks" in sel.details


@pytest.mark.parametrize("route", ["pooling", "classify"])
def test_reward_model_scorer_over_http(route):
    with FakeOpenAIServer(reward=lambda text: float(len(text))) as server:
        scorer = RewardModelScorer(server.api_base, "hosted_vllm/rm", route=route)
        sel = select_best(_cset(["short", "a much longer answer", "mid size"]), scorer)
        paths = {r["_path"] for r in server.requests}
    assert sel.index == 1
    assert any(route in p for p in paths)


def test_reward_model_down_is_an_endpoint_error_not_a_silent_fallback():
    from fusion_dspy.errors import EndpointError

    scorer = RewardModelScorer("http://127.0.0.1:9/v1", "rm", timeout=1)
    with pytest.raises(EndpointError, match="127.0.0.1:9"):
        select_best(_cset(["a", "b"]), scorer)


def test_reward_model_bad_answer_gives_no_score():
    with FakeOpenAIServer(reward=lambda text: float("nan") if "bad" in text else 1.0) as server:
        scorer = RewardModelScorer(server.api_base, "rm")
        sel = select_best(_cset(["bad", "good"]), scorer)
    assert sel.index == 1


def test_reward_model_bad_url():
    with pytest.raises(ConfigurationError):
        RewardModelScorer("localhost:8000", "rm")


def test_majority_vote_normalises_and_breaks_ties_by_first_appearance():
    sel = majority_vote(_cset(["7", " 7.", "8", "9", "8"]), normalize=lambda v: str(v).strip().rstrip("."))
    assert sel.index == 0 and sel.details["votes"] == {"7": 2, "8": 2, "9": 1}


def test_majority_vote_without_usable_answers_falls_back():
    sel = majority_vote(_cset(["", None]))
    assert sel.index == 0 and sel.fallback


def test_bad_scorer_is_refused():
    with pytest.raises(ConfigurationError):
        select_best(_cset(["a"]), 42)
