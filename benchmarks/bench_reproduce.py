"""Every ``fusion-dspy reproduce`` experiment at a small limit on the embedded model: does each write its figure and table, and how long does it take?

One embedded server (SmolLM2-135M, llama.cpp) serves every role: the one teacher (sampled N times),
the fusor, the rater and the judge. The figures and tables land in ``--out`` (one folder per
experiment, the shared runs in ``--out/runs``); this script checks that each PNG is a PNG and each
table has rows, prints the seconds per experiment, and writes the results as JSON. The numbers in
the tables are the 135M model's: the point is that the commands run end to end, not the scores.

Usage (the model is shared with other engineers: hold the lock):
    flock /tmp/fd-embedded.lock .venv/bin/python benchmarks/bench_reproduce.py --limit 2 --max-tokens 64 --out /tmp/repro
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=2, help="examples per language (prompts for synthetic data)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--experiments", default="all", help="comma-separated names, or all")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    import fusion_dspy as fd
    from fusion_dspy.eval import DEFAULT_N
    from fusion_dspy.lm import Pool
    from fusion_dspy.reproduce import EXPERIMENTS, Settings, run_experiment

    names = list(EXPERIMENTS) if args.experiments == "all" else args.experiments.split(",")
    results = []
    started = time.perf_counter()
    with fd.embedded() as server:
        ep = server.endpoint
        pool = Pool({ep.name: ep}, (ep.name,), samples_per_teacher=DEFAULT_N, temperature=0.3)
        settings = Settings(pool=pool, out=args.out, data_root=args.data_root, limit=args.limit, max_tokens=args.max_tokens)
        for name in names:
            t = time.perf_counter()
            try:
                written = run_experiment(name, settings, command=" ".join(sys.argv))
            except Exception as exc:  # noqa: BLE001 - one experiment failing is reported, the others still run
                results.append({"experiment": name, "mirrors": EXPERIMENTS[name].mirrors, "seconds": round(time.perf_counter() - t, 1),
                                "ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]})
                print(f"{name:<16} FAILED: {type(exc).__name__}: {exc}", flush=True)
                continue
            seconds = time.perf_counter() - t
            pngs = [Path(p) for p in written["figures"]]
            with open(written["table_csv"], encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            ok = all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs) and bool(rows)
            results.append({"experiment": name, "mirrors": EXPERIMENTS[name].mirrors, "seconds": round(seconds, 1), "figures": [str(p) for p in pngs],
                            "table": written["table_md"], "table_rows": len(rows), "ok": ok})
            status = 'ok' if ok else 'MISSING'
            print(f"{name:<16} {EXPERIMENTS[name].mirrors:<16} {seconds:7.1f} s  {len(rows):3d} rows  {status}  {pngs[0]}", flush=True)
    total = time.perf_counter() - started
    print(f"all: {len(results)} experiments, {sum(r['ok'] for r in results)} wrote their figure and table, {total:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"limit": args.limit, "max_tokens": args.max_tokens, "seconds": round(total, 1), "results": results},
                                        indent=2) + "\n", encoding="utf-8")
    if not all(r["ok"] for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
