"""``fusion-dspy eval``: bad input is reported before any model starts; a run against the fake server."""

from __future__ import annotations

import json
import textwrap

import pytest
from typer.testing import CliRunner

from fusion_dspy.cli.main import app
from fusion_dspy.errors import ConfigurationError, DataError
from fusion_dspy.records import iter_records
from tests.fakes.openai_server import FakeOpenAIServer

TASK_MODULE = textwrap.dedent(
    '''
    import dspy
    from fusion_dspy.data import read_jsonl
    from fusion_dspy.task import Task

    class QA(dspy.Signature):
        """Answer the question."""
        question: str = dspy.InputField()
        answer: str = dspy.OutputField()

    def load(path, *, limit=None, skip_bad_rows=False, bad_rows=None):
        out = []
        for n, row in read_jsonl(path, required={"question": str, "answer": str}, skip_bad_rows=skip_bad_rows, bad_rows=bad_rows):
            out.append(dspy.Example(id=f"q{n}", language="en", question=row["question"], answer=row["answer"]).with_inputs("question"))
        return out[:limit] if limit else out

    def metric(example, prediction, trace=None):
        return float(example.answer in str(prediction.answer))

    TASK = Task("clitiny", load, lambda: dspy.Predict(QA), metric, "answer")
    '''
)


@pytest.fixture
def task_spec(tmp_path, monkeypatch):
    (tmp_path / "clitiny_task.py").write_text(TASK_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "clitiny_task:TASK"


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "alpha one", "answer": "alpha"}\n{"question": "beta two", "answer": "zzz"}\n', encoding="utf-8")
    return path


@pytest.fixture
def no_server(monkeypatch):
    """Fail loudly if the command tries to open the model pool (start a server)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model pool was opened before the input was validated")

    monkeypatch.setattr("fusion_dspy.cli.eval.open_pool", refuse)


def _invoke(*args):
    return CliRunner().invoke(app, ["eval", *map(str, args)])


@pytest.mark.parametrize(
    ("extra", "error", "message"),
    [
        (["--methods", "bon,vote"], ConfigurationError, "valid methods: greedy, bon, fusion, oracle, majority"),
        (["--n", "0"], ConfigurationError, "n must be >= 1"),
        (["--n", "1,x"], ConfigurationError, "comma-separated"),
        (["--concurrency", "0"], ConfigurationError, "concurrency must be a positive integer"),
        (["--methods", "majority"], ConfigurationError, "no answer normaliser"),
    ],
)
def test_bad_options_fail_before_any_model(no_server, task_spec, data, extra, error, message):
    result = _invoke("--task", task_spec, "--data", data, *extra)
    assert isinstance(result.exception, error), result.output
    assert message in str(result.exception)


def test_unknown_task_lists_the_valid_ones(no_server, data):
    result = _invoke("--task", "nosuchtask", "--data", data)
    assert isinstance(result.exception, ConfigurationError)
    assert "unknown task 'nosuchtask'; valid tasks:" in str(result.exception)


def test_bad_data_names_file_and_line(no_server, task_spec, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "b"}\n{"question": "a"\n', encoding="utf-8")
    result = _invoke("--task", task_spec, "--data", bad)
    assert isinstance(result.exception, DataError)
    assert f"{bad}:2: bad JSON" in str(result.exception)
    missing = _invoke("--task", task_spec, "--data", tmp_path / "nope.jsonl")
    assert isinstance(missing.exception, DataError) and "does not exist" in str(missing.exception)


def test_bad_pool_file_fails_before_any_server(no_server, task_spec, data, tmp_path):
    pool = tmp_path / "pool.yaml"
    pool.write_text("model_list: []\n", encoding="utf-8")
    result = _invoke("--task", task_spec, "--data", data, "--pool", pool)
    assert isinstance(result.exception, ConfigurationError) and "model_list" in str(result.exception)


def test_eval_against_a_server_writes_records_and_summary_and_resumes(task_spec, data, tmp_path):
    out = tmp_path / "out"
    with FakeOpenAIServer() as srv:
        args = ["--task", task_spec, "--data", data, "--n", "1,2", "--methods", "greedy,bon,fusion,oracle", "--out", out,
                "--model", "openai/fake", "--api-base", srv.api_base, "--no-progress", "--max-tokens", "64"]
        result = _invoke(*args)
        assert result.exit_code == 0, result.output + repr(result.exception)
        for method in ("greedy", "bon", "fusion", "oracle"):
            assert method in result.output
        assert f"records and summary in {out}" in result.output
        calls = srv.calls
        again = _invoke(*args)
        assert again.exit_code == 0 and srv.calls == calls
    assert len(list(iter_records(out / "records.jsonl"))) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert {r["method"] for r in summary["rows"]} == {"greedy", "bon", "fusion", "oracle"}
    assert (out / "scaling.png").exists() and (out / "summary.md").exists()


def test_skip_bad_rows_counts_them(task_spec, tmp_path):
    data = tmp_path / "mixed.jsonl"
    data.write_text('{"question": "alpha one", "answer": "alpha"}\n[1, 2]\n{"question": "x"}\n', encoding="utf-8")
    out = tmp_path / "out"
    with FakeOpenAIServer() as srv:
        result = _invoke("--task", task_spec, "--data", data, "--skip-bad-rows", "--methods", "bon", "--n", "2", "--out", out,
                         "--model", "openai/fake", "--api-base", srv.api_base, "--no-progress")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "bad rows skipped 2" in result.output
    assert json.loads((out / "summary.json").read_text())["counts"]["bad_rows_skipped"] == 2
