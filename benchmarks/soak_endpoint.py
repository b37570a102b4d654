"""Soak of the fusion endpoint: concurrent streaming clients on a fake backend, for a while.

Run: .venv/bin/python benchmarks/soak_endpoint.py [--clients 16] [--seconds 60] [--max-in-flight 8]

Every client streams ``fusion-4`` answers one after another until the time is up. Each request
carries its own tag, and the fake fusor writes an answer that names it, so a stream that received
another request's text (or lost a piece, or never ended) is caught. Reported: streams completed,
lost, mixed up; the most answers in flight at the endpoint and the most requests at the backend
(both must stay within the bound); the process's RSS every few seconds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from fusion_dspy.gateway import Gateway, GatewayServer, GatewaySettings  # noqa: E402
from fusion_dspy.lm.endpoints import Endpoint, Pool  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402
from tests.gateway._endpoint import role  # noqa: E402

_TAG = re.compile(r"request (c\d+-r\d+)")


def expected(tag: str) -> str:
    """The fused answer the fake writes for a request: it names the request, so a mix-up shows."""
    return f"The fused answer to request {tag} is here, with several more words after it so that it streams in many chunks."


def _reply(body: dict, i: int) -> str:
    text = json.dumps(body.get("messages") or [])
    tag = _TAG.search(text)
    name = tag.group(1) if tag else "?"
    return expected(name) if role(body) == "fusor" else f"Draft {i} for request {name}."


def _client(api_base: str, k: int, deadline: float, results: dict[str, Any], lock: threading.Lock) -> None:
    with httpx.Client(timeout=120) as http:
        j = 0
        while time.monotonic() < deadline:
            tag = f"c{k}-r{j}"
            j += 1
            body = {"model": "fusion-4", "stream": True, "messages": [{"role": "user", "content": f"Answer request {tag}, please."}]}
            outcome = "lost"
            try:
                with http.stream("POST", api_base + "/chat/completions", json=body) as resp:
                    if resp.status_code == 429:
                        outcome = "refused"
                    else:
                        ids, content, finished, done = set(), [], False, False
                        for line in resp.iter_lines():
                            if not line.startswith("data: "):
                                continue
                            if line == "data: [DONE]":
                                done = True
                                break
                            event = json.loads(line[6:])
                            ids.add(event["id"])
                            for choice in event["choices"]:
                                content.append(choice["delta"].get("content") or "")
                                finished = finished or choice["finish_reason"] == "stop"
                        if done and finished and len(ids) == 1:
                            outcome = "ok" if "".join(content) == expected(tag) else "mixed"
            except httpx.HTTPError as exc:
                with lock:
                    results["errors"].append(f"{tag}: {type(exc).__name__}: {exc}")
            with lock:
                results[outcome] += 1


def soak(*, clients: int = 16, seconds: float = 60.0, max_in_flight: int = 8, token_delay: float = 0.002,
         rss_every: float = 5.0) -> dict[str, Any]:
    """Run the soak; returns the counts, the bounds seen and the RSS samples (MB)."""
    import psutil

    process = psutil.Process()
    results: dict[str, Any] = {"ok": 0, "mixed": 0, "lost": 0, "refused": 0, "errors": []}
    lock = threading.Lock()
    rss: list[float] = []
    settings = GatewaySettings(max_in_flight=max_in_flight, max_queue=clients, queue_timeout=120)
    with FakeOpenAIServer(_reply, token_delay=token_delay) as fake:
        pool = Pool({"fake": Endpoint(name="fake", model="openai/fake", api_base=fake.api_base, num_retries=0)}, ("fake",))
        with GatewayServer(Gateway(pool, default_max_tokens=64), settings) as server:
            started = time.monotonic()
            deadline = started + seconds
            threads = [threading.Thread(target=_client, args=(server.api_base, k, deadline, results, lock), daemon=True) for k in range(clients)]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                rss.append(round(process.memory_info().rss / 2**20, 1))
                time.sleep(min(rss_every, max(0.1, deadline - time.monotonic())) if time.monotonic() < deadline else 0.2)
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
            admission = server.app.state.admission
            results.update({
                "clients": clients, "seconds": round(elapsed, 1), "streams": results["ok"] + results["mixed"] + results["lost"],
                "streams_per_second": round((results["ok"]) / elapsed, 1), "max_in_flight": max_in_flight,
                "endpoint_in_flight_max": admission.in_flight_max, "backend_in_flight_max": fake.in_flight_max,
                "backend_requests": fake.calls, "rss_mb": rss,
            })
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--max-in-flight", type=int, default=8)
    ap.add_argument("--token-delay", type=float, default=0.002)
    args = ap.parse_args()
    figures = soak(clients=args.clients, seconds=args.seconds, max_in_flight=args.max_in_flight, token_delay=args.token_delay)
    figures["errors"] = figures["errors"][:5]
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
