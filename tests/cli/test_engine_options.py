"""``--engine``, ``--ray-address``, ``--ray-workers``, ``--ray-engines`` of ``synth`` and ``eval``: bad input fails before any model runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fusion_dspy.cli.main import app
from fusion_dspy.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]


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


def test_ray_engines_need_the_ray_engine_and_a_file(prompts, tmp_path):
    result = _synth(prompts, tmp_path / "out", "--ray-engines", "examples/ray_gpu_cluster.yaml")
    assert isinstance(result.exception, ConfigurationError) and "--ray-engines needs --engine ray" in str(result.exception)
    result = _synth(prompts, tmp_path / "out", "--engine", "ray", "--ray-engine-models", "qwen-32b")
    assert isinstance(result.exception, ConfigurationError) and "--ray-engine-models needs --ray-engines" in str(result.exception)


def test_ray_engines_must_name_teachers_of_the_pool(prompts, tmp_path, monkeypatch):
    """The file's models against the pool's teachers: checked after the pool is read, before Ray starts."""
    import ray

    from tests.fakes.openai_server import FakeOpenAIServer

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray was started"))
    cluster = str(REPO / "examples" / "ray_gpu_cluster.yaml")
    with FakeOpenAIServer() as srv:  # the pool's one model answers its reachability check, and nothing else
        def synth(*extra):
            return CliRunner().invoke(app, ["synth", "--prompts", str(prompts), "--out", str(tmp_path / "out"), "--model", "openai/x",
                                            "--api-base", srv.api_base, "--engine", "ray", "--ray-engines", cluster, *extra])

        result = synth()
        assert isinstance(result.exception, ConfigurationError), result.output
        assert "none of the pool's teachers" in str(result.exception) and "command-a" in str(result.exception)
        result = synth("--ray-engine-models", "qwen-3")
        assert isinstance(result.exception, ConfigurationError) and "unknown model 'qwen-3'" in str(result.exception)
        result = synth("--ray-engine-models", "qwen-32b")
        assert isinstance(result.exception, ConfigurationError) and "'qwen-32b' is not a teacher of the pool" in str(result.exception)
        assert srv.calls <= 3  # health checks at most: no sampling
    assert not (tmp_path / "out").exists()


def _capture_synthesize(monkeypatch, tmp_path) -> dict:
    """Replace synthesize by a recorder of its keyword arguments (what the CLI passed), returned as a dict."""
    import fusion_dspy.synth
    from fusion_dspy.synth.run import SynthStats

    seen: dict = {}

    def synthesize(*args, **kwargs):
        seen.update(kwargs)
        return SynthStats(records_path=str(tmp_path / "out" / "synth.jsonl"))

    monkeypatch.setattr(fusion_dspy.synth, "synthesize", synthesize)
    return seen


def test_ray_engines_reach_synthesize_as_processor_configs(prompts, tmp_path, monkeypatch):
    """A pool named like the GPU example's models: the chosen teachers go to synthesize as vLLM processor configs."""
    from tests.fakes.openai_server import FakeOpenAIServer

    seen = _capture_synthesize(monkeypatch, tmp_path)
    with FakeOpenAIServer() as srv:
        pool = _gpu_pool(tmp_path / "pool.yaml", srv.api_base)
        cluster = str(REPO / "examples" / "ray_gpu_cluster.yaml")
        base = ["synth", "--prompts", str(prompts), "--out", str(tmp_path / "out"), "--pool", str(pool), "--engine", "ray",
                "--ray-engines", cluster]
        result = CliRunner().invoke(app, base)
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert seen["engine"] == "ray" and list(seen["ray_engines"]) == ["command-a", "qwen-32b"]  # `mine` stays HTTP
        assert seen["ray_engines"]["command-a"].engine_kwargs["tensor_parallel_size"] == 4
        result = CliRunner().invoke(app, [*base, "--ray-engine-models", "qwen-32b"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert list(seen["ray_engines"]) == ["qwen-32b"]


def test_the_fusor_is_an_engine_when_fusion_runs_and_the_file_has_its_name(prompts, tmp_path, monkeypatch):
    """The pool's fusor named like an `engine: vllm` model of the file runs as an engine with the teachers; not with bon only."""
    from tests.fakes.openai_server import FakeOpenAIServer

    seen = _capture_synthesize(monkeypatch, tmp_path)
    with FakeOpenAIServer() as srv:
        pool = _gpu_pool(tmp_path / "pool.yaml", srv.api_base, teachers="[qwen-32b]")
        base = ["synth", "--prompts", str(prompts), "--out", str(tmp_path / "out"), "--pool", str(pool), "--engine", "ray",
                "--ray-engines", str(REPO / "examples" / "ray_gpu_cluster.yaml")]
        for extra, engines in (([], ["qwen-32b", "command-a"]), (["--ray-engine-models", "command-a"], ["command-a"]),
                               (["--methods", "bon"], ["qwen-32b"])):
            result = CliRunner().invoke(app, [*base, *extra])
            assert result.exit_code == 0, result.output + repr(result.exception)
            assert list(seen["ray_engines"]) == engines, extra


def _eval(data, out, *extra):
    return CliRunner().invoke(app, ["eval", "--task", "mgsm", "--data", str(data), "--out", str(out), *extra])


@pytest.fixture
def mgsm_data(tmp_path):
    data = tmp_path / "mgsm.tsv"
    data.write_text("question one\t1\nquestion two\t2\n")
    return data


def _gpu_pool(path: Path, api_base: str, teachers: str = "[command-a, qwen-32b, mine]") -> Path:
    """A pool named like the GPU example's models (command-a, qwen-32b) plus one of its own (mine), all at ``api_base``."""
    path.write_text(
        "model_list:\n"
        f"  - model_name: command-a\n    litellm_params: {{model: openai/command-a, api_base: '{api_base}'}}\n"
        f"  - model_name: qwen-32b\n    litellm_params: {{model: openai/qwen, api_base: '{api_base}'}}\n"
        f"  - model_name: mine\n    litellm_params: {{model: openai/mine, api_base: '{api_base}'}}\n"
        f"fusion_dspy:\n  teachers: {teachers}\n  fusor: command-a\n"
    )
    return path


def test_eval_ray_engines_need_the_ray_engine_and_a_file(mgsm_data, tmp_path):
    base = ("--model", "openai/x", "--api-base", "http://127.0.0.1:9/v1")
    result = _eval(mgsm_data, tmp_path / "out", *base, "--ray-engines", "examples/ray_gpu_cluster.yaml")
    assert isinstance(result.exception, ConfigurationError) and "--ray-engines needs --engine ray" in str(result.exception)
    result = _eval(mgsm_data, tmp_path / "out", *base, "--engine", "ray", "--ray-engine-models", "qwen-32b")
    assert isinstance(result.exception, ConfigurationError) and "--ray-engine-models needs --ray-engines" in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_eval_ray_engines_must_name_teachers_of_the_pool_before_ray_starts(mgsm_data, tmp_path, monkeypatch):
    """Bad names fail after the pool is read, before Ray starts or the folder is made; eval's fusor is no engine."""
    import ray

    from tests.fakes.openai_server import FakeOpenAIServer

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray was started"))
    cluster = str(REPO / "examples" / "ray_gpu_cluster.yaml")
    with FakeOpenAIServer() as srv:  # the pool's models answer their reachability checks, and nothing else
        pool = _gpu_pool(tmp_path / "pool.yaml", srv.api_base, teachers="[mine]")

        def run(*extra):
            return _eval(mgsm_data, tmp_path / "out", "--pool", str(pool), "--engine", "ray", "--ray-engines", cluster, *extra)

        result = run()
        assert isinstance(result.exception, ConfigurationError), result.output
        assert "none of the pool's teachers (mine)" in str(result.exception)
        result = run("--ray-engine-models", "qwen-3")
        assert isinstance(result.exception, ConfigurationError) and "unknown model 'qwen-3'" in str(result.exception)
        result = run("--ray-engine-models", "command-a")  # the pool's fusor: eval samples teachers only on engines
        assert isinstance(result.exception, ConfigurationError) and "'command-a' is not a teacher of the pool (mine)" in str(result.exception)
        assert not srv.requests  # no POST: nothing was sampled (the checks are GETs)
    assert not (tmp_path / "out").exists()


def test_eval_ray_engines_reach_the_eval_run_as_processor_configs(mgsm_data, tmp_path, monkeypatch):
    """The teachers the file runs as engines go to the eval run as vLLM processor configs, with the Ray options."""
    import fusion_dspy.eval
    from tests.fakes.openai_server import FakeOpenAIServer

    seen = {}

    def run(plan, roles, out_dir, **kwargs):
        seen.update(kwargs, teachers=list(roles.teachers))
        return {"task": "mgsm", "rows": [], "counts": {"done": 0, "failed": 0, "bad_rows_skipped": 0}}

    monkeypatch.setattr(fusion_dspy.eval, "run", run)
    with FakeOpenAIServer() as srv:
        pool = _gpu_pool(tmp_path / "pool.yaml", srv.api_base)
        base = ["--pool", str(pool), "--engine", "ray", "--ray-workers", "2", "--ray-engines", str(REPO / "examples" / "ray_gpu_cluster.yaml")]
        result = _eval(mgsm_data, tmp_path / "out", *base)
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert seen["ray"].workers == 2 and seen["teachers"] == ["command-a", "qwen-32b", "mine"]
        assert list(seen["ray_engines"]) == ["command-a", "qwen-32b"]  # `mine` stays HTTP
        assert seen["ray_engines"]["command-a"].engine_kwargs["tensor_parallel_size"] == 4
        result = _eval(mgsm_data, tmp_path / "out", *base, "--ray-engine-models", "qwen-32b")
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert list(seen["ray_engines"]) == ["qwen-32b"]
        result = _eval(mgsm_data, tmp_path / "out", "--pool", str(pool), "--engine", "ray")
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert seen["ray_engines"] is None  # without --ray-engines every teacher is sampled over HTTP


def test_eval_run_checks_its_engines_before_the_folder_is_made(tmp_path):
    """The library's eval run: an engine that is no teacher, or no processor configuration, or engines without Ray."""
    from fusion_dspy.eval import prepare, roles_from_pool, run
    from fusion_dspy.lm.endpoints import Endpoint, Pool
    from fusion_dspy.records.ray_runner import RayOptions
    from fusion_dspy.serving.config import load_serve_config
    from fusion_dspy.serving.ray_llm import engines_for_pool

    data = tmp_path / "mgsm.tsv"
    data.write_text("question one\t1\n")
    eps = {n: Endpoint(n, f"openai/{n}", api_base="http://127.0.0.1:9/v1") for n in ("qwen-32b", "mine")}
    roles = roles_from_pool(Pool(eps, ("qwen-32b", "mine")), max_tokens=32)
    plan = prepare("mgsm", data, n="2", methods="majority")
    engines = engines_for_pool(load_serve_config(REPO / "examples" / "ray_gpu_cluster.yaml"), ("qwen-32b", "mine"))
    out = tmp_path / "out"
    with pytest.raises(ConfigurationError, match="engine 'x' is not a teacher of the pool \\(qwen-32b, mine\\): eval runs only teachers"):
        run(plan, roles, out, ray=RayOptions(), ray_engines={"x": engines["qwen-32b"]})
    with pytest.raises(ConfigurationError, match="expected a ray.data.llm processor configuration"):
        run(plan, roles, out, ray=RayOptions(), ray_engines={"qwen-32b": {"model_source": "org/m"}})
    with pytest.raises(ConfigurationError, match="ray_engines need ray="):
        run(plan, roles, out, ray_engines=engines)
    assert not out.exists()


def test_engine_only_models_need_no_server_but_http_roles_are_still_checked(prompts, mgsm_data, tmp_path, monkeypatch):
    """On a GPU cluster an engine teacher has no server: the endpoint check skips it, not the scorer or eval's greedy teacher."""
    import fusion_dspy.eval
    import fusion_dspy.synth
    from fusion_dspy.synth.run import SynthStats
    from tests.fakes.openai_server import FakeOpenAIServer

    seen = {}
    monkeypatch.setattr(fusion_dspy.synth, "synthesize", lambda *a, **k: seen.update(k) or SynthStats(records_path=str(tmp_path / "s.jsonl")))
    monkeypatch.setattr(fusion_dspy.eval, "run", lambda *a, **k: pytest.fail("eval ran although its greedy teacher has no server"))
    cluster = str(REPO / "examples" / "ray_gpu_cluster.yaml")
    dead = "http://127.0.0.1:9/v1"  # nothing listens: an engine-only model's pool entry

    def pool(rater: str, fusor: str = "command-a") -> Path:
        path = tmp_path / f"pool-{rater}-{fusor}.yaml"
        path.write_text(
            "model_list:\n"
            f"  - model_name: command-a\n    litellm_params: {{model: openai/command-a, api_base: '{dead}'}}\n"
            f"  - model_name: qwen-32b\n    litellm_params: {{model: openai/qwen, api_base: '{dead}'}}\n"
            f"  - model_name: mine\n    litellm_params: {{model: openai/mine, api_base: '{srv.api_base}'}}\n"
            f"fusion_dspy:\n  teachers: [command-a, qwen-32b, mine]\n  fusor: {fusor}\n  rater: {rater}\n"
        )
        return path

    with FakeOpenAIServer() as srv:
        synth = ["synth", "--prompts", str(prompts), "--out", str(tmp_path / "out"), "--engine", "ray", "--ray-engines", cluster]
        result = CliRunner().invoke(app, [*synth, "--pool", str(pool("mine"))])
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert sorted(seen["ray_engines"]) == ["command-a", "qwen-32b"]
        result = CliRunner().invoke(app, [*synth, "--pool", str(pool("qwen-32b"))])  # the scorer is called over HTTP
        assert result.exit_code != 0 and "qwen-32b" in result.output + str(result.exception)
        # eval: greedy asks the first teacher (command-a) over HTTP, so it is checked although it is an engine
        result = _eval(mgsm_data, tmp_path / "ev", "--pool", str(pool("mine")), "--engine", "ray", "--ray-engines", cluster)
        assert result.exit_code != 0 and "command-a" in result.output + str(result.exception)
        assert "qwen-32b" not in result.output + str(result.exception)
        seen.clear()  # without greedy (and another fusor: eval's fusor is HTTP), the first teacher is an engine only too

        class Reached(Exception):
            pass

        def reached(*args, **kwargs):
            seen.update(kwargs)
            raise Reached

        monkeypatch.setattr(fusion_dspy.eval, "run", reached)
        result = _eval(mgsm_data, tmp_path / "ev2", "--pool", str(pool("mine", fusor="mine")), "--engine", "ray", "--ray-engines", cluster,
                       "--methods", "majority,fusion", "--n", "2")
        assert isinstance(result.exception, Reached), result.output + repr(result.exception)
        assert sorted(seen["ray_engines"]) == ["command-a", "qwen-32b"]
