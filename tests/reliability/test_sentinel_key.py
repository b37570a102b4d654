"""Issue 15, must show: a sentinel key given as ``os.environ/NAME`` reaches the server and nothing a run writes.

Full ``eval``, ``synth`` and ``optimize search`` runs (the CLI, in subprocesses, at debug log level)
against a fake server that refuses any other key; then every byte they wrote is searched for the
key: records, failure logs, summaries, plots, the study database, ``chosen_pool.yaml``, the
candidate caches, DSPy's disk cache, stdout and stderr (the logs), and the pool file itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import yaml

from tests.fakes.fake_vllm import REPO
from tests.fakes.openai_server import FakeOpenAIServer
from tests.reliability._tiny_task import SPEC, write_data, write_prompts

SENTINEL = f"sk-SENTINEL-{uuid.uuid4().hex}"
VAR = "FD_SENTINEL_API_KEY"


def _run(tmp_path: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), VAR: SENTINEL, "DSPY_CACHEDIR": str(tmp_path / "dspy-cache")}
    done = subprocess.run([sys.executable, "-m", "fusion_dspy.cli.main", "-vv", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    (tmp_path / f"{name}.stdout.log").write_text(done.stdout, encoding="utf-8")
    (tmp_path / f"{name}.stderr.log").write_text(done.stderr, encoding="utf-8")
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_sentinel_key_is_in_no_file_a_full_eval_synth_and_search_wrote(tmp_path):
    data = write_data(tmp_path / "data.jsonl", 3, salt=uuid.uuid4().hex)
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2, salt=uuid.uuid4().hex)
    with FakeOpenAIServer(api_key=SENTINEL) as server:
        doc = {"model_list": [{"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_base": server.api_base,
                                                                      "api_key": f"os.environ/{VAR}", "num_retries": 0}}
                              for name in ("teacher", "fusor")],
               "fusion_dspy": {"teachers": ["teacher"], "fusor": "fusor", "rater": "fusor"}}
        pool = tmp_path / "pool.yaml"
        pool.write_text(yaml.safe_dump(doc), encoding="utf-8")

        _run(tmp_path, "eval", "eval", "--task", SPEC, "--data", str(data), "--pool", str(pool), "--out", "eval-out",
             "--n", "1,2", "--methods", "greedy,bon,fusion,majority", "--max-tokens", "32", "--no-progress")
        _run(tmp_path, "synth", "synth", "--prompts", str(prompts), "--pool", str(pool), "--out", "synth-out",
             "--methods", "fusion,bon", "--max-tokens", "32", "--parquet")
        _run(tmp_path, "search", "optimize", "search", "--task", SPEC, "--data", str(data), "--pool", str(pool),
             "--out", "search-out", "--trials", "2", "--n-choices", "1,2", "--temperatures", "0.5",
             "--methods", "fusion,majority", "--fusors", "fusor", "--sampler", "grid", "--max-tokens", "32")
        authorizations = list(server.authorizations)

    assert authorizations and set(authorizations) == {f"Bearer {SENTINEL}"}  # the key was used, and only it
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"records.jsonl", "summary.json", "synth.jsonl", "synth.parquet", "study.db", "chosen_pool.yaml", "trials.json",
            "eval.stderr.log", "search.stdout.log"} <= names, sorted(names)
    assert any(p.parent.name == "dspy-cache" or "dspy-cache" in p.parts for p in written)
    leaks = [str(p.relative_to(tmp_path)) for p in written if SENTINEL.encode() in p.read_bytes()]
    assert leaks == []
    assert f"os.environ/{VAR}" in (tmp_path / "search-out" / "chosen_pool.yaml").read_text(encoding="utf-8")
