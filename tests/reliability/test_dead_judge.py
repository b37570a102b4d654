"""Issue 15, item 3: a metric or method whose server is down fails the example (retried later), never the method.

A task's metric may call an LLM (Arena's judge does, through ``dspy.settings.lm``, which ``eval``
sets to the pool's rater). When that server is down the error is a raw LiteLLM exception, not our
``EndpointError``; it must still fail the example, so the rerun, once the server is back, scores it.
"""

from __future__ import annotations

import json

import dspy

from fusion_dspy.eval import evaluate
from fusion_dspy.lm.endpoints import Endpoint, Pool
from fusion_dspy.records import iter_records
from fusion_dspy.serving.ports import free_port
from fusion_dspy.task import Task
from tests.fakes.openai_server import FakeOpenAIServer
from tests.reliability import _tiny_task as tiny

TOTAL = 3


def judged_metric(example, prediction, trace=None):
    """The tiny task's metric, after asking the configured LM (the run's judge) about the answer."""
    dspy.settings.lm(f"Is {prediction.answer!r} a good answer to {example.question!r}?")
    return tiny.metric(example, prediction)


JUDGED = Task("reljudged", tiny.load, tiny.TASK.program, judged_metric, "answer", normalize=tiny.normalize)


def test_a_dead_judge_fails_the_example_and_the_rerun_scores_it(tmp_path):
    data = tiny.write_data(tmp_path / "d.jsonl", TOTAL, salt="dead-judge")
    out = tmp_path / "out"
    judge_port = free_port()
    with FakeOpenAIServer() as teacher:
        def pool() -> Pool:
            endpoints = {
                "t": Endpoint("t", "openai/t", api_base=teacher.api_base, api_key="x", num_retries=0, timeout=5),
                "judge": Endpoint("judge", "openai/judge", api_base=f"http://127.0.0.1:{judge_port}/v1", api_key="x",
                                  num_retries=0, timeout=5),
            }
            return Pool(endpoints, ("t",), rater="judge")

        kwargs = dict(out_dir=out, n=2, methods="greedy,majority,oracle", max_tokens=32, concurrency=1, progress=False, cache=False)
        first = evaluate(JUDGED, data, pool=pool(), **kwargs)["run"]
        assert first["done"] == 0 and first["failed"] == TOTAL, first  # nothing is "done" with a failed metric
        assert not list(iter_records(out / "records.jsonl"))
        failed = [json.loads(line) for line in (out / "records.failed.jsonl").read_text().splitlines()]
        assert len(failed) == TOTAL and all("Connection" in r["error"] or "Endpoint" in r["error"] for r in failed), failed

        with FakeOpenAIServer(port=judge_port):  # the judge is back: the same command scores every example
            again = evaluate(JUDGED, data, pool=pool(), **kwargs)["run"]
    assert again["done"] == TOTAL and again["failed"] == 0, again
    for rec in iter_records(out / "records.jsonl"):
        for name, result in rec["methods"].items():
            assert result["status"] == "ok", (name, result)
