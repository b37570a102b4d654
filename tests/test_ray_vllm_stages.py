"""``synth --engine ray`` with teachers run as ``ray.data.llm`` vLLM engine processors, on a local Ray instance.

vLLM is not installed here (no GPU): ``ray.data.llm.build_processor`` is replaced by one that
builds a real ``ray.data.llm`` ``Processor`` (its own preprocess / postprocess wrapping, the
``__data`` column, its handling of failed rows) around a fake engine stage: it logs every row it
receives and answers deterministically from the messages and the seed, with token counts, as
``vLLMEngineStageUDF`` does (and, like it, returns a failed request as a row with
``__inference_error__`` when ``should_continue_on_error`` is set, else raises).

Marked ``integration``: the pipeline runs Ray Data actors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.fuse import Fusor
from fusion_dspy.lm.endpoints import Endpoint, Pool
from fusion_dspy.records import iter_records
from fusion_dspy.records.ray_runner import RayOptions
from fusion_dspy.sampling import engine_request
from fusion_dspy.serving.config import parse_serve_config
from fusion_dspy.serving.ray_llm import engines_for_pool
from fusion_dspy.synth import synth_program, synthesize
from fusion_dspy.synth.ray_fusor import check_fusor_engine
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.integration

ray_llm_base = pytest.importorskip("ray.llm._internal.batch.stages.base")


def _plain(value):
    """Arrow/numpy values as the JSON types they hold (a processor's rows come out of Arrow)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def fake_answer(model: str, messages: list[dict], seed: int) -> str:
    return f"{model} answers: {messages[-1]['content'][-40:]} (seed {seed})"


FUSOR_MODEL = "org/fuser"


def fake_fused(model: str, messages: list[dict], params: dict) -> str:
    """The fake fusor: ``{response}`` (framing the guard refuses) for a FUSE-LOOPS prompt, and at temperature < 0.3 for a
    FUSE-LOOPS-ONCE one (so its retry, at 0.3, is usable); else a fused answer naming its sampling."""
    text = messages[-1]["content"]
    if "FUSE-LOOPS-ALWAYS" in text or ("FUSE-LOOPS-ONCE" in text and params["temperature"] < 0.3):
        return "{response}"
    return f"Fused by {model} at temperature {params['temperature']} with seed {params['seed']}."


class FakeEngineUDF(ray_llm_base.StatefulStageUDF):
    """Stands in for ``vLLMEngineStageUDF``: one answer per row, from its messages and seed, with token counts."""

    def __init__(self, data_column: str, expected_input_keys: list[str], model: str, log: str, continue_on_error: bool):
        super().__init__(data_column, expected_input_keys)
        self.model, self.log, self.continue_on_error = model, log, continue_on_error

    async def udf(self, batch):
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"model": self.model, "batch": len(batch),
                                 "rows": [{k: _plain(r[k]) for k in ("id", "i", "messages", "sampling_params")} for r in batch]}) + "\n")
        for row in batch:
            messages, params = _plain(row["messages"]), _plain(row["sampling_params"])
            out = {self.IDX_IN_BATCH_COLUMN: row[self.IDX_IN_BATCH_COLUMN], "time_taken_llm": 0.01, "__inference_error__": ""}
            if "ENGINE-FAILS" in messages[-1]["content"] and params["seed"] % 2 == 1:  # the second sample of such a prompt
                if not self.continue_on_error:
                    raise RuntimeError("the engine failed a request")
                yield {**out, "generated_text": "", "num_input_tokens": 0, "num_generated_tokens": 0,
                       "__inference_error__": "RuntimeError: the engine failed a request"}
                continue
            text = (fake_fused(self.model, messages, params) if self.model == FUSOR_MODEL else
                    fake_answer(self.model, messages, params["seed"]))
            prompt_tokens = sum(len(m["content"].split()) for m in messages)
            yield {**out, "generated_text": text, "num_input_tokens": prompt_tokens, "num_generated_tokens": len(text.split())}


class FakeEngineStage(ray_llm_base.StatefulStage):
    def get_required_input_keys(self) -> dict[str, str]:
        return {"messages": "the chat messages", "sampling_params": "the sampling parameters"}


