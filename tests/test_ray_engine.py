"""``synth`` and ``eval`` with ``--engine ray`` on a local Ray instance (127.0.0.1, 2 CPUs, started here): the
in-process records, and killed workers or a killed driver lose and duplicate nothing.

Marked ``integration``: each test runs a Ray Data pipeline (actors start in seconds, not milliseconds).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fusion_dspy.lm.endpoints import Endpoint, Pool
from fusion_dspy.records import iter_records
from fusion_dspy.records.ray_runner import RayOptions
from fusion_dspy.records.shards import shard_folder, shard_ids
from fusion_dspy.synth import synthesize
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]


def _prompts(path: Path, n: int) -> Path:
    rows = [{"prompt": f"Question {i}: name {i} things that are green."} if i % 3 else
            {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Say hello {i} times."}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _pool(api_base: str, teachers: int = 1, k: int = 2) -> Pool:
    eps = {f"t{i}": Endpoint(f"t{i}", f"openai/t{i}", api_base=api_base, defaults={"cache": False}) for i in range(teachers)}
    return Pool(eps, tuple(eps), samples_per_teacher=k)


def _rows(out: Path) -> list[dict]:
    return list(iter_records(out / "synth.jsonl"))


def _without_seconds(value):
    if isinstance(value, dict):
        return {k: _without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_seconds(v) for v in value]
    return value


def _shape(value):
    """Field names and JSON types, recursively (lists by their first item): what two engines must agree on."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__


def test_ray_rows_are_the_in_process_rows(tmp_path, ray_address):
    """A deterministic server: the two engines write the same records, timings aside."""
    prompts = _prompts(tmp_path / "p.jsonl", 6)
    with FakeOpenAIServer() as srv:
        pool = _pool(srv.api_base, teachers=2)
        local = synthesize(prompts, tmp_path / "inprocess", pool=pool, methods=("fusion", "bon"), max_tokens=64)
        on_ray = synthesize(prompts, tmp_path / "ray", pool=pool, methods=("fusion", "bon"), max_tokens=64, engine="ray",
                            ray=RayOptions(workers=1))
    assert (local.done, on_ray.done, on_ray.failed) == (6, 6, 0), on_ray.failures
    a = {r["id"]: r for r in _rows(tmp_path / "inprocess")}
    b = {r["id"]: r for r in _rows(tmp_path / "ray")}
    assert a.keys() == b.keys() and len(a) == 6
    assert all(_without_seconds(a[k]) == _without_seconds(b[k]) for k in a)
    assert not list(shard_folder(tmp_path / "ray" / "synth.jsonl").glob("*.jsonl"))  # merged into synth.jsonl
    # either engine resumes the other's folder: nothing left to do
    again = synthesize(prompts, tmp_path / "ray", pool=pool, methods=("fusion", "bon"), max_tokens=64)
    assert (again.done, again.skipped) == (0, 6)


def _ray_workers(kind: str) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.startswith("ray::") and f"MapBatches({kind})" in cmd:
            found.append(proc)
    return found


def test_killed_workers_lose_and_duplicate_nothing(tmp_path, ray_address):
    """SIGKILL a model stage's actor, then the writer, mid-run: Ray Data restarts them; the run and a rerun give each id once."""
    n = 12
    prompts = _prompts(tmp_path / "p.jsonl", n)
    out = tmp_path / "out"
    killed: list[str] = []

    def killer() -> None:
        for kind, after in (("_RowStage", 2), ("_Writer", 5)):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and len(shard_ids(out / "synth.jsonl")) < after:
                time.sleep(0.05)
            for proc in _ray_workers(kind)[:1]:
                proc.send_signal(signal.SIGKILL)
                killed.append(kind)

    with FakeOpenAIServer(delay_rate=1.0, delay_seconds=0.4) as srv:
        pool = _pool(srv.api_base)
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        first = synthesize(prompts, out, pool=pool, max_tokens=64, concurrency=2, engine="ray", ray=RayOptions(workers=1))
        thread.join(5)
        assert killed == ["_RowStage", "_Writer"], "both kills landed during the run"
        rerun = synthesize(prompts, out, pool=pool, max_tokens=64, concurrency=2, engine="ray", ray=RayOptions(workers=1))
    ids = [r["id"] for r in _rows(out)]
    assert len(ids) == len(set(ids)) == n  # nothing lost, nothing twice
    assert first.done + rerun.done == n and rerun.skipped == first.done
    assert all(r["messages"][-1]["role"] == "assistant" and r["messages"][-1]["content"] for r in _rows(out))


