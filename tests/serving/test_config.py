"""The serving configuration is validated completely before anything starts."""

from __future__ import annotations

import pytest

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.serving.config import load_serve_config, parse_serve_config
from fusion_dspy.serving.vllm import vllm_command


def _vllm(name="qwen", **extra):
    return {"name": name, "engine": "vllm", "model": "Qwen/Qwen2.5-0.5B-Instruct", **extra}


def test_a_bare_list_and_a_mapping_are_accepted():
    cfg = parse_serve_config([_vllm(port=8001)])
    assert [m.name for m in cfg.models] == ["qwen"] and cfg.models[0].ports == (8001,)
    cfg = parse_serve_config({"models": [_vllm()], "startup_timeout": 60, "log_dir": "logs"})
    assert cfg.startup_timeout == 60 and cfg.models[0].ports == (None,)


def test_replicas_as_a_count_or_a_list_of_ports():
    assert parse_serve_config([_vllm(port=8001, replicas=3)]).models[0].ports == (8001, 8002, 8003)
    assert parse_serve_config([_vllm(replicas=[9000, 9005])]).models[0].ports == (9000, 9005)
    assert parse_serve_config([_vllm(replicas=2)]).models[0].ports == (None, None)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([_vllm(engine="tgi")], r"engine must be one of .*'tgi'"),
        ([_vllm(), _vllm()], r"'qwen' appears more than once"),
        ([{"name": "qwen", "engine": "vllm"}], r"model 'qwen': 'model' is missing"),
        ([{"engine": "vllm", "model": "x"}], r"'name' is missing"),
        ([_vllm(port=8001), _vllm("gemma", port=8001)], r"port 8001 is used by models 'qwen' and 'gemma'"),
        ([_vllm(port=8001, replicas=2), _vllm("gemma", port=8002)], r"port 8002 is used by models 'qwen' and 'gemma'"),
        ([_vllm(replicas=[8001, 8001])], r"port 8001 is used by model 'qwen' \(twice\)"),
        ([_vllm(port=70000)], r"port must be an integer in 1..65535"),
        ([_vllm(replicas=0)], r"replicas must be a positive integer"),
        ([_vllm(args={"tensor_parallel": 2})], r"unknown args.tensor_parallel .*args.extra"),
        ([_vllm(args={"max_model_len": "4k"})], r"args.max_model_len must be an integer"),
        ([_vllm(args={"gpu_memory_utilization": 1.5})], r"gpu_memory_utilization must be in \(0, 1\]"),
        ([_vllm(args={"extra": [{"a": 1}]})], r"args.extra must be a list"),
        ([_vllm(role="judge")], r"unknown role\(s\) \['judge'\]"),
        ([_vllm(role="fusor"), _vllm("b", role="fusor")], r"role 'fusor' is given to several models"),
        ([_vllm(colour="red")], r"unknown keys \['colour'\]"),
        ([_vllm(api_base="http://x")], r"'api_base' applies to engine url only"),
        ([_vllm(replicas=2, cuda_devices=["0"])], r"cuda_devices must list one .* per replica \(2\)"),
        ([{"name": "g", "engine": "url", "model": "openai/x"}], r"engine url needs 'api_base'"),
        ([{"name": "g", "engine": "url", "model": "openai/x", "api_base": "ftp://x"}], r"api_base must be an http"),
        (
            [{"name": "g", "engine": "url", "model": "openai/x", "api_base": "http://x", "port": 1}],
            r"'port' does not apply",
        ),
        ([{"name": "e", "engine": "embedded", "role": "reward"}], r"role 'reward' needs engine vllm"),
        (
            [{"name": "e", "engine": "embedded", "args": {"n_ctx": 4096, "gpu": 1}}],
            r"unknown args.gpu for engine embedded",
        ),
        ([_vllm(name="a/b")], r"must not contain '/'"),
        ({"models": []}, r"'models' must be a non-empty list"),
        ({"models": [_vllm()], "startup_timeout": -1}, r"startup_timeout must be a positive number"),
        ({"modles": [_vllm()]}, r"unknown top-level keys \['modles'\]"),
        ("just text", r"expected a list of models"),
    ],
)
def test_bad_configurations_name_the_setting(doc, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_serve_config(doc)


def test_roles_become_the_fusion_dspy_section():
    cfg = parse_serve_config(
        [
            _vllm("a", role=["teacher", "fusor"]),
            _vllm("b", role="teacher"),
            _vllm("rm", role="reward"),
        ]
    )
    assert cfg.roles == {"teachers": ["a", "b"], "fusor": "a", "reward_model": "rm"}
    explicit = parse_serve_config(
        {"models": [_vllm("a")], "fusion_dspy": {"teachers": ["a"], "samples_per_teacher": 2}}
    )
    assert explicit.roles == {"teachers": ["a"], "samples_per_teacher": 2}


def test_vllm_command_line():
    spec = parse_serve_config(
        [
            _vllm(
                args={
                    "tensor_parallel_size": 2,
                    "gpu_memory_utilization": 0.8,
                    "max_model_len": 4096,
                    "dtype": "bfloat16",
                    "enable_prefix_caching": True,
                    "max_num_seqs": 64,
                    "trust_remote_code": True,
                    "extra": ["--seed", "1"],
                }
            )
        ]
    ).models[0]
    assert vllm_command(spec, port=8001) == [
        "vllm", "serve", "Qwen/Qwen2.5-0.5B-Instruct", "--host", "127.0.0.1", "--port", "8001",
        "--served-model-name", "qwen", "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.8",
        "--max-model-len", "4096", "--dtype", "bfloat16", "--enable-prefix-caching", "--max-num-seqs", "64",
        "--trust-remote-code", "--seed", "1",
    ]
    off = parse_serve_config([_vllm(args={"enable_prefix_caching": False})]).models[0]
    assert "--no-enable-prefix-caching" in vllm_command(off, port=1)


def test_reward_models_are_served_as_pooling_models_unless_told_otherwise():
    rm = parse_serve_config([_vllm("rm", role="reward")]).models[0]
    assert vllm_command(rm, port=1)[-2:] == ["--runner", "pooling"]
    old = parse_serve_config([_vllm("rm", role="reward", args={"extra": ["--task", "reward"]})]).models[0]
    cmd = vllm_command(old, port=1)
    assert cmd[-2:] == ["--task", "reward"] and "--runner" not in cmd
    classify = parse_serve_config(
        [_vllm("rm", role="reward", args={"runner": "pooling", "convert": "classify"})]
    ).models[0]
    assert vllm_command(classify, port=1).count("--runner") == 1


def test_load_from_yaml_file(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("log_dir: logs\nmodels:\n  - {name: q, engine: vllm, model: m, port: 8001}\n")
    cfg = load_serve_config(path)
    assert cfg.log_dir == tmp_path / "logs" and cfg.source == str(path)
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_serve_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        load_serve_config(bad)


def test_the_example_gpu_configuration_is_valid():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "serve_gpu.yaml"
    cfg = load_serve_config(example)
    assert [m.name for m in cfg.models] == ["qwen"] and cfg.roles == {"teachers": ["qwen"], "fusor": "qwen"}
    assert "--enable-prefix-caching" in vllm_command(cfg.models[0], port=8001)
