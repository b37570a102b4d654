"""Soak (small): 100 examples through eval against a server that fails 10% and delays 5% of requests."""

from __future__ import annotations

import dspy
import pytest
from dspy.clients import base_lm

from benchmarks.soak_eval import soak


@pytest.mark.slow
def test_soak_eval_accounts_for_every_example_and_memory_stays_flat(tmp_path):
    cache_before = len(dspy.cache.memory_cache) if dspy.cache.enable_memory_cache else 0
    figures = soak(100, tmp_path, concurrency=8, fail_rate=0.1, delay_rate=0.05, delay_seconds=0.3, seed=0)
    assert figures["done"] + figures["failed"] == 100, figures
    assert figures["lost"] == 0 and figures["distinct"] == figures["done"], figures
    assert figures["failed"] == 0 or figures["failure_reasons"], figures  # a failed example says why
    assert figures["requests"] > 4 * 100  # the injected failures were retried (4 requests per example without faults)
    assert figures["in_flight_max"] <= 8 * 4
    # DSPy keeps every response in its memory cache and histories unless the run bounds them
    assert len(base_lm.GLOBAL_HISTORY) <= 200, len(base_lm.GLOBAL_HISTORY)
    assert dspy.cache.enable_memory_cache and len(dspy.cache.memory_cache) - cache_before < 50
    assert figures["rss_growth_mb"] is not None and figures["rss_growth_mb"] < 40, figures  # a gross leak guard


def test_a_long_run_does_not_start_threads_per_example(tmp_path, monkeypatch):
    """The rater and the pool sampler reuse shared worker threads: each new thread opened its own
    SQLite connections to DSPy's disk cache, and memory grew with the number of examples."""
    import threading
    import time

    from typer.testing import CliRunner

    from fusion_dspy.cli.main import app
    from tests.fakes.openai_server import FakeOpenAIServer
    from tests.reliability._tiny_task import SPEC, write_data

    started = []
    original = threading.Thread.start

    def counting_start(self):
        if "process_request" not in self.name:  # the fake server in this process starts one per request
            started.append(self.name)
        return original(self)

    data = write_data(tmp_path / "d.jsonl", 40, salt=str(time.time_ns()))
    with FakeOpenAIServer() as srv:
        monkeypatch.setattr(threading.Thread, "start", counting_start)
        result = CliRunner().invoke(app, ["eval", "--task", SPEC, "--data", str(data), "--out", str(tmp_path / "out"), "--n", "3",
                                          "--methods", "bon,fusion", "--max-tokens", "32", "--concurrency", "2",
                                          "--no-progress", "--model", "openai/fake", "--api-base", srv.api_base])
        monkeypatch.undo()
    assert result.exit_code == 0, result.output + repr(result.exception)
    # 40 examples x 3 ratings each: threads started per rating would be 100+; reused ones stay bounded
    assert len(started) <= 2 + 2 * 4 + 4, started
