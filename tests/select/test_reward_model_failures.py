"""Issue 15, item 5: a reward model that rejects the key or has no reward route is an endpoint failure, not "no score"."""

from __future__ import annotations

import pytest
import yaml

from fusion_dspy.errors import EndpointError
from fusion_dspy.types import Candidate, CandidateSet, Usage
from tests.fakes.openai_server import FakeOpenAIServer


def _cset() -> CandidateSet:
    cands = tuple(Candidate(i, "t", i, {"answer": f"answer {i}"}, Usage()) for i in range(3))
    return CandidateSet({"question": "q"}, cands, ("answer",), Usage())


def test_a_rejected_key_fails_the_example_instead_of_picking_candidate_zero():
    from fusion_dspy.select import RewardModelScorer

    with FakeOpenAIServer(api_key="sk-the-right-key-123") as server:
        scorer = RewardModelScorer(server.api_base, "rm", api_key="sk-a-wrong-key-456")
        with pytest.raises(EndpointError, match="401"):
            scorer.score_candidates(_cset())


def test_a_missing_reward_route_fails_the_example():
    from fusion_dspy.select import RewardModelScorer

    with FakeOpenAIServer() as server:
        scorer = RewardModelScorer(server.url + "/not-a-reward-server/v1", "rm")
        with pytest.raises(EndpointError, match="404"):
            scorer.score_candidates(_cset())


def test_a_bad_input_still_gives_no_score_rather_than_a_failure(monkeypatch):
    """A 400 (this input cannot be scored, e.g. too long) is about the candidate, not the server."""
    import httpx

    from fusion_dspy.select import RewardModelScorer

    scorer = RewardModelScorer("http://127.0.0.1:9/v1", "rm")

    def too_long(prompt, response):
        request = httpx.Request("POST", scorer.url)
        raise httpx.HTTPStatusError("400 Bad Request", request=request, response=httpx.Response(400, request=request))

    monkeypatch.setattr(scorer, "reward", too_long)
    scores, details, _ = scorer.score_candidates(_cset())
    assert set(scores.values()) == {None} and len(details["errors"]) == 3


def test_the_start_up_check_probes_the_reward_route(tmp_path):
    from fusion_dspy.cli._models import open_pool

    with FakeOpenAIServer() as server:
        doc = {
            "model_list": [
                {"model_name": "t", "litellm_params": {"model": "openai/t", "api_base": server.api_base, "api_key": "x"}},
                # the server answers, but not as a reward model: /models and /health are 404, and so is /pooling
                {"model_name": "rm", "litellm_params": {"model": "hosted_vllm/rm", "api_base": server.url + "/chat-only/v1"}},
            ],
            "fusion_dspy": {"teachers": ["t"], "reward_model": "rm"},
        }
        path = tmp_path / "pool.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        with pytest.raises(EndpointError, match="reward"), open_pool(path):
            pass
