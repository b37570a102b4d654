"""The search loop end to end on the embedded model (small: two MGSM examples, two trials)."""

from __future__ import annotations

import os

import optuna
import pytest

from fusion_dspy.lm.endpoints import Pool, load_pool
from fusion_dspy.optimizers.search import Models, Objective, SearchSpace, run_search
from fusion_dspy.programs import mgsm

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "programs", "fixtures", "mgsm")


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_search_on_the_embedded_model(embedded_server, tmp_path, db_dir):
    files = sorted(f for f in os.listdir(FIXTURE) if f.endswith(".tsv"))
    examples = mgsm.TASK.load(os.path.join(FIXTURE, files[0]), limit=2)
    ep = embedded_server.endpoint
    models = Models.from_pool(Pool({ep.name: ep}, (ep.name,)), max_tokens=48)
    space = SearchSpace.build({"n": "1,2", "temperature": "0.7", "method": "fusion,majority"}, names=models.names, task=mgsm.TASK)
    storage = f"sqlite:///{db_dir}/s.db"
    for _ in range(2):  # the second run adds to the same study and reuses the cached candidates
        result = run_search(mgsm.TASK, examples, models, space, trials=1, storage=storage, study_name="S",
                            objective=Objective("pareto"), out_dir=tmp_path, num_threads=2)
    study = optuna.load_study(study_name="S", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all("n" in t.params and t.user_attrs["tokens_per_example"] > 0 for t in study.trials)
    assert all(0.0 <= t.user_attrs["metric"] <= 1.0 for t in study.trials)
    assert result.pool_file is not None and load_pool(result.pool_file).teachers == (ep.name,)
