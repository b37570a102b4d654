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
