"""Adaptive N against fixed N=8: accuracy, samples, fusor calls and tokens (issue 17).

``--part scripted``: a scripted LM with a known per-example accuracy (``easy`` questions answered
right with probability 0.9, ``medium`` 0.6, ``hard`` 0.3; wrong answers spread over three values).
Fixed N=8 is one ``n=8`` request and a majority vote; adaptive is ``FusionOfN`` sampling in rounds
(start 2, step 2, Beta threshold 0.85 by default: two agreeing votes give 0.875) whose closed-form agreement returns the agreed
answer, else majority over the rounds' candidates. Goal: adaptive accuracy within 1 point of fixed
N=8 with at most 50% of its tokens.

``--part embedded``: the embedded SmolLM2-135M (run it under ``flock /tmp/fd-embedded.lock``) on
MGSM-en questions (closed form: the Beta rule) and Arena-Hard v2.0 prompts (free form: rapidfuzz
near-duplicates). Per prompt a fixed pool of 8 is sampled in one request and fused; adaptive
sampling runs live in rounds (its own requests) and fuses only when the candidates did not agree.
It reports samples used, fusor calls skipped and tokens (sampling + fusor) against fixed N=8.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import dspy

from fusion_dspy.adaptive import AdaptiveN, answer_key, sample_adaptive
from fusion_dspy.sampling import sample_candidates
from fusion_dspy.select.majority import majority_vote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fakes
DATA = ROOT.parent / "shared" / "data"
LEVELS = {"easy": 0.9, "medium": 0.6, "hard": 0.3}


def _uniform(*parts: Any) -> float:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:12], 16) / 16**12


def scripted(examples: int, adaptive: AdaptiveN, mix: dict[str, float], prompt_tokens: int, length: int) -> dict[str, Any]:
    from tests.fakes.voting import VotingLM, first_word

    levels = [next(lv for lv, cum in _cumulative(mix) if _uniform("level", i) < cum) for i in range(examples)]

    def answer(question: str, s: int) -> str:
        i = int(question[1:])
        if _uniform(question, s) < LEVELS[levels[i]]:
            return "RIGHT"
        return f"WRONG{int(_uniform('wrong', question, s) * 3)}"

    program = dspy.Predict("question -> answer")
    key = answer_key("answer", first_word)
    fixed_ok = adapt_ok = fixed_tokens = adapt_tokens = adapt_samples = 0
    stops: dict[str, int] = {}
    for i in range(examples):
        inputs = {"question": f"Q{i}"}
        lm = VotingLM(answer, length=length, prompt_tokens=prompt_tokens, max_tokens=length)
        pool = sample_candidates(program, inputs, lm=lm, n=adaptive.max_n)
        fixed_ok += majority_vote(pool, "answer", first_word).outputs["answer"].startswith("RIGHT")
        fixed_tokens += pool.usage.total_tokens
        lm = VotingLM(answer, length=length, prompt_tokens=prompt_tokens, max_tokens=length)
        cset, trace = sample_adaptive(program, inputs, adaptive, lm=lm, key=key, rollout_offset=1000)
        adapt_ok += majority_vote(cset, "answer", first_word).outputs["answer"].startswith("RIGHT")
        adapt_tokens += trace.tokens
        adapt_samples += trace.samples
        stops[trace.stop] = stops.get(trace.stop, 0) + 1
    out = {
        "examples": examples, "mix": mix, "prompt_tokens": prompt_tokens, "completion_tokens_per_sample": length, "settings": adaptive.__dict__,
        "fixed": {"accuracy": fixed_ok / examples, "tokens_per_example": fixed_tokens / examples, "samples_per_example": adaptive.max_n},
        "adaptive": {"accuracy": adapt_ok / examples, "tokens_per_example": adapt_tokens / examples,
                     "samples_per_example": adapt_samples / examples, "stops": stops},
    }
    out["accuracy_gap_points"] = round(100 * (out["fixed"]["accuracy"] - out["adaptive"]["accuracy"]), 2)
    out["token_share"] = round(adapt_tokens / fixed_tokens, 4)
    out["goal_met"] = out["accuracy_gap_points"] <= 1 and out["token_share"] <= 0.5
    return out


def _cumulative(mix: dict[str, float]) -> list[tuple[str, float]]:
    total, out = 0.0, []
    for level, share in mix.items():
        total += share
        out.append((level, total))
    out[-1] = (out[-1][0], 1.01)
    return out


def embedded(mgsm: int, arena: int, max_tokens: int, adaptive_mgsm: AdaptiveN, adaptive_arena: AdaptiveN) -> dict[str, Any]:
    import fusion_dspy as fd
    from fusion_dspy.aggregate.modules import fusor_for
    from fusion_dspy.task import load_task

    out: dict[str, Any] = {"max_tokens": max_tokens}
    with fd.embedded() as server:
        lm = server.lm(max_tokens=max_tokens, cache=False)
        suites = []
        if mgsm:
            task = load_task("mgsm")
            suites.append(("mgsm-en", task, task.load(DATA / "mgsm" / "mgsm_en.tsv", limit=mgsm), adaptive_mgsm,
                           answer_key(task.answer_field, task.normalize)))
        if arena:
            task = load_task("arena")
            suites.append(("arena-hard-v2", task, task.load(DATA / "arena_hard_v2" / "question.jsonl", limit=arena), adaptive_arena, None))
        for name, task, examples, adaptive, key in suites:
            out[name] = _embedded_suite(task, examples, lm, adaptive, key, fusor_for)
    return out


def _embedded_suite(task, examples, lm, adaptive: AdaptiveN, key, fusor_for) -> dict[str, Any]:
    from fusion_dspy.aggregate.adaptive import run_adaptive
    from fusion_dspy.aggregate.registry import FusionAggregator

    program = task.program()
    fusion = FusionAggregator(fusor_for(program, lm=lm))
    rows = []
    started = time.perf_counter()
    for i, ex in enumerate(examples):
        inputs = dict(ex.inputs().toDict())
        pool = sample_candidates(program, inputs, lm=lm, n=adaptive.max_n, rollout_offset=10_000)
        fixed = fusion.run(pool)
        cset, trace = sample_adaptive(program, inputs, adaptive, lm=lm, key=key, field=task.answer_field)
        adapt = run_adaptive(fusion, cset, trace)
        row = {
            "id": str(ex.get("id")),
            "fixed_tokens": fixed.usage["total"]["total_tokens"], "fixed_fusor_tokens": fixed.usage["aggregation"]["total_tokens"],
            "adaptive_tokens": adapt.usage["total"]["total_tokens"], "samples": trace.samples, "rounds": trace.rounds,
            "stop": trace.stop, "fusor_skipped": adapt.adaptive["aggregation_skipped"], "evidence": trace.evidence,
        }
        if task.normalize is not None and task.has_gold:
            row["fixed_score"] = float(task.metric(ex, dspy.Prediction(**fixed.outputs)))
            row["adaptive_score"] = float(task.metric(ex, dspy.Prediction(**adapt.outputs)))
        rows.append(row)
        print(json.dumps({"suite": task.name, "i": i, **{k: v for k, v in row.items() if k != "evidence"}}), flush=True)
    n = len(rows)
    fixed_tokens = sum(r["fixed_tokens"] for r in rows)
    adaptive_tokens = sum(r["adaptive_tokens"] for r in rows)
    summary = {
        "prompts": n, "seconds": round(time.perf_counter() - started, 1),
        "samples_per_prompt": sum(r["samples"] for r in rows) / n, "fixed_samples_per_prompt": adaptive.max_n,
        "fusor_calls_skipped": sum(r["fusor_skipped"] for r in rows),
        "stops": {s: sum(r["stop"] == s for r in rows) for s in sorted({r["stop"] for r in rows})},
        "fixed_tokens_per_prompt": fixed_tokens / n, "adaptive_tokens_per_prompt": adaptive_tokens / n,
        "tokens_saved_per_prompt": (fixed_tokens - adaptive_tokens) / n, "token_share": round(adaptive_tokens / fixed_tokens, 4),
        "settings": adaptive.__dict__,
    }
    if rows and "fixed_score" in rows[0]:
        summary["fixed_accuracy"] = sum(r["fixed_score"] for r in rows) / n
        summary["adaptive_accuracy"] = sum(r["adaptive_score"] for r in rows) / n
    return {"summary": summary, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("scripted", "embedded", "both"), default="scripted")
    ap.add_argument("--examples", type=int, default=1000, help="scripted: questions")
    ap.add_argument("--mix", default="easy=0.8,medium=0.1,hard=0.1", help="scripted: share of each difficulty")
    ap.add_argument("--start", type=int, default=2)
    ap.add_argument("--step", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.85)
    ap.add_argument("--prompt-tokens", type=int, default=100, help="scripted: prompt tokens per request")
    ap.add_argument("--length", type=int, default=200, help="scripted: completion tokens per sample")
    ap.add_argument("--similarity", type=float, default=90.0)
    ap.add_argument("--mgsm", type=int, default=20)
    ap.add_argument("--arena", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    adaptive = AdaptiveN(start=args.start, step=args.step, max_n=8, threshold=args.threshold, similarity=args.similarity)
    result: dict[str, Any] = {}
    if args.part in ("scripted", "both"):
        mix = {k: float(v) for k, v in (item.split("=") for item in args.mix.split(","))}
        result["scripted"] = scripted(args.examples, adaptive, mix, args.prompt_tokens, args.length)
        print(json.dumps(result["scripted"], indent=1))
    if args.part in ("embedded", "both"):
        result["embedded"] = embedded(args.mgsm, args.arena, args.max_tokens, adaptive, adaptive)
        print(json.dumps({k: (v["summary"] if isinstance(v, dict) and "summary" in v else v) for k, v in result["embedded"].items()}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
