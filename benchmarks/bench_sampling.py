"""Sampling speed: fd.BestOfN vs dspy.BestOfN vs the raw n=N request, on the embedded model.

Run: .venv/bin/python benchmarks/bench_sampling.py [--prompts 3] [--n 4] [--max-tokens 96] [--rounds 1]

For each prompt, in rotating order so no method always runs on a warm prompt cache:
- raw:   the same DSPy-formatted messages sent straight through LiteLLM as one ``n=N`` request (the limit);
- ours:  ``fd.BestOfN(program, n=N, scorer=callable)`` (one n=N request, per-choice parsing);
- dspy:  ``dspy.BestOfN(module=program, N=N, reward_fn=callable, threshold=inf)`` (sequential
         attempts at temperature 1.0, JSON-adapter retries on parse failures).
Caching is off everywhere. Targets (issue 3): ours >= 1.5x faster than dspy.BestOfN; ours <= 1.15x raw.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402
import litellm  # noqa: E402

import fusion_dspy as fd  # noqa: E402

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell altogether?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. She has only half of the money. Her parents give her $15, "
    "and her grandparents twice as much. How much more money does she need?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
    "Mark has a garden with flowers. He planted plants of three different colors. Ten of them are yellow, "
    "and there are 80% more of those in purple. How many flowers are there?",
]


def reward(args, pred) -> float:
    return float(len(str(pred.get("answer") or "")))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    questions = QUESTIONS[: args.prompts]
    totals = {"raw": 0.0, "ours": 0.0, "dspy": 0.0}
    tokens = {"raw": 0, "ours": 0, "dspy": 0}
    with fd.embedded() as server:
        lm = server.lm(max_tokens=args.max_tokens, cache=False, seed=args.seed)  # same seed: same texts for raw and ours
        program = dspy.Predict("question -> answer")
        dspy.configure(lm=lm)
        ours = fd.BestOfN(program, n=args.n, scorer=reward)
        theirs = dspy.BestOfN(module=program, N=args.n, reward_fn=reward, threshold=float("inf"))
        adapter = dspy.ChatAdapter()

        def run_raw(q):
            messages = adapter.format(program.signature, [], {"question": q})
            r = litellm.completion(model="openai/embedded", api_base=server.api_base, api_key="local",
                                   messages=messages, n=args.n, temperature=0.7, max_tokens=args.max_tokens, seed=args.seed)
            return sum(len(c.message.content or "") for c in r.choices)

        from dspy.clients.base_lm import GLOBAL_HISTORY  # every LM call, including copies of lm

        def generated_chars(before):
            return sum(len(o if isinstance(o, str) else o.get("text", "")) for h in GLOBAL_HISTORY[before:] for o in h["outputs"])

        def run_ours(q):
            before = len(GLOBAL_HISTORY)
            ours(question=q)
            return generated_chars(before)

        def run_dspy(q):
            before = len(GLOBAL_HISTORY)
            theirs(question=q)
            return generated_chars(before)

        runners = {"raw": run_raw, "ours": run_ours, "dspy": run_dspy}
        names = list(runners)
        run_raw("warm-up question: what is 1+1?")
        for r in range(args.rounds):
            for i, q in enumerate(questions):
                order = names[(i + r) % 3 :] + names[: (i + r) % 3]
                for name in order:
                    start = time.perf_counter()
                    tokens[name] += runners[name](q)
                    totals[name] += time.perf_counter() - start
    result = {
        "prompts": len(questions), "n": args.n, "max_tokens": args.max_tokens, "rounds": args.rounds,
        "seconds": {k: round(v, 2) for k, v in totals.items()},
        "generated_chars": tokens,
        "speedup_vs_dspy_BestOfN": round(totals["dspy"] / totals["ours"], 2),
        "ours_over_raw": round(totals["ours"] / totals["raw"], 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
