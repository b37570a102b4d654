"""The GPU path of ``--engine ray``: vLLM engine processor configurations built from serve configurations (nothing started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.sampling import engine_request, parse_choice
from fusion_dspy.serving.config import load_serve_config, parse_serve_config
from fusion_dspy.serving.ray_llm import engine_processor_configs, engines_for_pool, gpus_per_replica

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_one_gpu_example_becomes_one_vllm_engine_processor():
    from ray.data.llm import vLLMEngineProcessorConfig

    config = load_serve_config(EXAMPLES / "serve_gpu.yaml")
    built = engine_processor_configs(config, batch_size=16)
    assert list(built) == ["qwen"]
    qwen = built["qwen"]
    assert isinstance(qwen, vLLMEngineProcessorConfig)
    assert qwen.model_source == "Qwen/Qwen2.5-1.5B-Instruct" and qwen.concurrency == 1 and qwen.batch_size == 16
    for key, value in config.models[0].args.items():  # the serve file's vLLM arguments, unchanged, as engine arguments
        assert qwen.engine_kwargs[key] == value


def test_the_gpu_cluster_example_builds_every_teacher_and_the_fusor():
    config = load_serve_config(EXAMPLES / "ray_gpu_cluster.yaml")
    built = engine_processor_configs(config)
    roles = config.roles
    assert set(roles["teachers"]) | {roles["fusor"]} <= set(built)  # every model the pipeline samples runs as an engine
    assert "rm" not in built  # the reward model (vLLM pooling) stays a served endpoint
    by_name = {m.name: m for m in config.models}
    for name, cfg in built.items():
        assert cfg.concurrency == len(by_name[name].ports)  # one engine actor per replica
        assert cfg.engine_kwargs["tensor_parallel_size"] == by_name[name].args["tensor_parallel_size"]
    gpus = sum(len(m.ports) * gpus_per_replica(m) for m in config.models)
    assert gpus == 19  # the total the file's header states, within its 4 x 8 GPUs
    # the file's own roles as a pool: every teacher runs as an engine (the fusor, command-a, is one of them)
    engines = engines_for_pool(config, roles["teachers"])
    assert list(engines) == list(roles["teachers"])
    assert {n: c.model_dump() for n, c in engines.items()} == {n: built[n].model_dump() for n in engines}


def _config(args: dict, engine: str = "vllm", **extra) -> object:
    model = {"name": "m", "engine": engine, "model": "org/model", "port": 8001, "args": args, **extra}
    return parse_serve_config({"models": [model]}, source="test.yaml")


def test_what_cannot_be_an_engine_fails_naming_the_model():
    with pytest.raises(ConfigurationError, match="'m'.*raw vLLM flags"):
        engine_processor_configs(_config({"max_model_len": 4096, "extra": ["--seed", "1"]}))
    with pytest.raises(ConfigurationError, match="'m'.*chat_template.*vllm serve"):
        engine_processor_configs(_config({"chat_template": "t.jinja"}))
    with pytest.raises(ConfigurationError, match="no `engine: vllm` model"):
        engine_processor_configs(parse_serve_config({"models": [{"name": "e", "engine": "embedded", "port": 8001}]}, source="e.yaml"))


def test_engine_rows_are_built_and_parsed_by_the_in_process_prompt_layer():
    from fusion_dspy.sampling import default_adapter
    from fusion_dspy.synth import synth_program

    program = synth_program()
    row = engine_request(program, {"prompt": "Name a fruit."}, sample=1, temperature=0.3, max_tokens=64, seed=10)
    assert row["messages"] == default_adapter().format(program.signature, program.demos, {"prompt": "Name a fruit."})
    assert row["sampling_params"] == {"temperature": 0.3, "max_tokens": 64, "seed": 11}
    cand = parse_choice(program, "An apple.", teacher="qwen", sample=1)
    assert cand.ok and cand.outputs == {"response": "An apple."} and (cand.model, cand.sample) == ("qwen", 1)
    assert not parse_choice(program, "", teacher="qwen", sample=0).ok
