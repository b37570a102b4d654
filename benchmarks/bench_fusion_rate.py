"""How often the embedded fusor really fuses (no fallback), over Arena-Hard prompts with N=4.

Run: .venv/bin/python benchmarks/bench_fusion_rate.py [--data ../shared/data/arena_hard_v2/question.jsonl]
     [--limit 20] [--n 4] [--max-tokens 160] [--json OUT]

Uses the arena task's loader (v2.0 or multilingual v0.1 formats, any language). Target (issue 3):
at least 90% of fusion calls give a parsed fused answer with ``fallback=None``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


import fusion_dspy as fd  # noqa: E402
from fusion_dspy.task import load_task  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "..", "..", "shared", "data", "arena_hard_v2", "question.jsonl")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    task = load_task("arena")
    examples = task.load(args.data, limit=args.limit)[: args.limit]
    rows = []
    started = time.perf_counter()
    with fd.embedded() as server:
        lm = server.lm(max_tokens=args.max_tokens)
        fusor = server.lm(max_tokens=args.max_tokens, temperature=0.0)
        module = fd.FusionOfN(task.program(), n=args.n, fusor=fusor, lm=lm)
        skipped = []
        for ex in examples:
            try:
                pred = module(**ex.inputs())
            except fd.SamplingError as exc:  # e.g. a prompt longer than the model's context: no fusion call
                skipped.append({"id": ex.id, "reason": str(exc)[:200]})
                print(f"{ex.id}: skipped, sampling failed: {str(exc)[:120]}", flush=True)
                continue
            rows.append({"id": ex.id, "language": ex.language, "fallback": pred.fallback, "answer_chars": len(str(pred.get(task.answer_field) or "")),
                         "raw_kept": pred.fusion.raw is not None, "seconds": pred.usage["total"]["seconds"]})  # fmt: skip
            print(f"{ex.id}: fallback={pred.fallback!r} chars={rows[-1]['answer_chars']}", flush=True)
    fused = sum(r["fallback"] is None for r in rows)
    by_lang = collections.defaultdict(lambda: [0, 0])
    for r in rows:
        by_lang[r["language"]][0] += r["fallback"] is None
        by_lang[r["language"]][1] += 1
    result = {
        "data": args.data, "prompts": len(rows), "n": args.n, "max_tokens": args.max_tokens,
        "fused_without_fallback": fused, "rate": round(fused / max(1, len(rows)), 3),
        "lenient_parses": sum(r["raw_kept"] and r["fallback"] is None for r in rows),
        "by_language": {k: f"{a}/{b}" for k, (a, b) in by_lang.items()},
        "skipped_no_candidates": skipped,
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"result": result, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
