"""How much an ``n=k`` request costs against ``n=1`` on the embedded CPU model: decode throughput per stream and in all.

Fusion's time against OptiLLM's moa (issues 12 and 16) rests on it: drawing N candidates is cheap
in wall time only when the server decodes the N streams in one batch faster than one after
another. On a GPU batching is nearly free; on this 2-core CPU it is not. Run it alone, under
``flock /tmp/fd-embedded.lock``: another model on the same cores measures the other's load.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _prompts(limit: int) -> list[str]:
    """The first ``limit`` UltraFeedback prompts of 40 to 600 characters (answers long enough to time, prompts short)."""
    from fusion_dspy.synth.prompts import read_prompts

    texts = (p.text for p in read_prompts(DATA / "ultrafeedback" / "train_clean.jsonl"))
    return list(itertools.islice((t for t in texts if 40 < len(t) < 600), limit))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--ns", default="1,2,4")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    from openai import OpenAI

    import fusion_dspy as fd
    from fusion_dspy.lm.token_count import count_tokens

    ns = [int(v) for v in args.ns.split(",")]
    rows = []
    with fd.embedded() as server:
        client = OpenAI(base_url=server.api_base, api_key="none")
        lm = server.lm()
        for prompt in _prompts(args.prompts):
            for n in ns:  # every n on the same prompt, back to back
                started = time.perf_counter()
                resp = client.chat.completions.create(model="embedded", messages=[{"role": "user", "content": prompt}], n=n,
                                                      max_tokens=args.max_tokens, temperature=0.7, seed=len(rows))
                seconds = time.perf_counter() - started
                # llama.cpp reports an n>1 request's usage for one choice: count every choice's tokens ourselves
                tokens = sum(count_tokens(lm, c.message.content or "") or 0 for c in resp.choices)
                rows.append({"n": n, "seconds": round(seconds, 2), "tokens": tokens, "choices": len(resp.choices)})
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for n in ns:
        mine = [r for r in rows if r["n"] == n]
        total_tokens, total_seconds = sum(r["tokens"] for r in mine), sum(r["seconds"] for r in mine)
        summary[n] = {"requests": len(mine), "tokens_per_s_all_streams": round(total_tokens / total_seconds, 1),
                      "tokens_per_s_per_stream": round(total_tokens / total_seconds / n, 1),
                      "median_seconds": statistics.median(r["seconds"] for r in mine)}
    base = summary[ns[0]]["tokens_per_s_all_streams"]
    for n in ns:
        summary[n]["batching_gain"] = round(summary[n]["tokens_per_s_all_streams"] / base, 2)
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
