"""Throughput of ``synth`` on the embedded model against the same requests sent straight through LiteLLM.

For each concurrency C, ``synthesize`` runs over the first K UltraFeedback prompts (fresh output
folder, DSPy cache off) and its completion tokens per second are measured. Then every request that
synth sent (taken from DSPy's history: same messages, ``n``, temperature, max_tokens and response
format) is replayed with ``litellm.completion`` from a pool of ``--replay-workers`` threads (the
server's parallel slots), with no DSPy, parsing or bookkeeping in between: the backend's ceiling for
that request mix. Tokens are the server's reported usage on both sides.

Run:
    .venv/bin/python benchmarks/bench_synth_throughput.py --count 10 --concurrency 1,2,4,8
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

DEFAULT_PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ultrafeedback" / "train_clean.jsonl"


def replay(entries: list[dict], api_base: str, workers: int) -> tuple[int, float]:
    """Send the recorded requests again through LiteLLM; (completion tokens, seconds)."""
    import litellm

    def one(entry: dict) -> int:
        kwargs = {k: v for k, v in entry["kwargs"].items() if k in ("n", "temperature", "max_tokens", "response_format")}
        resp = litellm.completion(model=entry["model"], messages=entry["messages"], api_base=api_base, api_key="local", caching=False, **kwargs)
        return int(resp.usage.completion_tokens or 0)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        tokens = sum(ex.map(one, entries))
    return tokens, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", default=str(DEFAULT_PROMPTS))
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--replay-workers", type=int, default=4, help="default: the embedded server's parallel slots")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    import litellm  # noqa: F401 - imported once, before any thread
    from dspy.clients import base_lm

    import fusion_dspy as fd
    from fusion_dspy.endpoints import Pool
    from fusion_dspy.synth import synthesize

    results = []
    with fd.embedded() as server:
        ep = server.endpoint.with_defaults(cache=False)
        pool = Pool({ep.name: ep}, (ep.name,), samples_per_teacher=args.n)
        for c in [int(x) for x in args.concurrency.split(",")]:
            base_lm.GLOBAL_HISTORY.clear()
            with tempfile.TemporaryDirectory() as out:
                stats = synthesize(args.prompts, out, pool=pool, limit=args.count, methods=["fusion"], max_tokens=args.max_tokens, concurrency=c)
            entries = list(base_lm.GLOBAL_HISTORY)
            tokens, seconds = replay(entries, ep.api_base, args.replay_workers)
            row = {
                "concurrency": c, "prompts": stats.done, "failed": stats.failed, "requests": len(entries),
                "synth_completion_tokens": stats.completion_tokens, "synth_seconds": round(stats.seconds, 1),
                "synth_tokens_per_s": round(stats.completion_tokens_per_second, 1),
                "litellm_completion_tokens": tokens, "litellm_seconds": round(seconds, 1),
                "litellm_tokens_per_s": round(tokens / seconds, 1),
            }  # fmt: skip
            row["synth_vs_litellm"] = round(row["synth_tokens_per_s"] / row["litellm_tokens_per_s"], 2) if row["litellm_tokens_per_s"] else None
            print(json.dumps(row), flush=True)
            results.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
