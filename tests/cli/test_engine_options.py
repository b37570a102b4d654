"""``--engine``, ``--ray-address`` and ``--ray-workers`` of ``synth``: bad input fails before any model runs."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from fusion_dspy.cli.main import app
from fusion_dspy.errors import ConfigurationError


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "hello"}) + "\n")
    return path


def _synth(prompts, out, *extra):
    # an endpoint that is never called: every case below fails before the pool is opened
    return CliRunner().invoke(app, ["synth", "--prompts", str(prompts), "--out", str(out), "--model", "openai/x",
                                    "--api-base", "http://127.0.0.1:9/v1", *extra])


def test_engine_ray_without_ray_installed_says_what_to_install(prompts, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    result = _synth(prompts, tmp_path / "out", "--engine", "ray")
    assert isinstance(result.exception, ConfigurationError)
    assert "pip install 'fusion-dspy[ray]'" in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_a_bad_ray_address_fails_naming_the_accepted_forms(prompts, tmp_path):
    result = _synth(prompts, tmp_path / "out", "--engine", "ray", "--ray-address", "http://head:6379")
    assert isinstance(result.exception, ConfigurationError)
    assert "'auto'" in str(result.exception) and "HOST:PORT" in str(result.exception)


def test_ray_options_need_the_ray_engine(prompts, tmp_path):
    result = _synth(prompts, tmp_path / "out", "--ray-workers", "2")
    assert isinstance(result.exception, ConfigurationError) and "--engine ray" in str(result.exception)


def test_an_unknown_engine_fails(prompts, tmp_path):
    result = _synth(prompts, tmp_path / "out", "--engine", "spark")
    assert isinstance(result.exception, ConfigurationError) and "inprocess or ray" in str(result.exception)


def test_eval_checks_the_engine_options_too(tmp_path, monkeypatch):
    data = tmp_path / "mgsm.tsv"
    data.write_text("question one\t1\n")
    monkeypatch.setitem(sys.modules, "ray", None)
    result = CliRunner().invoke(app, ["eval", "--task", "mgsm", "--data", str(data), "--out", str(tmp_path / "out"), "--model", "openai/x",
                                      "--api-base", "http://127.0.0.1:9/v1", "--engine", "ray"])
    assert isinstance(result.exception, ConfigurationError) and "pip install 'fusion-dspy[ray]'" in str(result.exception)
    assert not (tmp_path / "out").exists()
