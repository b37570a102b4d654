"""16 concurrent streaming clients: no lost or mixed-up streams, the in-flight bound holds (and, for 60 s, memory stays flat)."""

from __future__ import annotations

import pytest

from benchmarks.soak_endpoint import soak


def test_sixteen_streaming_clients_get_their_own_whole_answers():
    figures = soak(clients=16, seconds=4, max_in_flight=4, rss_every=1.0)
    assert figures["errors"] == [] and figures["lost"] == 0 and figures["mixed"] == 0 and figures["refused"] == 0, figures
    assert figures["ok"] >= 16  # every client finished at least one stream
    assert figures["endpoint_in_flight_max"] == 4 and figures["backend_in_flight_max"] <= 4, figures


@pytest.mark.slow
def test_sixty_seconds_of_sixteen_streaming_clients_keep_memory_flat():
    figures = soak(clients=16, seconds=60, max_in_flight=8, rss_every=5.0)
    assert figures["errors"] == [] and figures["lost"] == 0 and figures["mixed"] == 0 and figures["refused"] == 0, figures
    assert figures["endpoint_in_flight_max"] <= 8 and figures["backend_in_flight_max"] <= 8, figures
    rss = figures["rss_mb"]
    warm = rss[len(rss) // 4]  # after warm-up (imports, first threads and connections)
    assert max(rss[len(rss) // 4:]) - warm < 20, rss  # measured: +4.8 MB over the last 45 s (the fake keeps every request body)