@pytest.fixture
def fake_engines(monkeypatch, tmp_path):
    """``ray.data.llm.build_processor`` replaced; returns the log of the rows the fake engines received, and the configs built."""
    import ray
    import ray.data.llm
    from ray.data import ActorPoolStrategy
    from ray.llm._internal.batch.processor.base import Processor

    log = tmp_path / "engine-rows.jsonl"
    built = []
    # the fake stage's class goes to the Ray workers by value: they cannot import this test module
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

    def build_processor(config, preprocess=None, postprocess=None, **kwargs):
        built.append(config)
        stage = FakeEngineStage(
            fn=FakeEngineUDF,
            fn_constructor_kwargs={"model": config.model_source, "log": str(log), "continue_on_error": config.should_continue_on_error},
            map_batches_kwargs={"compute": ActorPoolStrategy(size=1), "num_cpus": 0.1},
        )
        return Processor(config, [stage], preprocess=preprocess, postprocess=postprocess)

    monkeypatch.setattr(ray.data.llm, "build_processor", build_processor)
    return log, built


def _serve_config(with_fusor: bool = False, **extra_args):
    models = [
        {"name": "t0", "engine": "vllm", "model": "org/teacher-0", "port": 8001, "role": "teacher",
         "args": {"max_model_len": 4096, **extra_args}},
        {"name": "other", "engine": "vllm", "model": "org/other", "port": 8003},
        {"name": "t1", "engine": "url", "model": "openai/t1", "api_base": "http://127.0.0.1:9/v1"},
        {"name": "rm", "engine": "vllm", "model": "org/rm", "port": 8005, "role": "reward"},
    ]
    if with_fusor:
        models.append({"name": "fuse", "engine": "vllm", "model": FUSOR_MODEL, "port": 8007, "replicas": 2})
    return parse_serve_config({"models": models}, source="cluster.yaml")


def _pool(api_base: str, k: int = 3) -> Pool:
    eps = {name: Endpoint(name, f"openai/{name}", api_base=api_base, defaults={"cache": False}) for name in ("t0", "t1", "fuse")}
    return Pool(eps, ("t0", "t1"), samples_per_teacher=k, fusor="fuse")