def test_a_killed_driver_leaves_shards_that_the_rerun_keeps(tmp_path, ray_address):
    """SIGKILL the driver (a `fusion-dspy synth --engine ray` process joined to the cluster): the rerun merges its shards and does the rest."""
    n = 10
    prompts = _prompts(tmp_path / "p.jsonl", n)
    out = tmp_path / "out"
    env = {**os.environ, "DSPY_CACHEDIR": str(tmp_path / "dspy-cache"), "PYTHONPATH": str(REPO)}
    with FakeOpenAIServer(delay_rate=1.0, delay_seconds=0.4) as srv:
        cmd = [sys.executable, "-m", "fusion_dspy.cli.main", "synth", "--prompts", str(prompts), "--out", str(out),
               "--model", "openai/fake", "--api-base", srv.api_base, "--n", "2", "--max-tokens", "64", "--concurrency", "2",
               "--engine", "ray", "--ray-address", ray_address]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and len(shard_ids(out / "synth.jsonl")) < 3:
                if proc.poll() is not None:
                    pytest.fail(f"the driver ended before it could be killed: {proc.stdout.read().decode()[-3000:]}")
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        written = len(shard_ids(out / "synth.jsonl"))
        assert 3 <= written < n, "the kill came in the middle of the run"
        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["skipped"] >= written and summary["skipped"] + summary["done"] == n
    ids = [r["id"] for r in _rows(out)]
    assert len(ids) == len(set(ids)) == n
    assert not list(shard_folder(out / "synth.jsonl").glob("synth-*.jsonl"))


def test_on_the_embedded_model_ray_gives_the_ids_and_fields_of_in_process(tmp_path, ray_address, embedded_server):
    """Ten prompts on SmolLM2 (served in this process; the Ray actors call it over HTTP), both engines, DSPy's cache off."""
    from dataclasses import replace

    prompts = _prompts(tmp_path / "p.jsonl", 10)
    ep = replace(embedded_server.endpoint, defaults={**embedded_server.endpoint.defaults, "cache": False})
    pool = Pool({ep.name: ep}, (ep.name,), samples_per_teacher=2)
    settings = {"pool": pool, "methods": ("fusion",), "max_tokens": 24, "concurrency": 2}
    local = synthesize(prompts, tmp_path / "inprocess", **settings)
    on_ray = synthesize(prompts, tmp_path / "ray", engine="ray", ray=RayOptions(workers=1), **settings)
    assert (local.done, on_ray.done) == (10, 10), (local.failures, on_ray.failures)
    a = {r["id"]: r for r in _rows(tmp_path / "inprocess")}
    b = {r["id"]: r for r in _rows(tmp_path / "ray")}
    assert a.keys() == b.keys()
    for rid in a:
        assert _shape(a[rid]) == _shape(b[rid]), rid
        for key in ("format", "kind", "config", "inputs", "answer_from", "attempt", "source"):
            assert a[rid][key] == b[rid][key], key
        assert a[rid]["messages"][:-1] == b[rid]["messages"][:-1] and b[rid]["messages"][-1]["content"].strip()
        assert [c["model"] for c in b[rid]["candidates"]["candidates"]] == [ep.name, ep.name]


def test_eval_on_ray_writes_the_in_process_records(tmp_path, ray_address, shared_data):
    """MGSM, 3 examples, N 1 and 2, every method, a deterministic server: the same records and summary, timings aside."""
    from fusion_dspy.eval import prepare, roles_from_pool, run

    with FakeOpenAIServer() as srv:
        pool = _pool(srv.api_base)
        results = {}
        for name, ray in (("inprocess", None), ("ray", RayOptions(workers=1))):
            plan = prepare("mgsm", f"{shared_data}/mgsm/mgsm_en.tsv", limit=3, n="1,2", methods="greedy,bon,fusion,oracle,majority",
                           max_tokens=48, concurrency=2)
            results[name] = run(plan, roles_from_pool(pool, max_tokens=48, cache=False), tmp_path / name, progress=False, ray=ray)
    assert results["ray"]["counts"]["done"] == results["inprocess"]["counts"]["done"] == 3
    a = {r["id"]: r for r in iter_records(tmp_path / "inprocess" / "records.jsonl")}
    b = {r["id"]: r for r in iter_records(tmp_path / "ray" / "records.jsonl")}
    assert a.keys() == b.keys() and len(a) == 3
    assert all(_without_seconds(a[k]) == _without_seconds(b[k]) for k in a)
    assert sorted(results["ray"]) == sorted(results["inprocess"])
    assert _without_seconds(results["ray"].get("rows")) == _without_seconds(results["inprocess"].get("rows"))
