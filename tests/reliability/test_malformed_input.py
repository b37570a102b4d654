"""Malformed data and configuration: a clear error naming the file and line or the setting, before any model call."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fusion_dspy.cli.main import app
from fusion_dspy.errors import ConfigurationError, DataError
from tests.fakes.openai_server import FakeOpenAIServer
from tests.reliability._tiny_task import SPEC, write_data, write_prompts

GOOD_ROW = b'{"question": "q one", "answer": "a"}\n'


@pytest.fixture(scope="module")
def server():
    """A live server, so that only validation (not an unreachable endpoint) can stop the command."""
    with FakeOpenAIServer() as srv:
        yield srv


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


DATA_CASES = [
    ("bad_json", GOOD_ROW + b'{"question": "q two", "answer": \n', ":2: bad JSON"),
    ("missing_field", GOOD_ROW + GOOD_ROW + b'{"question": "q three"}\n', ":3:"),
    ("wrong_type", GOOD_ROW + b'{"question": 5, "answer": "a"}\n', ":2:"),
    ("not_object", b"[1, 2, 3]\n", ":1:"),
    ("empty", b"", "file is empty"),
    ("not_utf8", GOOD_ROW + b'{"question": "caf\xe9", "answer": "a"}\n', ":2:"),
]


@pytest.mark.parametrize(("name", "content", "where"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_eval_bad_data(server, tmp_path, name, content, where):
    data = _write(tmp_path / f"{name}.jsonl", content)
    result = _invoke("eval", "--task", SPEC, "--data", data, "--out", tmp_path / "out", "--no-progress",
                     "--model", "openai/fake", "--api-base", server.api_base)
    assert isinstance(result.exception, DataError), result.output + repr(result.exception)
    message = str(result.exception)
    assert str(data) in message and where in message, message
    if name == "missing_field":
        assert "answer" in message
    assert server.calls == 0


SYNTH_CASES = [
    ("bad_json", b'{"prompt": "hi"}\n{"prompt": \n', ":2:"),
    ("missing_field", b'{"prompt": "hi"}\n{"text": "no prompt"}\n', ":2: missing field 'prompt'"),
    ("wrong_type", b'{"prompt": "hi"}\n{"prompt": 5}\n', ":2:"),
    ("empty_prompt", b'{"prompt": "  "}\n', ":1:"),
    ("empty", b"", "empty"),
    ("not_utf8", b'{"prompt": "hi"}\n{"prompt": "caf\xe9"}\n', ":2:"),
]


@pytest.mark.parametrize(("name", "content", "where"), SYNTH_CASES, ids=[c[0] for c in SYNTH_CASES])
def test_synth_bad_prompts(server, tmp_path, name, content, where):
    prompts = _write(tmp_path / f"{name}.jsonl", content)
    result = _invoke("synth", "--prompts", prompts, "--out", tmp_path / "out", "--model", "openai/fake", "--api-base", server.api_base)
    assert isinstance(result.exception, DataError), result.output + repr(result.exception)
    assert str(prompts) in str(result.exception) and where in str(result.exception), str(result.exception)
    assert server.calls == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "0"], "--n"),
        (["--concurrency", "0"], "--concurrency"),
        (["--methods", "fusion,vote"], "unknown synth method(s) vote"),
        (["--language", "xx"], "unknown language code 'xx'"),
    ],
)
def test_synth_bad_options(server, tmp_path, args, message):
    prompts = write_prompts(tmp_path / "p.jsonl", 2)
    result = _invoke("synth", "--prompts", prompts, "--out", tmp_path / "out", *args, "--model", "openai/fake", "--api-base", server.api_base)
    assert result.exit_code != 0
    assert message in (result.output + str(result.exception)), result.output
    assert server.calls == 0


def _pool(tmp_path, text: str):
    p = tmp_path / "pool.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def _model_list(base: str, *, extra: str = "", roles: str = "") -> str:
    return (
        "model_list:\n"
        f"  - model_name: a\n    litellm_params: {{model: openai/a, api_base: '{base}'{extra}}}\n"
        f"  - model_name: b\n    litellm_params: {{model: openai/b, api_base: '{base}'}}\n" + roles
    )


POOL_CASES = [
    ("missing_api_base", lambda b: "model_list:\n  - model_name: q\n    litellm_params: {model: hosted_vllm/q}\n",
     "'q': model 'hosted_vllm/q' needs an api_base"),
    ("no_provider", lambda b: f"model_list:\n  - model_name: q\n    litellm_params: {{model: qwen, api_base: '{b}'}}\n",
     "'q': model must be a LiteLLM model string"),
    ("unknown_provider", lambda b: f"model_list:\n  - model_name: q\n    litellm_params: {{model: hosted_vlm/q, api_base: '{b}'}}\n",
     "does not know the provider 'hosted_vlm'"),
    ("unknown_fusor", lambda b: _model_list(b, roles="fusion_dspy: {fusor: c}\n"), "fusor 'c' is not a model_name"),
    ("unknown_teacher", lambda b: _model_list(b, roles="fusion_dspy: {teachers: [a, zz]}\n"), "teacher 'zz' is not a model_name"),
    ("duplicate_teachers", lambda b: _model_list(b, roles="fusion_dspy: {teachers: [a, a]}\n"), "teachers listed more than once: ['a']"),
    ("samples_zero", lambda b: _model_list(b, roles="fusion_dspy: {samples_per_teacher: 0}\n"), "fusion_dspy.samples_per_teacher must be >= 1"),
    ("samples_text", lambda b: _model_list(b, roles="fusion_dspy: {samples_per_teacher: many}\n"),
     "fusion_dspy.samples_per_teacher must be an integer, got 'many'"),
    ("temperature_text", lambda b: _model_list(b, roles="fusion_dspy: {temperature: hot}\n"), "fusion_dspy.temperature must be a number"),
    ("retries_text", lambda b: _model_list(b, extra=", num_retries: lots"), "'a' litellm_params.num_retries must be an integer"),
    ("unknown_role_key", lambda b: _model_list(b, roles="fusion_dspy: {fusr: a}\n"), "unknown keys under fusion_dspy: ['fusr']"),
    ("empty_model_list", lambda b: "model_list: []\n", "model_list must be a non-empty list"),
    ("not_yaml", lambda b: "model_list: [\n", "is not valid YAML"),
    ("no_model_list", lambda b: "models: {}\n", "must have a top-level 'model_list'"),
]


@pytest.mark.parametrize(("name", "make", "message"), POOL_CASES, ids=[c[0] for c in POOL_CASES])
@pytest.mark.parametrize("command", ["eval", "synth"])
def test_bad_pool_yaml_names_the_file_and_setting(server, tmp_path, name, make, message, command):
    pool = _pool(tmp_path, make(server.api_base))
    if command == "eval":
        args = ["eval", "--task", SPEC, "--data", write_data(tmp_path / "d.jsonl", 2), "--no-progress"]
    else:
        args = ["synth", "--prompts", write_prompts(tmp_path / "p.jsonl", 2)]
    result = _invoke(*args, "--out", tmp_path / "out", "--pool", pool)
    assert isinstance(result.exception, ConfigurationError), result.output + repr(result.exception)
    text = str(result.exception)
    assert message in text, text
    if name not in ("unknown_provider",):
        assert str(pool) in text, text
    assert server.calls == 0


def test_model_info_window_must_be_a_positive_integer(server, tmp_path):
    pool = _pool(tmp_path, _model_list(server.api_base).replace(
        "  - model_name: b\n", "    model_info: {max_input_tokens: big}\n  - model_name: b\n"))
    result = _invoke("synth", "--prompts", write_prompts(tmp_path / "p.jsonl", 2), "--out", tmp_path / "out", "--pool", pool)
    assert isinstance(result.exception, ConfigurationError)
    assert f"{pool}: 'a' model_info.max_input_tokens must be an integer, got 'big'" in str(result.exception)


def test_non_utf8_pool_file(server, tmp_path):
    pool = tmp_path / "pool.yaml"
    pool.write_bytes(_model_list(server.api_base).encode() + b"# caf\xe9\n")
    result = _invoke("synth", "--prompts", write_prompts(tmp_path / "p.jsonl", 2), "--out", tmp_path / "out", "--pool", pool)
    assert isinstance(result.exception, ConfigurationError) and str(pool) in str(result.exception)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "qwen", "--api-base", "http://127.0.0.1:1/v1"], "model must be a LiteLLM model string"),
        (["--model", "hosted_vllm/qwen"], "needs an api_base"),
        (["--model", "openai/x", "--api-base", "localhost:8000"], "api_base must be an http(s) URL"),
        (["--api-base", "http://127.0.0.1:1/v1"], "--api-base and --api-key need --model"),
    ],
)
def test_bad_model_options(tmp_path, args, message):
    result = _invoke("synth", "--prompts", write_prompts(tmp_path / "p.jsonl", 2), "--out", tmp_path / "out", *args)
    assert isinstance(result.exception, ConfigurationError), result.output + repr(result.exception)
    assert message in str(result.exception)
