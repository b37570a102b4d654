"""The Optuna search: finds the known best configuration, resumes one study, refuses bad input early."""

from __future__ import annotations

import json

import optuna
import pytest
from typer.testing import CliRunner

from fusion_dspy.cli.main import app
from fusion_dspy.errors import ConfigurationError
from fusion_dspy.lm.endpoints import Endpoint, load_pool
from fusion_dspy.optimizers.search import Models, Objective, SearchSpace, check_storage, run_search
from fusion_dspy.programs import wmt
from tests.fakes.openai_server import FakeOpenAIServer, output_fields
from tests.optimizers.fakes import TASK, examples, magic_fusor, question_sum, teacher


def _models() -> Models:
    lms = {"good": teacher("good"), "bad": teacher("bad"), "fusor": magic_fusor()}
    endpoints = {name: Endpoint(name=name, model=f"openai/{name}", api_base="http://127.0.0.1:9/v1") for name in lms}
    return Models(lms, teachers=["good", "bad"], endpoints=endpoints)


def _space(models: Models, **values) -> SearchSpace:
    base = {"n": "1,2,3,4", "temperature": "0.5", "method": "majority,fusion", "fusor": "fusor"}
    return SearchSpace.build({**base, **values}, names=models.names, teachers=models.teachers, task=TASK)


@pytest.mark.parametrize("objective", [Objective("budget", 1000.0), Objective("pareto")])
def test_search_finds_the_best_n_and_teacher(tmp_path, db_dir, objective):
    models = _models()
    result = run_search(
        TASK, examples(4), models, _space(models), trials=30, storage=f"sqlite:///{db_dir}/s.db", study_name="s",
        objective=objective, out_dir=tmp_path, sampler="grid", num_threads=1,
    )
    assert result.chosen is not None
    assert result.chosen.params == {"n": 3, "temperature": 0.5, "teachers": "good", "method": "majority"}
    assert result.chosen.user_attrs["metric"] == 1.0
    others = [t for t in result.study.trials if t.number != result.chosen.number]
    assert len(others) == 23 and all(t.user_attrs["metric"] == 0.0 for t in others)  # the grid has 24 points
    assert result.chosen in result.best
    assert result.plot is not None and result.plot.read_bytes()[:4] == b"\x89PNG"

    pool = load_pool(result.pool_file)  # the chosen configuration is a pool file the other commands accept
    assert pool.teachers == ("good",) and pool.samples_per_teacher == 3 and pool.temperature == 0.5
    assert "optimized:\n  method: majority" in result.pool_file.read_text()
    rows = json.loads((tmp_path / "trials.json").read_text())
    assert len(rows) == 24 and sum(r["chosen"] for r in rows) == 1


def test_smaller_n_reuses_the_larger_pools_samples(tmp_path, db_dir):
    models = _models()
    good = models.lms["good"]
    space = _space(models, n="4,2,1", teachers="good", method="majority")
    run_search(TASK, examples(2), models, space, trials=3, storage=f"sqlite:///{db_dir}/s.db", study_name="s",
               out_dir=tmp_path, sampler="grid", num_threads=1)
    # grid order varies, but every example's pool is drawn at most in n=1, +1, +2 steps: <= 3 calls each,
    # and had n=4 come first, 1 call each. Either way nothing is ever sampled twice.
    drawn = sum(json.loads(line)["size"] for line in (tmp_path / "candidates.jsonl").read_text().splitlines())
    assert good.calls <= 6
    assert len({json.loads(line)["key"] for line in (tmp_path / "candidates.jsonl").read_text().splitlines()}) == 2
    assert drawn >= 8  # each example's largest stored pool has all 4 samples


def test_budget_objective_marks_over_budget_trials_infeasible_and_prunes(tmp_path, db_dir):
    models = _models()
    space = _space(models, n="1,4", teachers="good", method="majority,fusion")
    result = run_search(
        TASK, examples(4), models, space, trials=4, storage=f"sqlite:///{db_dir}/s.db", study_name="s",
        objective=Objective("budget", 4.0), out_dir=tmp_path, sampler="grid", num_threads=1, batch_size=1,
    )
    trials = {t.params["method"] + str(t.params["n"]): t for t in result.study.trials}
    # fusion costs ~300 tokens per example (the fusor reads every candidate): pruned after the first batch
    for name in ("fusion1", "fusion4"):
        assert trials[name].state.name == "PRUNED" and "budget" in trials[name].user_attrs["pruned_because"]
    # plain prompts are short: four samples cost 5-7 tokens per example, one 2-3 (by the grid order)
    assert trials["majority4"].user_attrs["feasible"] is False
    assert trials["majority1"].state.name == "COMPLETE" and trials["majority1"].user_attrs["feasible"] is True
    assert result.chosen is not None and result.chosen.number == trials["majority1"].number


