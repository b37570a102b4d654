"""A backend that dies mid-run: retries, then the affected examples fail with a reason; a rerun completes them."""

from __future__ import annotations

import json
import threading
import time

from fusion_dspy.eval import evaluate
from fusion_dspy.lm.endpoints import Endpoint, Pool
from fusion_dspy.records import iter_records
from tests.fakes.openai_server import FakeOpenAIServer
from tests.reliability._tiny_task import TASK, count_records, write_data

TOTAL = 12


def _stop_after(srv: FakeOpenAIServer, calls: int) -> threading.Thread:
    def watch() -> None:
        while srv.calls < calls:
            time.sleep(0.005)
        srv.stop()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def _no_hidden_endpoint_failure(out) -> None:
    """No done record hides a connection failure behind a fallback or a failed method."""
    for rec in iter_records(out / "records.jsonl"):
        text = json.dumps(rec["methods"]) + json.dumps(rec["by_n"])
        assert "APIConnectionError" not in text and "InternalServerError" not in text, text[:500]


def test_server_dies_mid_run_then_rerun_completes(tmp_path):
    data = write_data(tmp_path / "d.jsonl", TOTAL)
    out = tmp_path / "out"
    srv = FakeOpenAIServer().start()
    port = srv.port
    pool = Pool({"m": Endpoint("m", "openai/m", api_base=srv.api_base, api_key="x", num_retries=1, timeout=5)}, ("m",))
    kwargs = dict(pool=pool, out_dir=out, n=[1, 2], methods="greedy,bon,fusion,majority", max_tokens=32, concurrency=2,
                  progress=False, cache=False)
    # each example sends 1 sampling + 1 greedy + 2 rater + 1 fusor (n=2) + 1 rater + 1 fusor (n=1) requests
    watcher = _stop_after(srv, 20)
    started = time.perf_counter()
    summary = evaluate(TASK, data, **kwargs)
    watcher.join(5)
    first = summary["run"]
    assert first["done"] + first["failed"] == TOTAL, first
    assert first["done"] >= 1 and first["failed"] >= 1, first
    assert all("EndpointError" in f or "EndpointSamplingError" in f for f in first["failures"]), first["failures"]
    assert time.perf_counter() - started < 120
    failed_log = [json.loads(line) for line in (out / "records.failed.jsonl").read_text().splitlines()]
    assert len(failed_log) == first["failed"] and all(r["error"] for r in failed_log)
    _no_hidden_endpoint_failure(out)

    # the server comes back on the same address; the same command completes the run
    with FakeOpenAIServer(port=port):
        again = evaluate(TASK, data, **kwargs)["run"]
    assert again["skipped"] == first["done"] and again["done"] == first["failed"] and again["failed"] == 0, again
    records, distinct, lost = count_records(out)
    assert records == distinct == TOTAL and lost == []
    _no_hidden_endpoint_failure(out)


def test_transient_failures_are_retried_by_litellm(tmp_path):
    """With fail_rate 0.3 and 3 retries, LiteLLM's backoff absorbs the faults: every example is done."""
    data = write_data(tmp_path / "d.jsonl", 4)
    with FakeOpenAIServer(fail_rate=0.3, seed=3) as srv:
        pool = Pool({"m": Endpoint("m", "openai/m", api_base=srv.api_base, api_key="x", num_retries=3, timeout=5)}, ("m",))
        summary = evaluate(TASK, data, pool=pool, out_dir=tmp_path / "out", n=2, methods="bon,fusion", max_tokens=32,
                           concurrency=2, progress=False, cache=False)
        # 4 examples x (1 sampling + 2 ratings + 1 fusion) = 16 requests without faults; retries add more
        assert srv.calls > 16
    run = summary["run"]
    assert run["done"] == 4 and run["failed"] == 0, run
    _no_hidden_endpoint_failure(tmp_path / "out")
