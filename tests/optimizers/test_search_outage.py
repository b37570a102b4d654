"""Issue 15, item 4: a trial whose backend failed is FAIL in the study, never a score Optuna learns from."""

from __future__ import annotations

import optuna
import pytest

from fusion_dspy.errors import EndpointError
from fusion_dspy.lm.endpoints import Endpoint
from fusion_dspy.optimizers.search import Models, SearchSpace, run_search
from fusion_dspy.serving.ports import free_port
from tests.fakes.openai_server import FakeOpenAIServer
from tests.optimizers.fakes import TASK, examples, magic_fusor, teacher


def _space(models: Models) -> SearchSpace:
    return SearchSpace.build({"n": "2", "temperature": "0.5", "method": "majority"}, names=models.names,
                             teachers=models.teachers, task=TASK)


def _states(db: str, name: str) -> list[str]:
    return [t.state.name for t in optuna.load_study(study_name=name, storage=db).trials]


def test_a_dead_teacher_fails_the_trial_instead_of_scoring_it_zero(tmp_path, db_dir):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    lm = Endpoint("down", "openai/down", api_base=dead, api_key="x", num_retries=0, timeout=5).lm(cache=False, max_tokens=32)
    models = Models({"down": lm, "fusor": magic_fusor()}, teachers=["down"])
    db = f"sqlite:///{db_dir}/s.db"
    with pytest.raises(EndpointError, match="rerun"):
        run_search(TASK, examples(2), models, _space(models), trials=1, storage=db, study_name="s", out_dir=tmp_path,
                   sampler="grid", num_threads=1)
    assert _states(db, "s") == ["FAIL"]  # not COMPLETE with metric 0.0
    assert not (tmp_path / "chosen_pool.yaml").exists()


def test_a_teacher_that_fails_part_way_never_leaves_its_failed_samples_in_the_candidate_cache(tmp_path, db_dir):
    with FakeOpenAIServer(fail_rate=0.5, seed=3) as flaky:
        lm = Endpoint("flaky", "openai/flaky", api_base=flaky.api_base, api_key="x", num_retries=0, timeout=5).lm(cache=False, max_tokens=32)
        models = Models({"flaky": lm, "good": teacher("good"), "fusor": magic_fusor()}, teachers=["flaky"])
        db = f"sqlite:///{db_dir}/s.db"
        with pytest.raises(EndpointError):
            run_search(TASK, examples(4), models, _space(models), trials=1, storage=db, study_name="s", out_dir=tmp_path,
                       sampler="grid", num_threads=1)
    assert _states(db, "s") == ["FAIL"]
    cached = (tmp_path / "candidates.jsonl").read_text() if (tmp_path / "candidates.jsonl").exists() else ""
    assert "endpoint failure" not in cached