def _prompts(path: Path, n: int, fail: int | None = None) -> Path:
    rows = [{"prompt": f"Question {i}: name {i} things that are green." + (" ENGINE-FAILS" if i == fail else "")} if i % 3 else
            {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Say hello {i} times."}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _shape(value):
    """Field names and JSON types, recursively (lists by their first item)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__


def test_an_engine_teacher_writes_the_records_of_the_http_path(tmp_path, ray_address, fake_engines):
    """t0 on a (fake) vLLM engine processor, t1 over HTTP, k=3: the engine gets DSPy's messages and a seed per sample,
    and the records have the ids, fields, teachers and candidate counts of an all-HTTP run (in-process)."""
    log, built = fake_engines
    n = 7
    prompts = _prompts(tmp_path / "p.jsonl", n, fail=4)
    settings = {"methods": ("fusion", "bon"), "max_tokens": 64, "temperature": 0.5}
    with FakeOpenAIServer() as srv:
        pool = _pool(srv.api_base)
        engines = engines_for_pool(_serve_config(), pool.teachers, batch_size=4)
        assert list(engines) == ["t0"]  # t1 is `engine: url` in the file: it stays an HTTP stage
        # the reference: the in-process engine (whose records Ray's HTTP stages reproduce, tests/test_ray_engine.py)
        http = synthesize(prompts, tmp_path / "http", pool=pool, **settings)
        on_engine = synthesize(prompts, tmp_path / "engine", pool=pool, engine="ray", ray=RayOptions(workers=1),
                               ray_engines=engines, **settings)
        t0_http_calls = [r for r in srv.requests if r.get("model") == "t0"]
    assert (http.done, on_engine.done, on_engine.failed) == (n, n, 0), on_engine.failures
    assert len(built) == 1 and built[0].batch_size == 6 and built[0].should_continue_on_error  # a multiple of k; failures kept

    # what reached the engine: the adapter's messages for each prompt, samples 0, 1, 2 with seeds 0, 1, 2
    program = synth_program()
    received = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    rows = [r for batch in received for r in batch["rows"]]
    assert all(batch["batch"] % 3 == 0 for batch in received)  # whole groups per batch
    by_id: dict[str, list] = {}
    for r in rows:
        by_id.setdefault(r["id"], []).append(r)
    engine_records = {r["id"]: r for r in iter_records(tmp_path / "engine" / "synth.jsonl")}
    assert by_id.keys() == engine_records.keys() and all(len(v) == 3 for v in by_id.values())
    for rid, sent in by_id.items():
        record = engine_records[rid]
        user = {"prompt": _prompt_text(record)}
        for r in sorted(sent, key=lambda r: r["i"]):
            want = engine_request(program, user, sample=r["i"], temperature=0.5, max_tokens=64, seed=0)
            assert r["messages"] == want["messages"] and r["sampling_params"] == want["sampling_params"]
            assert r["sampling_params"] == {"temperature": 0.5, "max_tokens": 64, "seed": r["i"]}

    # the records: the HTTP run's ids, fields and configuration; t0's candidates are the engine's answers, with its tokens
    http_records = {r["id"]: r for r in iter_records(tmp_path / "http" / "synth.jsonl")}
    assert http_records.keys() == engine_records.keys()
    for rid, a in http_records.items():
        b = engine_records[rid]
        assert _shape(a) == _shape(b), rid
        for key in ("format", "kind", "config", "inputs", "attempt", "source"):
            assert a[key] == b[key], key
        assert [c["model"] for c in a["candidates"]["candidates"]] == [c["model"] for c in b["candidates"]["candidates"]] == [
            "t0", "t0", "t0", "t1", "t1", "t1"]
        for c in b["candidates"]["candidates"][:3]:
            if c["error"]:
                continue
            assert c["outputs"]["response"].startswith("org/teacher-0 answers: ") and c["outputs"]["response"].endswith(
                f"(seed {c['sample']})")
            assert c["usage"]["completion_tokens"] == len(c["outputs"]["response"].split()) and c["usage"]["calls"] == 1
    failed = [c for r in engine_records.values() for c in r["candidates"]["candidates"] if c["error"]]
    assert [(c["model"], c["sample"]) for c in failed] == [("t0", 1)]  # kept as a failed candidate; the row still made
    assert failed[0]["error"].startswith("vLLM engine: RuntimeError: the engine failed a request")
    assert len(t0_http_calls) == n  # only the in-process run called t0's endpoint (one n=3 request per prompt)


def _prompt_text(record: dict) -> str:
    from fusion_dspy.synth.prompts import Prompt

    return Prompt(tuple(record["messages"][:-1]), "").text


def test_engine_configuration_errors_come_before_ray_starts(tmp_path, monkeypatch):
    """Unknown names, teachers not in the file, non-engines and raw flags: ConfigurationErrors naming what to fix, no Ray."""
    import ray

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray, "init", no_ray)
    teachers = ("t0", "t1")
    with pytest.raises(ConfigurationError, match="unknown model 'nope': cluster.yaml has t0, other, t1, rm"):
        engines_for_pool(_serve_config(), teachers, ["nope"])
    with pytest.raises(ConfigurationError, match="'other' is not a teacher of the pool \\(t0, t1\\)"):
        engines_for_pool(_serve_config(), teachers, ["other"])
    with pytest.raises(ConfigurationError, match="'t1' of cluster.yaml is `engine: url`"):
        engines_for_pool(_serve_config(), teachers, ["t1"])
    with pytest.raises(ConfigurationError, match="'rm' of cluster.yaml is a reward model"):
        engines_for_pool(_serve_config(), teachers, ["rm"])
    with pytest.raises(ConfigurationError, match="none of the pool's teachers \\(a, b\\)"):
        engines_for_pool(_serve_config(), ("a", "b"))
    with pytest.raises(ConfigurationError, match="'t0'.*raw vLLM flags"):
        engines_for_pool(_serve_config(extra=["--seed", "1"]), teachers)

    prompts = _prompts(tmp_path / "p.jsonl", 2)
    pool = _pool("http://127.0.0.1:9/v1")
    engines = engines_for_pool(_serve_config(), teachers)
    with pytest.raises(ConfigurationError, match="engine 'x' is not a teacher of the pool"):
        synthesize(prompts, tmp_path / "out", pool=pool, engine="ray", ray_engines={"x": engines["t0"]})
    with pytest.raises(ConfigurationError, match="expected a ray.data.llm processor configuration"):
        synthesize(prompts, tmp_path / "out", pool=pool, engine="ray", ray_engines={"t0": {"model_source": "org/m"}})
    with pytest.raises(ConfigurationError, match="need engine='ray'"):
        synthesize(prompts, tmp_path / "out", pool=pool, ray_engines=engines)

    # the fusor as an engine: named like a model of the file, only when fusion runs, only a plain fusor without compare
    with pytest.raises(ConfigurationError, match="'other' is not a teacher of the pool \\(t0, t1\\) nor its fusor \\(fuse\\)"):
        engines_for_pool(_serve_config(with_fusor=True), teachers, ["other"], fusor="fuse")
    with pytest.raises(ConfigurationError, match="'fuse' is not a teacher of the pool \\(t0, t1\\): only teachers and the fusor"):
        engines_for_pool(_serve_config(with_fusor=True), teachers, ["fuse"])  # fusion does not run: no fusor given
    fusor_engine = engines_for_pool(_serve_config(with_fusor=True), teachers, ["fuse"], fusor="fuse")
    with pytest.raises(ConfigurationError, match="the fusor is given as an engine but fusion is not among the methods"):
        synthesize(prompts, tmp_path / "out", pool=pool, engine="ray", methods=("bon",), ray_engines=fusor_engine)
    with pytest.raises(ConfigurationError, match="engine 'x' is not a teacher of the pool \\(t0, t1\\) nor its fusor \\(fuse\\)"):
        synthesize(prompts, tmp_path / "out", pool=pool, engine="ray", ray_engines={"x": fusor_engine["fuse"]})
    for other in (Fusor(synth_program().signature, compare=True), Fusor(synth_program().signature, format="structured")):
        with pytest.raises(ConfigurationError, match="only with plain prompts and without compare"):
            check_fusor_engine(other)
    assert not (tmp_path / "out").exists()  # nothing claimed the folder


def _kept_candidates(record: dict):
    """The candidate set the record's methods saw: the candidates the filters kept (the record writes ``error`` as "")."""
    from fusion_dspy.types import CandidateSet

    part = record["candidates"]
    kept = [{**c, "error": None, "raw": c["raw"] or None} for c in part["candidates"] if c["index"] in record["filters"]["kept"]]
    return CandidateSet.from_dict({**part, "candidates": kept})


def test_the_fusor_on_an_engine_sends_the_in_process_prompt_retries_once_and_records_as_in_process(tmp_path, ray_address,
                                                                                                     fake_engines):
    """The fusor on a (fake) vLLM engine, the teacher and Best-of-N's rater over HTTP, k=2: the fusor's engine gets the
    messages Fusor.request/messages build for the record's candidates (the in-process call's, tests/test_fuse_pieces.py);
    its answer is the record's; an unusable answer gets one retry at temperature 0.3 and the next seed, then the
    in-process fallback with its reason; the records have the fields of an all-HTTP (in-process) run."""
    from fusion_dspy.errors import first_line
    from fusion_dspy.synth.steps import build_setup

    log, built = fake_engines
    rows = [{"prompt": f"Question {i}: name {i} things that are green." + {2: " FUSE-LOOPS-ONCE", 3: " FUSE-LOOPS-ALWAYS"}.get(i, "")}
            for i in range(4)]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    settings = {"methods": ("fusion", "bon"), "max_tokens": 64, "temperature": 0.5}
    with FakeOpenAIServer() as srv:
        config = _serve_config(with_fusor=True)
        assert list(engines_for_pool(config, ("t0", "t1"), fusor="fuse")) == ["t0", "fuse"]  # by default: teachers and fusor
        # one teacher, t1 over HTTP, and the fusor alone as an engine (as --ray-engine-models fuse): fewer actors, a shorter test
        pool = Pool({n: Endpoint(n, f"openai/{n}", api_base=srv.api_base, defaults={"cache": False}) for n in ("t1", "fuse")},
                    ("t1",), samples_per_teacher=2, fusor="fuse")
        engines = engines_for_pool(config, pool.teachers, ["fuse"], fusor=pool.fusor_name, batch_size=4)
        assert list(engines) == ["fuse"] and engines["fuse"].concurrency == 2  # one engine actor per replica
        http = synthesize(prompts, tmp_path / "http", pool=pool, **settings)
        srv.reset()
        on_engine = synthesize(prompts, tmp_path / "engine", pool=pool, engine="ray", ray=RayOptions(workers=1),
                               ray_engines=engines, **settings)
        over_http = [r.get("model") for r in srv.requests]
    assert (http.done, on_engine.done, on_engine.failed) == (4, 4, 0), on_engine.failures
    # the teachers and Best-of-N's rater (the fusor's endpoint, which the rater defaults to) over HTTP; the fusor not
    rater_calls = [r for r in srv.requests if r.get("model") == "fuse"]
    assert set(over_http) == {"t1", "fuse"} and all("max_tokens" in r and r["max_tokens"] == 256 for r in rater_calls)
    assert [c.concurrency for c in built] == [2, 1] and all(c.model_source == FUSOR_MODEL for c in built)  # the retry on one replica

    fusor = build_setup(pool, **settings).aggregators.fusor
    records = {r["id"]: r for r in iter_records(tmp_path / "engine" / "synth.jsonl")}
    sent: dict[str, list] = {}
    for batch in (json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()):
        if batch["model"] == FUSOR_MODEL:
            for r in batch["rows"]:
                sent.setdefault(r["id"], []).append(r)
    assert sent.keys() == records.keys()
    for rid, record in records.items():
        prompt = record["inputs"]["prompt"]
        request = fusor.request(_kept_candidates(record))
        calls = sent[rid]
        # the in-process prompt of every attempt (a retry's shows the drafts rotated)
        assert [c["messages"] for c in calls] == [fusor.messages(fusor.attempt_request(request, a)) for a in range(len(calls))]
        assert len(calls) == 1 or len(request.shown) < 2 or calls[1]["messages"] != calls[0]["messages"]
        assert [c["sampling_params"] for c in calls] == [fusor.sampling_params(request, a, seed=a) for a in range(len(calls))]
        fusion = record["methods"]["fusion"]
        if "FUSE-LOOPS" not in prompt:
            want = f"Fused by {FUSOR_MODEL} at temperature 0.0 with seed 0."
            assert len(calls) == 1 and fusion["outputs"]["response"] == want and fusion["fallback"] == ""
            assert record["answer_from"] == "fusion" and record["messages"][-1]["content"] == want
            assert fusion["fusion"]["usage"]["calls"] == 1 and fusion["fusion"]["usage"]["completion_tokens"] == len(want.split())
            assert fusion["fusion"]["order"] == list(request.order) and fusion["fusion"]["max_tokens"] == request.max_tokens
        elif "ONCE" in prompt:  # the retry (temperature 0.3, seed 1) is usable
            assert len(calls) == 2 and calls[1]["sampling_params"]["temperature"] == 0.3
            assert fusion["outputs"]["response"] == f"Fused by {FUSOR_MODEL} at temperature 0.3 with seed 1." and fusion["fallback"] == ""
            assert fusion["fusion"]["usage"]["calls"] == 2 and fusion["fusion"]["order"] == list(fusor.attempt_request(request, 1).order)
        else:  # unusable twice: Best-of-N's best candidate, with the in-process reason
            assert len(calls) == 2
            try:
                fusor.parse(request, "{response}")
            except ValueError as exc:
                error = first_line(exc)
            scores = {int(k): v for k, v in json.loads(record["methods"]["bon"]["selection"]["scores"]).items()}
            expected = fusor.fall_back(request, scores, error=error, attempts=2)
            assert fusion["fallback"] == expected.fallback and fusion["fallback"].endswith("returned the best-scored candidate")
            assert fusion["outputs"] == expected.outputs and fusion["fusion"]["raw"] == "{response}"
            assert record["messages"][-1]["content"] == expected.outputs["response"]

    http_records = {r["id"]: r for r in iter_records(tmp_path / "http" / "synth.jsonl")}
    assert http_records.keys() == records.keys()
    for rid, a in http_records.items():
        b = records[rid]
        assert _shape(a) == _shape(b), rid
        for key in ("format", "kind", "config", "inputs", "attempt", "source", "answer_from"):
            assert a[key] == b[key], key


def _shape_without(value, drop=("raw", "parse", "details")):
    """:func:`_shape` without fields whose keys depend on the answers' text: how a candidate was parsed (the fake engine's
    text has no ``Answer:`` line) and a selection's details (majority's votes are keyed by answer, the oracle's tie)."""
    if isinstance(value, dict):
        return {k: _shape_without(v, drop) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [_shape_without(value[0], drop)] if value else []
    return _shape(value)


def _same_shape(a, b) -> bool:
    """The shapes of two records agree, a null on either side matching anything (majority's fallback reason, e.g., is set
    only when the answers disagree)."""
    if a == "NoneType" or b == "NoneType":
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_shape(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return (not a or not b) or _same_shape(a[0], b[0])
    return a == b


def test_eval_with_an_engine_teacher_writes_the_records_and_summary_of_the_http_path(tmp_path, ray_address, fake_engines,
                                                                                    shared_data):
    """eval --engine ray, MGSM, 3 examples: t0 sampled by a (fake) vLLM engine, t1 over HTTP, two samples each (N 2, 4) and
    --seed 3: the engine gets the in-process sampling messages and the seeds 3 and 4 per example; the records (ids,
    configuration, fields, candidate teachers) and the summary rows have the shape of the all-HTTP (in-process) run's."""
    from fusion_dspy.eval import prepare, roles_from_pool, run
    from fusion_dspy.task import load_task

    log, built = fake_engines
    methods = "greedy,fusion,oracle,majority"  # Best-of-N's rater is HTTP as in synth's test; left out to keep this short
    with FakeOpenAIServer() as srv:
        pool = _pool(srv.api_base, k=2)  # teachers t0, t1; fusor (and rater) fuse
        engines = engines_for_pool(_serve_config(), pool.teachers, batch_size=4)
        summaries = {}
        for name, ray, ray_engines in (("http", None, None), ("engine", RayOptions(workers=1), engines)):
            srv.reset()
            plan = prepare("mgsm", f"{shared_data}/mgsm/mgsm_en.tsv", limit=3, n="2,4", methods=methods, max_tokens=48, concurrency=2,
                           seed=3)
            summaries[name] = run(plan, roles_from_pool(pool, max_tokens=48, cache=False), tmp_path / name, progress=False, ray=ray,
                                  ray_engines=ray_engines)
        t0_sampled_over_http = [r for r in srv.requests if r.get("model") == "t0" and r.get("temperature") != 0.0]
    assert summaries["http"]["counts"]["done"] == summaries["engine"]["counts"]["done"] == 3
    assert summaries["engine"]["counts"]["failed"] == 0
    assert [c.batch_size for c in built] == [4] and built[0].should_continue_on_error  # a multiple of k; failures kept
    assert not t0_sampled_over_http  # greedy (temperature 0) is t0's only HTTP call in the engine run

    http = {r["id"]: r for r in iter_records(tmp_path / "http" / "records.jsonl")}
    records = {r["id"]: r for r in iter_records(tmp_path / "engine" / "records.jsonl")}
    assert http.keys() == records.keys() and len(records) == 3

    # what reached the engine: per example its two requests, the in-process sampling messages, seeds --seed + 0 and + 1
    program = load_task("mgsm").program()
    sent: dict[str, list] = {}
    for batch in (json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()):
        for r in batch["rows"]:
            sent.setdefault(r["id"], []).append(r)
    assert sent.keys() == records.keys()
    for rid, rows in sent.items():
        want = [engine_request(program, records[rid]["inputs"], sample=i, temperature=0.3, max_tokens=48, seed=3) for i in (0, 1)]
        got = sorted(rows, key=lambda r: r["i"])
        assert [(r["i"], r["messages"], r["sampling_params"]) for r in got] == [(i, w["messages"], w["sampling_params"])
                                                                                for i, w in enumerate(want)]
        assert [r["sampling_params"] for r in got] == [{"temperature": 0.3, "max_tokens": 48, "seed": s} for s in (3, 4)]

    for rid, a in http.items():
        b = records[rid]
        assert _same_shape(_shape_without(a), _shape_without(b)), rid
        for key in ("format", "kind", "config", "inputs", "task", "example_id", "n_max", "gold"):
            assert a[key] == b[key], key
        assert sorted(a["methods"]) == sorted(b["methods"]) and sorted(a["by_n"]) == sorted(b["by_n"]) == ["2"]
        cands = b["candidates"]["candidates"]
        assert [c["model"] for c in a["candidates"]["candidates"]] == [c["model"] for c in cands] == ["t0", "t0", "t1", "t1"]
        for i, c in enumerate(cands[:2]):  # the engine's answers, sample i with seed 3 + i, with its token counts
            assert c["sample"] == i and c["outputs"]["answer"].startswith("org/teacher-0 answers: ")
            assert c["outputs"]["answer"].endswith(f"(seed {3 + i})")
            assert c["usage"]["completion_tokens"] == len(c["raw"].split()) and c["usage"]["calls"] == 1
        assert all(m.get("status") == "ok" for m in b["methods"].values()), b["methods"]
    rows = {name: summaries[name]["rows"] for name in summaries}
    assert [(r["method"], r["n"], r["language"], r["count"], sorted(r)) for r in rows["http"]] == [
        (r["method"], r["n"], r["language"], r["count"], sorted(r)) for r in rows["engine"]]
