"""Does ``fusion-dspy eval`` keep the backend busy? Eval throughput vs the same requests sent raw.

1. Runs the evaluation (MGSM, N=4, bon+fusion by default) on the embedded server with the DSPy cache
   off, capturing every request it sends (``litellm.completion`` is wrapped: the exact request
   dict, including ``messages``, ``n``, ``temperature``, ``max_tokens`` and ``response_format``).
2. Sends the SAME requests straight through ``litellm.completion``: sequentially, and concurrently
   with several worker counts, and reports the eval's throughput as a % of the best of them.

Counting rule (both sides): completion tokens = the sum over every returned choice of the length
of its text tokenized by the server (``POST /tokenize``), counted after the timed window. llama.cpp
reports ``usage.completion_tokens`` of an ``n>1`` request for one choice only, so usage is not used.

Also checks that cost is linear: tokens per example across run sizes (first half vs whole run) and
generated tokens per example for N=1, 2, 4 (``--scaling``).

Usage:
    .venv/bin/python benchmarks/bench_eval_throughput.py --examples 24 --max-tokens 96 --concurrency 1,2,4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mgsm" / "mgsm_en.tsv"
_DROP = {"cache", "headers", "num_retries", "retry_strategy"}


class Capture:
    """Wraps ``litellm.completion`` to record each request and the texts of its choices."""

    def __init__(self) -> None:
        import litellm

        self.litellm = litellm
        self.original = litellm.completion
        self.calls: list[dict] = []
        self.lock = threading.Lock()

    def __enter__(self) -> Capture:
        def wrapped(*args, **kwargs):
            response = self.original(*args, **kwargs)
            request = {k: v for k, v in kwargs.items() if k not in _DROP}
            with self.lock:
                self.calls.append({"request": request, "texts": _texts(response)})
            return response

        self.litellm.completion = wrapped
        return self

    def __exit__(self, *exc) -> None:
        self.litellm.completion = self.original


def _texts(response) -> list[str]:
    return [(c.message.content or "") for c in response.choices]


def count_tokens(api_base: str, texts: list[str]) -> int:
    """Tokens of every text by the server's own tokenizer."""
    url = api_base.rstrip("/").removesuffix("/v1") + "/tokenize"
    total = 0
    for text in texts:
        if not text:
            continue
        req = urllib.request.Request(url, data=json.dumps({"content": text}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            total += len(json.loads(resp.read())["tokens"])
    return total


def run_eval(server, examples: int, n, methods: str, max_tokens: int, concurrency: int, out: Path):
    from fusion_dspy.eval import prepare, roles_from_pool, run
    from fusion_dspy.lm.endpoints import Pool

    ep = server.endpoint
    pool = Pool({ep.name: ep}, (ep.name,))
    plan = prepare("mgsm", DATA, limit=examples, n=n, methods=methods, max_tokens=max_tokens, concurrency=concurrency)
    roles = roles_from_pool(pool, max_tokens=max_tokens, cache=False)
    with Capture() as cap:
        started = time.perf_counter()
        summary = run(plan, roles, out, progress=False)
        seconds = time.perf_counter() - started
    return summary, seconds, cap.calls


def replay(calls: list[dict], workers: int, original) -> tuple[float, list[str]]:
    """Send the captured requests again; ``workers`` in flight (1 = sequential). Returns seconds, texts."""

    def one(call):
        return _texts(original(**call["request"]))

    started = time.perf_counter()
    if workers == 1:
        results = [one(c) for c in calls]
    else:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            results = list(ex.map(one, calls))
    return time.perf_counter() - started, [t for texts in results for t in texts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--methods", default="bon,fusion")
    ap.add_argument("--concurrency", default="1,2,4", help="eval --concurrency values to try")
    ap.add_argument("--workers", default="1,2,4,8", help="raw replay: requests in flight")
    ap.add_argument("--scaling", action="store_true", help="also measure tokens per example for N=1,2,4")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()

    import litellm

    import fusion_dspy as fd

    results: dict = {"examples": args.examples, "max_tokens": args.max_tokens, "n": args.n, "methods": args.methods,
                     "rule": "completion tokens = sum over choices of server-tokenized choice text"}
    with fd.embedded() as server, tempfile.TemporaryDirectory() as tmp:
        original = litellm.completion
        # warm-up (model pages, first-request overheads)
        original(model=server.endpoint.model, api_base=server.api_base, api_key="x", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
        evals = []
        calls_for_replay = None
        for c in [int(x) for x in args.concurrency.split(",")]:
            summary, seconds, calls = run_eval(server, args.examples, args.n, args.methods, args.max_tokens, c, Path(tmp) / f"c{c}")
            tokens = count_tokens(server.api_base, [t for call in calls for t in call["texts"]])
            evals.append({"concurrency": c, "seconds": round(seconds, 2), "requests": len(calls), "completion_tokens": tokens,
                          "tokens_per_second": round(tokens / seconds, 2), "done": summary["counts"]["done"]})
            print(f"eval concurrency={c}: {len(calls)} requests, {tokens} tokens in {seconds:.1f}s = {tokens / seconds:.2f} tok/s", flush=True)
            if calls_for_replay is None or c == 2:
                calls_for_replay = calls
        results["eval"] = evals
        raws = []
        for w in [int(x) for x in args.workers.split(",")]:
            seconds, texts = replay(calls_for_replay, w, original)
            tokens = count_tokens(server.api_base, texts)
            raws.append({"workers": w, "seconds": round(seconds, 2), "completion_tokens": tokens, "tokens_per_second": round(tokens / seconds, 2)})
            print(f"raw litellm workers={w}: {tokens} tokens in {seconds:.1f}s = {tokens / seconds:.2f} tok/s", flush=True)
        results["raw"] = raws
        best_raw = max(raws, key=lambda r: r["tokens_per_second"])
        best_eval = max(evals, key=lambda r: r["tokens_per_second"])
        results["best_raw"] = best_raw
        results["best_eval"] = best_eval
        results["eval_pct_of_best_raw"] = round(100 * best_eval["tokens_per_second"] / best_raw["tokens_per_second"], 1)
        print(f"eval (concurrency {best_eval['concurrency']}) reaches {results['eval_pct_of_best_raw']}% of raw LiteLLM "
              f"(workers {best_raw['workers']})", flush=True)

        # linear cost: tokens per example, first half of the examples vs all of them (from the capture of one run)
        per_example = _tokens_per_example(calls_for_replay, server.api_base)
        half = len(per_example) // 2
        results["tokens_per_example"] = {"first_half": round(statistics.mean(per_example[:half]), 1), "all": round(statistics.mean(per_example), 1)}
        per = results["tokens_per_example"]
        print(f"generated tokens per example: first {half} {per['first_half']}, all {len(per_example)} {per['all']}")
        if args.scaling:
            results["scaling"] = []
            for k in (1, 2, 4):
                _, seconds, calls = run_eval(server, max(4, args.examples // 3), k, "bon,fusion", args.max_tokens, 2, Path(tmp) / f"n{k}")
                pe = _tokens_per_example(calls, server.api_base)
                sampling = [count_tokens(server.api_base, c["texts"]) for c in calls if c["request"].get("temperature") == 0.7]
                row = {"n": k, "generated_tokens_per_example": round(statistics.mean(pe), 1),
                       "sampling_tokens_per_example": round(sum(sampling) / len(pe), 1), "requests_per_example": round(len(calls) / len(pe), 2)}
                results["scaling"].append(row)
                print(f"N={k}: {row}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def _tokens_per_example(calls: list[dict], api_base: str) -> list[float]:
    """Generated tokens grouped by example: every request (sampling, greedy, rater, fusor) carries
    the example's question text, which identifies it."""
    from fusion_dspy.programs.mgsm import load

    questions = [ex.question for ex in load(DATA)]
    by_example: dict[str, int] = {}
    for call in calls:
        text = " ".join(str(m.get("content", "")) for m in call["request"]["messages"])
        key = next((q for q in questions if q in text), "?")
        by_example[key] = by_example.get(key, 0) + count_tokens(api_base, call["texts"])
    return list(by_example.values())


if __name__ == "__main__":
    main()
