"""Partial pools: one teacher failing -> fusion over the rest, recorded; all failing -> example failed, run goes on."""

from __future__ import annotations

import json
import time

from typer.testing import CliRunner

from fusion_dspy.cli.main import app
from fusion_dspy.records import iter_records
from tests.fakes.openai_server import FakeOpenAIServer
from tests.reliability._tiny_task import SPEC, count_records, write_data, write_pool, write_prompts


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_synth_fuses_over_the_teachers_that_answer(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 4, salt=str(time.time_ns()))
    out = tmp_path / "out"
    with FakeOpenAIServer() as good, FakeOpenAIServer(fail_rate=1.0) as bad:
        pool = write_pool(tmp_path / "pool.yaml", {"good": good.api_base, "bad": bad.api_base},
                          teachers=["good", "bad"], fusor="good", samples_per_teacher=2)
        result = _invoke("synth", "--prompts", prompts, "--out", out, "--pool", pool, "--max-tokens", 32, "--concurrency", 2)
        assert bad.calls >= 4  # the failing teacher was asked for every prompt
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = list(iter_records(out / "synth.jsonl"))
    assert len(rows) == 4
    for row in rows:
        by_model = {}
        for c in row["candidates"]["candidates"]:
            by_model.setdefault(c["model"], []).append(c)
        assert len(by_model["bad"]) == 2 and all("InternalServerError" in c["error"] for c in by_model["bad"])
        assert all(not c["error"] for c in by_model["good"])
        good_indices = {c["index"] for c in by_model["good"]}
        assert set(row["methods"]["fusion"]["fusion"]["order"]) == good_indices  # fused over the rest only
        assert row["answer_from"] == "fusion" and not row["methods"]["fusion"]["fallback"]


def test_synth_all_teachers_failing_marks_every_prompt_failed_and_goes_on(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 5, salt=str(time.time_ns()))
    out = tmp_path / "out"
    with FakeOpenAIServer(fail_rate=1.0) as a, FakeOpenAIServer(fail_rate=1.0) as b:
        pool = write_pool(tmp_path / "pool.yaml", {"a": a.api_base, "b": b.api_base}, teachers=["a", "b"])
        result = _invoke("synth", "--prompts", prompts, "--out", out, "--pool", pool, "--max-tokens", 32, "--concurrency", 2)
    assert result.exit_code == 1
    assert '"failed": 5' in result.output and '"done": 0' in result.output
    failures = [json.loads(line) for line in (out / "synth.failed.jsonl").read_text().splitlines()]
    assert len({f["id"] for f in failures}) == 5
    assert all("EndpointSamplingError" in f["error"] and "no endpoint answered" in f["error"] for f in failures)
    assert count_records(out, "synth.jsonl")[0] == 0


def test_eval_with_one_failing_teacher_records_the_failed_candidates(tmp_path):
    data = write_data(tmp_path / "d.jsonl", 3, salt=str(time.time_ns()))
    out = tmp_path / "out"
    with FakeOpenAIServer() as good, FakeOpenAIServer(fail_rate=1.0) as bad:
        pool = write_pool(tmp_path / "pool.yaml", {"good": good.api_base, "bad": bad.api_base},
                          teachers=["good", "bad"], fusor="good", rater="good")
        result = _invoke("eval", "--task", SPEC, "--data", data, "--out", out, "--pool", pool, "--methods", "bon,fusion,majority", "--n", 2,
                         "--max-tokens", 32, "--no-progress")
    assert result.exit_code == 0, result.output + repr(result.exception)
    records = list(iter_records(out / "records.jsonl"))
    assert len(records) == 3
    for rec in records:
        cands = rec["candidates"]["candidates"]
        failed = [c for c in cands if c.get("error")]
        assert [c["model"] for c in failed] == ["bad"] and "endpoint failure" in failed[0]["error"]
        assert rec["methods"]["fusion"]["status"] == "ok" and rec["methods"]["fusion"]["fusion"]["order"] == [0]
        assert rec["methods"]["bon"]["status"] == "ok"


def test_eval_with_every_teacher_failing_fails_each_example(tmp_path):
    data = write_data(tmp_path / "d.jsonl", 3, salt=str(time.time_ns()))
    out = tmp_path / "out"
    with FakeOpenAIServer(fail_rate=1.0) as a, FakeOpenAIServer(fail_rate=1.0) as b:
        pool = write_pool(tmp_path / "pool.yaml", {"a": a.api_base, "b": b.api_base}, teachers=["a", "b"])
        result = _invoke("eval", "--task", SPEC, "--data", data, "--out", out, "--pool", pool, "--methods", "fusion", "--n", 2,
                         "--max-tokens", 32, "--no-progress")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "done 0, failed 3" in result.output
    records, _, failed_not_done = count_records(out)
    assert records == 0 and len(failed_not_done) == 3
