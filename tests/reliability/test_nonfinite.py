"""Issue 15, item 9: files fusion-dspy writes are standard JSON: NaN and Infinity become null, with the reason recorded."""

from __future__ import annotations

import json
import math

import dspy

from fusion_dspy.eval import evaluate
from fusion_dspy.lm.endpoints import Endpoint, Pool
from fusion_dspy.records import RecordStore, iter_records
from fusion_dspy.task import Task
from tests.fakes.openai_server import FakeOpenAIServer
from tests.reliability import _tiny_task as tiny


def strict(text: str):
    """Parse as standard JSON: NaN, Infinity and -Infinity are errors (as in JavaScript, jq, Go...)."""

    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def strict_lines(path) -> list:
    return [strict(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_the_store_writes_non_finite_numbers_as_null_with_the_reason(tmp_path):
    store = RecordStore(tmp_path / "r.jsonl")
    store.append({"id": "a", "score": math.nan, "usage": {"seconds": math.inf}, "xs": [1.0, -math.inf], "ok": 0.5})
    (rec,) = strict_lines(tmp_path / "r.jsonl")
    assert rec["score"] is None and rec["usage"]["seconds"] is None and rec["xs"] == [1.0, None] and rec["ok"] == 0.5
    assert rec["nonfinite"] == {"score": "nan", "usage.seconds": "inf", "xs[1]": "-inf"}


def nan_metric(example, prediction, trace=None):
    return math.nan if "1" in example.question else tiny.metric(example, prediction)


NAN_TASK = Task("relnan", tiny.load, lambda: dspy.Predict(tiny.QA), nan_metric, "answer", normalize=tiny.normalize)


def test_eval_records_and_summary_are_standard_json_when_a_metric_gives_nan(tmp_path):
    data = tiny.write_data(tmp_path / "d.jsonl", 3, salt="nan")
    out = tmp_path / "out"
    with FakeOpenAIServer() as server:
        pool = Pool({"m": Endpoint("m", "openai/m", api_base=server.api_base, api_key="x", num_retries=0, timeout=5)}, ("m",))
        evaluate(NAN_TASK, data, pool=pool, out_dir=out, n=2, methods="greedy,majority", progress=False, cache=False)
    records = strict_lines(out / "records.jsonl")
    assert len(records) == 3
    nan_example = next(r for r in records if "1" in r["inputs"]["question"])
    for result in nan_example["methods"].values():  # the metric gave no number: that method's score failed, with the reason
        assert result["status"] == "failed" and "nan" in result["error"].lower(), result
    strict((out / "summary.json").read_text(encoding="utf-8"))
    assert len(list(iter_records(out / "records.jsonl"))) == 3


def test_search_trials_file_is_standard_json(tmp_path):
    from fusion_dspy.optimizers.search import Models, SearchSpace, run_search
    from tests.optimizers.fakes import TASK, examples, magic_fusor, teacher

    nan_task = Task(TASK.name, TASK.load, TASK.program, lambda e, p, trace=None: math.nan, TASK.answer_field, normalize=TASK.normalize)
    models = Models({"good": teacher("good"), "fusor": magic_fusor()}, teachers=["good"])
    space = SearchSpace.build({"n": "1", "temperature": "0.5", "method": "majority"}, names=models.names, teachers=models.teachers, task=nan_task)
    run_search(nan_task, examples(2), models, space, trials=1, storage=f"sqlite:///{tmp_path}/s.db", study_name="s",
               out_dir=tmp_path, sampler="grid", num_threads=1)
    rows = strict((tmp_path / "trials.json").read_text(encoding="utf-8"))
    assert rows[0]["metric"] is None
