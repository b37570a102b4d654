"""Speed and memory of ``fusion-dspy analyze`` against a straightforward stdlib-difflib implementation.

Run (about 5 minutes on an idle 2-core machine)::

    .venv/bin/python benchmarks/bench_analyze.py                 # 10,000 records, sample 100, 2 workers
    .venv/bin/python benchmarks/bench_analyze.py --records 2000 --small 500 --sample 20   # quicker

What it does, in one run:
1. writes ``--records`` synthetic records (synth format) to a temporary JSONL file: 5 sources of about
   2,000 characters (words drawn from a skewed vocabulary), and a fused text of about 2,000 characters
   assembled from pieces of the sources plus some novel text, shown in a random order, with a
   Best-of-N pick;
2. times the straightforward implementation (stdlib ``difflib``, one character at a time, one
   process) on the first ``--sample`` records, and checks that the library's per-record character
   counts, and the aggregate over those records, are identical to it;
3. runs the real analysis (the ``analyze`` code path: streaming, ``--workers`` processes, report
   files written) in a fresh process over ``--small`` records with 1 worker and with ``--workers``,
   then over all records. Beside each run, one process runs the straightforward implementation
   round and round over the sample, so the speed-up is measured over the same window and load
   (this machine is shared: a sequential comparison would mostly measure the other jobs). The
   table gives records/s of both, the speed-up, the CPU-time speed-up, and peak RSS of the main
   process and of a worker at both sizes (memory must not grow with the number of records);
4. runs the full analysis once more with nothing beside it, for the sequential comparison against
   the stdlib implementation timed alone in step 2 (meaningful on a quiet machine only).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


# ----------------------------------------------------------------------------- synthetic records


def make_records(path: Path, n: int, seed: int = 0) -> None:
    """Write ``n`` synth-format records (see the module docstring) to ``path``."""
    from fusion_dspy.aggregate import BON, FUSION
    from fusion_dspy.records import FORMAT_VERSION, SYNTH

    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 10))) for _ in range(5000)]
    weights = [1.0 / (rank + 10) for rank in range(len(vocab))]  # Zipf-like: common words repeat

    def text(chars: int) -> str:
        words = rng.choices(vocab, weights, k=chars // 5)
        out = " ".join(words)
        while len(out) < chars:
            out += " " + " ".join(rng.choices(vocab, weights, k=20))
        return out[:chars]

    with path.open("w", encoding="utf-8") as fh:
        for r in range(n):
            sources = [text(rng.randint(1800, 2200)) for _ in range(5)]
            pieces, length = [], 0
            while length < 2000:
                if rng.random() < 0.85:
                    src = sources[rng.randrange(5)]
                    lo = rng.randrange(len(src) - 50)
                    piece = src[lo : lo + rng.randint(40, 400)]
                else:
                    piece = text(rng.randint(20, 120))  # novel text
                pieces.append(piece)
                length += len(piece)
            order = list(range(5))
            rng.shuffle(order)
            fused = {"outputs": {"response": "".join(pieces)}, "comparison": "", "order": order, "fallback": None}
            pick = rng.randrange(5)
            inputs = {"prompt": f"prompt {r}"}
            record = {  # a synth record of docs/records.md
                "id": f"bench-{r}", "format": FORMAT_VERSION, "kind": SYNTH, "config": {}, "inputs": inputs,
                "candidates": {
                    "inputs": inputs,
                    "candidates": [
                        {"index": i, "model": f"teacher-{i}", "sample": 0, "outputs": {"response": s}, "error": None}
                        for i, s in enumerate(sources)
                    ],
                    "output_fields": ["response"],
                    "usage": {},
                },
                "methods": {
                    FUSION: {"outputs": fused["outputs"], "fallback": None, FUSION: fused},
                    BON: {"outputs": {"response": sources[pick]}, "fallback": None,
                          "selection": {"index": pick, "scores": {}, "method": "best_of_n", "fallback": None}},
                },
                "messages": [{"role": "user", "content": inputs["prompt"]}],
            }
            fh.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------- the straightforward way


def straightforward_counts(fused: str, sources: dict[str, str]) -> dict[str, int]:
    """The procedure as written: stdlib difflib, a best length and owner set per character."""
    n = len(fused)
    best = [0] * n
    owners: list[set[str]] = [set() for _ in range(n)]
    for name, src in sources.items():
        for i, _j, size in difflib.SequenceMatcher(None, fused, src, autojunk=False).get_matching_blocks():
            for k in range(i, i + size):
                if size > best[k]:
                    best[k], owners[k] = size, {name}
                elif size == best[k]:
                    owners[k].add(name)
    counts = dict.fromkeys([*sources, "multiple", "unmatched"], 0)
    for own in owners:
        counts["unmatched" if not own else next(iter(own)) if len(own) == 1 else "multiple"] += 1
    return counts


def check_sample(path: Path, sample: int, workers: int) -> dict[str, float]:
    """Time the straightforward implementation on ``sample`` records; check the library agrees exactly."""
    from fusion_dspy.analysis import Aggregate, analyze_records, char_counts, iter_views

    views = list(iter_views(path, limit=sample))
    start = time.perf_counter()
    reference = [straightforward_counts(v.fused, v.sources) for v in views]
    ref_seconds = time.perf_counter() - start
    start = time.perf_counter()
    fast = [char_counts(v.fused, v.sources) for v in views]
    fast_seconds = time.perf_counter() - start
    mismatches = sum(a != b for a, b in zip(reference, fast, strict=True))
    ref_agg = Aggregate()
    for view, counts in zip(views, reference, strict=True):
        ref_agg.add(view, counts)
    lib_agg = analyze_records(path, limit=sample, workers=workers, progress=False).aggregate
    return {
        "records": len(views),
        "stdlib_rps": len(views) / ref_seconds,
        "fast_1core_rps": len(views) / fast_seconds,
        "mismatched_records": mismatches,
        "aggregate_identical": ref_agg.to_dict() == lib_agg.to_dict(),
    }


# ----------------------------------------------------------------------------- the analyze run


def child(path: str, out: str, limit: int, workers: int) -> None:
    """Run the analyze code path in this (fresh) process; print timing and peak RSS as JSON."""
    from fusion_dspy.analysis import analyze_records, write_report

    start = time.perf_counter()
    result = analyze_records(path, limit=limit, workers=workers, progress=False)
    write_report(result, out)
    seconds = time.perf_counter() - start
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    agg = result.aggregate
    print(
        json.dumps(
            {
                "records": agg.records,
                "analysed": agg.analysed,
                "seconds": seconds,
                "cpu_seconds": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                "main_rss_mb": me.ru_maxrss / 1024,
                "worker_rss_mb": kids.ru_maxrss / 1024,
            }
        )
    )


def reference_loop(path: str, sample: int) -> None:
    """Run the straightforward implementation over the sample, round and round, until stdin closes.

    Started beside an analyze run so both see the same machine load over the same window: with W
    workers and this one process sharing the cores, the ratio of their rates is the speed-up the
    analysis has over one straightforward process, even when other jobs load the machine.
    """
    import threading

    from fusion_dspy.analysis import iter_views

    views = list(iter_views(path, limit=sample))
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print("ready", flush=True)
    done, start, cpu0 = 0, time.perf_counter(), time.process_time()
    end, cpu1 = start, cpu0
    while not stop.is_set():
        view = views[done % len(views)]
        straightforward_counts(view.fused, view.sources)
        done += 1
        end, cpu1 = time.perf_counter(), time.process_time()
    print(json.dumps({"records": done, "seconds": end - start, "cpu_seconds": cpu1 - cpu0}), flush=True)


def run_alone(path: Path, out: Path, limit: int, workers: int) -> dict:
    """One analyze run in a fresh process with nothing beside it (the sequential comparison)."""
    cmd = [sys.executable, __file__, "--child", str(path), str(out), str(limit), str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"analyze run failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_child(path: Path, out: Path, limit: int, workers: int, sample: int) -> tuple[dict, dict]:
    """One analyze run in a fresh process, with the reference loop running beside it."""
    ref = subprocess.Popen(
        [sys.executable, __file__, "--reference", str(path), str(sample)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert ref.stdout is not None and ref.stdin is not None
    if ref.stdout.readline().strip() != "ready":
        raise SystemExit("the reference process did not start")
    cmd = [sys.executable, __file__, "--child", str(path), str(out), str(limit), str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    ref.stdin.close()
    ref_result = json.loads(ref.stdout.read().strip().splitlines()[-1])
    ref.wait()
    if proc.returncode != 0:
        raise SystemExit(f"analyze run failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), ref_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=1_000, help="records of the smaller run (memory comparison)")
    parser.add_argument("--sample", type=int, default=100, help="records checked against the stdlib implementation")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", nargs=4, metavar=("PATH", "OUT", "LIMIT", "WORKERS"), help=argparse.SUPPRESS)
    parser.add_argument("--reference", nargs=2, metavar=("PATH", "SAMPLE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), int(args.child[3]))
        return
    if args.reference:
        reference_loop(args.reference[0], int(args.reference[1]))
        return

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the temporary folder is removed
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.jsonl"
        start = time.perf_counter()
        make_records(path, args.records)
        print(
            f"generated {args.records} records ({path.stat().st_size / 1e6:.0f} MB) in "
            f"{time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        check = check_sample(path, args.sample, args.workers)
        print(f"stdlib reference alone on {check['records']} records: {check['stdlib_rps']:.2f} records/s", flush=True)
        runs = []
        for limit, workers in ((args.small, 1), (args.small, args.workers), (args.records, args.workers)):
            load = os.getloadavg()[0]
            result, ref = run_child(path, Path(tmp) / f"out_{limit}_{workers}", limit, workers, args.sample)
            runs.append((limit, workers, result, ref, load))
            print(f"analyze {limit} records, {workers} workers: {result['seconds']:.0f} s", flush=True)
        alone = run_alone(path, Path(tmp) / "out_alone", args.records, args.workers)
        print(f"analyze {args.records} records, {args.workers} workers, alone: {alone['seconds']:.0f} s", flush=True)

    print()
    print("| run | records | seconds | records/s | reference records/s (same window) | speed-up "
          "| CPU speed-up | main RSS MB | worker RSS MB | load avg |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for _limit, workers, r, ref, load in runs:
        rps, ref_rps = r["records"] / r["seconds"], ref["records"] / ref["seconds"]
        cpu_speedup = (ref["cpu_seconds"] / ref["records"]) / (r["cpu_seconds"] / r["records"])
        worker_rss = f"{r['worker_rss_mb']:.0f}" if workers > 1 else "-"
        print(
            f"| analyze, {workers} worker{'s' if workers > 1 else ''} | {r['records']} | {r['seconds']:.1f} | {rps:.2f} "
            f"| {ref_rps:.2f} | {rps / ref_rps:.1f}x | {cpu_speedup:.1f}x | {r['main_rss_mb']:.0f} | {worker_rss} "
            f"| {load:.1f} |"
        )
    print()
    print(
        f"identical on the {check['records']}-record sample: per-record counts "
        f"{'yes' if check['mismatched_records'] == 0 else 'NO (' + str(check['mismatched_records']) + ' differ)'}, "
        f"aggregate {'yes' if check['aggregate_identical'] else 'NO'}"
    )
    full, small = runs[-1][2], runs[1][2]
    full_ref = runs[-1][3]
    alone_rps = alone["records"] / alone["seconds"]
    print(
        f"sequential comparison (each alone on the machine): stdlib {check['stdlib_rps']:.2f} records/s; analyze over "
        f"{args.records} records, {args.workers} workers {alone_rps:.2f} records/s: {alone_rps / check['stdlib_rps']:.1f}x"
    )
    print(
        f"peak RSS {args.small} -> {args.records} records: main {small['main_rss_mb']:.0f} -> "
        f"{full['main_rss_mb']:.0f} MB, worker {small['worker_rss_mb']:.0f} -> {full['worker_rss_mb']:.0f} MB"
    )
    speedup = (full["records"] / full["seconds"]) / (full_ref["records"] / full_ref["seconds"])
    ok = check["mismatched_records"] == 0 and check["aggregate_identical"] and speedup >= 15
    print(f"target (identical, >= 15x over {args.records} records): {'met' if ok else 'NOT met'} ({speedup:.1f}x)")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