def test_bad_input_errors(tmp_path, db_dir):
    models = _models()
    with pytest.raises(ConfigurationError, match="unknown search parameter.*depth"):
        SearchSpace.build({"depth": "1,2"}, names=models.names, task=TASK)
    with pytest.raises(ConfigurationError, match="'n' has no choices: the search space is empty"):
        SearchSpace.build({"n": ""}, names=models.names, task=TASK)
    with pytest.raises(ConfigurationError, match="teacher nobody not among the models"):
        SearchSpace.build({"teachers": "nobody"}, names=models.names, task=TASK)
    with pytest.raises(ConfigurationError, match="no answer normaliser"):
        SearchSpace.build({"method": "majority"}, names=models.names, task=wmt.TASK)
    with pytest.raises(ConfigurationError, match="needs --budget"):
        Objective("budget")
    with pytest.raises(ConfigurationError, match="cannot open the study storage"):
        check_storage(f"sqlite:///{tmp_path}/missing/dir/s.db")
    with pytest.raises(ConfigurationError, match="storage URL"):
        check_storage("study.db")

    storage = f"sqlite:///{db_dir}/s.db"
    optuna.create_study(storage=storage, study_name="single", direction="maximize")
    with pytest.raises(ConfigurationError, match=r"exists with directions \['maximize'\]"):
        run_search(TASK, examples(2), models, _space(models), trials=1, storage=storage, study_name="single", out_dir=tmp_path)
    assert all(lm.calls == 0 for lm in models.lms.values())  # refused before any model call


def _fake_reply(body: dict, choice: int) -> str:
    system = str(body["messages"][0]["content"])
    gold = question_sum(str(body["messages"][-1]["content"]))
    answer = gold if body["model"] == "good" else gold + 2
    if body.get("response_format") or "json" in system.lower():
        return json.dumps({"comparison": "c", "answer": str(answer)})
    fields = [name for name, _ in output_fields(system)] or ["answer"]
    return "".join(f"[[ ## {f} ## ]]\n{answer}\n\n" for f in fields) + "[[ ## completed ## ]]"


def test_cli_twice_with_one_storage_adds_trials_to_one_study(tmp_path, db_dir):
    data = tmp_path / "data.txt"
    data.write_text("the synthetic task makes its own examples\n")
    with FakeOpenAIServer(reply=_fake_reply) as server:
        pool = tmp_path / "pool.yaml"
        pool.write_text(
            "model_list:\n"
            f"  - {{model_name: good, litellm_params: {{model: openai/good, api_base: '{server.api_base}'}}}}\n"
            f"  - {{model_name: bad, litellm_params: {{model: openai/bad, api_base: '{server.api_base}'}}}}\n"
            "fusion_dspy: {teachers: [good, bad]}\n"
        )
        storage = f"sqlite:///{db_dir}/study.db"
        args = ["optimize", "search", "--task", "tests.optimizers.fakes:TASK", "--data", str(data), "--limit", "3",
                "--trials", "2", "--storage", storage, "--study", "S", "--pool", str(pool), "--out", str(tmp_path / "out"),
                "--n-choices", "1,2", "--methods", "majority,fusion", "--fusors", "good", "--num-threads", "1"]
        runner = CliRunner()
        for _ in range(2):
            res = runner.invoke(app, args)
            assert res.exit_code == 0, res.output + repr(res.exception)
        assert "chosen configuration" in res.output and "(use it with --pool)" in res.output

        study = optuna.load_study(study_name="S", storage=storage)
        assert len(study.trials) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)
        assert all("n" in t.params for t in study.trials)
        assert len(optuna.get_all_study_names(storage)) == 1
        load_pool(tmp_path / "out" / "chosen_pool.yaml")

        calls = server.calls
        bad = runner.invoke(app, args[:-8] + ["--n-choices", "1,2,8"] + args[-6:])  # another space for the same study
        assert bad.exit_code != 0 and "searched 'n' over [1, 2]" in str(bad.exception)
        bad = runner.invoke(app, args + ["--param", "depth=2"])
        assert bad.exit_code != 0 and "unknown search parameter" in str(bad.exception)
        bad = runner.invoke(app, args + ["--objective", "budget", "--budget", "500"])
        assert bad.exit_code != 0 and "exists with directions" in str(bad.exception)
        assert server.calls == calls  # every refusal came before any model call
