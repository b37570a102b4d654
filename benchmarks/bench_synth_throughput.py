"""Does ``fusion-dspy synth`` keep the backend busy? Synth throughput vs the same requests sent raw.

1. Runs ``synthesize`` over the first K UltraFeedback prompts on the embedded server (fresh output
   folder, DSPy cache off, fusion and optionally Best-of-N), capturing every request it sends
   (``litellm.completion`` wrapped: messages, ``n``, temperature, max_tokens, response_format).
2. Sends the SAME requests straight through ``litellm.completion``, sequentially and with several
   workers, with no DSPy, parsing or bookkeeping in between: the backend's ceiling for that mix.

Counting rule (both sides, as in ``bench_eval_throughput.py``): completion tokens = the sum over
every returned choice of its text tokenized by the server (``POST /tokenize``), counted after the
timed window (llama.cpp reports usage of an ``n>1`` request for one choice only).

Usage:
    .venv/bin/python benchmarks/bench_synth_throughput.py --count 8 --n 4 --max-tokens 48 --concurrency 1,2 --workers 1,4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_eval_throughput import Capture, count_tokens, replay  # noqa: E402

DEFAULT_PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ultrafeedback" / "train_clean.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", default=str(DEFAULT_PROMPTS))
    ap.add_argument("--count", type=int, default=8, help="prompts per run")
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--methods", default="fusion")
    ap.add_argument("--concurrency", default="1,2", help="synth --concurrency values to try")
    ap.add_argument("--workers", default="1,4", help="raw replay: requests in flight")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    import litellm

    import fusion_dspy as fd
    from fusion_dspy.lm.endpoints import Pool
    from fusion_dspy.synth import synthesize

    results: dict = {"count": args.count, "n": args.n, "max_tokens": args.max_tokens, "methods": args.methods,
                     "rule": "completion tokens = sum over choices of server-tokenized choice text"}
    with fd.embedded() as server, tempfile.TemporaryDirectory() as tmp:
        original = litellm.completion
        original(model=server.endpoint.model, api_base=server.api_base, api_key="x", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
        ep = server.endpoint.with_defaults(cache=False)
        pool = Pool({ep.name: ep}, (ep.name,), samples_per_teacher=args.n)
        runs, captured = [], None
        for c in [int(x) for x in args.concurrency.split(",")]:
            with Capture() as cap:
                started = time.perf_counter()
                stats = synthesize(args.prompts, Path(tmp) / f"c{c}", pool=pool, limit=args.count, methods=args.methods.split(","),
                                   max_tokens=args.max_tokens, concurrency=c)
                seconds = time.perf_counter() - started
            tokens = count_tokens(server.api_base, [t for call in cap.calls for t in call["texts"]])
            runs.append({"concurrency": c, "rows": stats.done, "failed": stats.failed, "requests": len(cap.calls), "seconds": round(seconds, 2),
                         "completion_tokens": tokens, "tokens_per_second": round(tokens / seconds, 2)})
            print(f"synth concurrency={c}: {stats.done} rows, {len(cap.calls)} requests, {tokens} tokens in {seconds:.1f}s "
                  f"= {tokens / seconds:.2f} tok/s", flush=True)
            if captured is None or c == 2:
                captured = cap.calls
        results["synth"] = runs
        raws = []
        for w in [int(x) for x in args.workers.split(",")]:
            seconds, texts = replay(captured, w, original)
            tokens = count_tokens(server.api_base, texts)
            raws.append({"workers": w, "seconds": round(seconds, 2), "completion_tokens": tokens, "tokens_per_second": round(tokens / seconds, 2)})
            print(f"raw litellm workers={w}: {tokens} tokens in {seconds:.1f}s = {tokens / seconds:.2f} tok/s", flush=True)
        results["raw"] = raws
        best_raw = max(raws, key=lambda r: r["tokens_per_second"])
        best = max(runs, key=lambda r: r["tokens_per_second"])
        results["synth_pct_of_best_raw"] = round(100 * best["tokens_per_second"] / best_raw["tokens_per_second"], 1)
        print(f"synth (concurrency {best['concurrency']}) reaches {results['synth_pct_of_best_raw']}% of raw LiteLLM "
              f"(workers {best_raw['workers']})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
