"""optimize search over adaptive N (issue 17, part 3): start/step/threshold/budget searched with tokens as the second objective."""

from __future__ import annotations

import dspy
import optuna
import pytest

from fusion_dspy.adaptive import AdaptiveN
from fusion_dspy.aggregate import FUSION
from fusion_dspy.errors import ConfigurationError
from fusion_dspy.lm.endpoints import Endpoint
from fusion_dspy.optimizers.search import Models, Objective, SearchSpace, TrialConfig, run_search
from fusion_dspy.task import Task
from tests.fakes.voting import VotingLM, agreeing_task

ANSWERS = {"Q1": "42", "Q2": "7", "Q3": None}  # Q1, Q2: every sample agrees; Q3: every sample differs
TASK, _answer = agreeing_task("adaptive-search", ANSWERS, gold_when_split="9")
_load = TASK.load
FREE = Task("free", _load, lambda: dspy.Predict("question -> answer"), lambda ex, pred, trace=None: 1.0, "answer")


def _models() -> Models:
    lms = {"voter": VotingLM(_answer, max_tokens=64), "fusor": VotingLM(_answer, temperature=0.0)}
    endpoints = {name: Endpoint(name=name, model=f"openai/{name}", api_base="http://127.0.0.1:9/v1") for name in lms}
    return Models(lms, teachers=["voter"], endpoints=endpoints)


def _space(models: Models, task: Task = TASK, **values) -> SearchSpace:
    base = {"n": "8", "temperature": "0.7", "method": FUSION, "fusor": "fusor"}
    return SearchSpace.build({**base, **values}, names=models.names, teachers=models.teachers, task=task)


def test_the_search_prefers_adaptive_n_where_candidates_agree(tmp_path, db_dir):
    models = _models()
    space = _space(models, adaptive_start="off,4", adaptive_threshold="0.95", adaptive_budget="none,2000")
    result = run_search(TASK, _load(None), models, space, trials=3, storage=f"sqlite:///{db_dir}/s.db", study_name="s",
                        objective=Objective("pareto"), out_dir=tmp_path, sampler="grid", num_threads=1)
    trials = {(t.params["adaptive_start"], t.params.get("adaptive_budget")): t for t in result.study.trials}
    assert set(trials) == {("off", None), (4, None), (4, 2000)}
    fixed, adaptive = trials[("off", None)], trials[(4, None)]
    # fixed n=8 fuses every example (the scripted fusor answers FUSED: wrong); adaptive takes the agreed answer on Q1 and Q2
    assert fixed.user_attrs["metric"] == 0.0 and adaptive.user_attrs["metric"] == pytest.approx(2 / 3)
    assert adaptive.user_attrs["tokens_per_example"] < fixed.user_attrs["tokens_per_example"]
    assert adaptive.user_attrs["detail"]["aggregation_tokens"] < fixed.user_attrs["detail"]["aggregation_tokens"]
    # a budget of 2,000 tokens holds every round here: the same figures as no budget
    assert trials[(4, 2000)].user_attrs["metric"] == adaptive.user_attrs["metric"]
    assert result.chosen.number in (adaptive.number, trials[(4, 2000)].number)
    text = result.pool_file.read_text()
    assert "adaptive:" in text and "start: 4" in text and "max_n: 8" in text


def test_a_tight_budget_stops_the_rounds_and_costs_fewer_tokens(tmp_path, db_dir):
    models = _models()
    space = _space(models, adaptive_start="2", adaptive_step="2", adaptive_threshold="0.95", adaptive_budget="none,120")
    result = run_search(TASK, _load(None), models, space, trials=2, storage=f"sqlite:///{db_dir}/s.db", study_name="s",
                        objective=Objective("pareto"), out_dir=tmp_path, sampler="grid", num_threads=1)
    done = {t.params["adaptive_budget"]: t for t in result.study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    # 120 tokens: one round of 2 worst-cases at 30 + 2 x 64 = 158 > 120, so it shrinks to 1 sample (94); nothing more fits
    assert done[120].user_attrs["detail"]["sampling_tokens"] == 3 * (30 + 20)  # 3 examples, one sample each, never over 120
    assert done[120].user_attrs["tokens_per_example"] < done[None].user_attrs["tokens_per_example"]


def test_trial_configs_carry_adaptive_settings_with_max_n_from_n():
    config = TrialConfig.from_params({"n": 6, "temperature": 0.7, "teachers": "voter", "method": FUSION, "fusor": "fusor",
                                      "adaptive_start": 8, "adaptive_step": 1, "adaptive_threshold": 0.9})
    assert config.adaptive == AdaptiveN(start=6, step=1, max_n=6, threshold=0.9)
    off = TrialConfig.from_params({"n": 6, "temperature": 0.7, "teachers": "voter", "method": FUSION, "fusor": "fusor", "adaptive_start": "off"})
    assert off.adaptive is None


def test_bad_adaptive_choices_are_refused_before_any_call():
    models = _models()
    with pytest.raises(ConfigurationError, match="adaptive_similarity.*closed-form"):
        _space(models, adaptive_similarity="90")
    with pytest.raises(ConfigurationError, match="adaptive_threshold.*free-form"):
        _space(models, FREE, adaptive_threshold="0.9")
    with pytest.raises(ConfigurationError, match="adaptive_threshold"):
        _space(models, adaptive_threshold="1.5")
    with pytest.raises(ConfigurationError, match="adaptive_step.*not a valid int"):
        _space(models, adaptive_step="two")
    two = Models({"a": VotingLM(_answer), "b": VotingLM(_answer), "fusor": VotingLM(_answer)}, teachers=["a", "b"])
    with pytest.raises(ConfigurationError, match="one teacher"):
        SearchSpace.build({"n": "4", "method": FUSION, "adaptive_start": "2"}, names=two.names, teachers=two.teachers, task=TASK)
    assert "adaptive_start" not in _space(models).distributions()  # not searched unless asked: old studies keep their space
