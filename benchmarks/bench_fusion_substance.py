"""Are fused answers answers? Substance of Fusion-of-N on the embedded model, and OptiLLM's moa beside it.

Run: .venv/bin/python benchmarks/bench_fusion_substance.py [--data ../shared/data/arena_hard_v2/question.jsonl]
     [--limit 20] [--n 4] [--max-tokens 384] [--compare] [--format auto|plain|structured]
     [--moa 6 --moa-data ../shared/data/ultrafeedback/train_clean.jsonl --moa-max-tokens 256]
     [--json OUT] [--answers OUT.md]

Part 1 (issue 12's headline): FusionOfN over the task's prompts, each fused answer measured with
``fusion_dspy.substance``: parsed without fallback, free of prompt framing, share copied from the
candidates (runs of 12+ characters), length against the candidates', stubs, degenerate loops (for
the fused answers and for the candidates), truncation at max_tokens; and seconds.
``--answers`` writes every prompt, candidate and fused answer to a Markdown file to read.

Part 2 (``--moa K``): K UltraFeedback prompts, one run each of FusionOfN, the issue's plain probe
(raw client, short instruction: the reference the time target came from) and OptiLLM's
``mixture_of_agents`` (``pip install --no-deps optillm``; its ``moa.py`` is loaded by path) with
an OpenAI client on the same embedded server and the same ``max_tokens``: total seconds and median
answer length. Targets: fusion time <= 0.5x moa's, median fused length >= 0.5x moa's.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402

import fusion_dspy as fd  # noqa: E402
from fusion_dspy.substance import answer_text, assess, summarize  # noqa: E402
from fusion_dspy.synth.prompts import read_prompts  # noqa: E402
from fusion_dspy.task import load_task  # noqa: E402

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def fuse_many(server, examples, *, task, n: int, max_tokens: int, compare: bool, fmt: str, fusor_temperature: float) -> list[dict]:
    """FusionOfN on each example; one row per example with the candidates, the answer and its substance."""
    sampler = server.lm(max_tokens=max_tokens, cache=False)
    fusor = server.lm(max_tokens=max_tokens, temperature=fusor_temperature, cache=False)
    module = fd.FusionOfN(task.program(), n=n, fusor=fusor, lm=sampler, compare=compare, format=fmt)
    rows = []
    for ex in examples:
        started = time.perf_counter()
        try:
            pred = module(**ex.inputs())
        except fd.SamplingError as exc:  # e.g. a prompt longer than the model's context
            print(f"{ex.id}: skipped, sampling failed: {str(exc)[:120]}", flush=True)
            continue
        cands = [answer_text(c.outputs, task.answer_field) for c in pred.candidates.ok]
        answer = answer_text(pred.fusion.outputs, task.answer_field)
        sub = assess(answer, cands, fallback=pred.fallback is not None)
        rows.append({
            "id": ex.id, "prompt": str(next(iter(ex.inputs().values()))), "candidates": cands, "answer": answer,
            "comparison": pred.fusion.comparison, "fallback": pred.fallback, "truncated": pred.fusion.truncated,
            "rejected": pred.fusion.raw if pred.fallback else None,  # the fusor's last unusable text, to read why
            "cut": pred.fusion.cut, "uncut": pred.fusion.raw if pred.fusion.cut else None,  # a loop cut from the answer
            "substance": sub, "seconds": time.perf_counter() - started,
            "candidates_degenerate": sum(assess(c, cands).degenerate for c in cands), "fusor_calls": pred.fusion.usage.calls,
        })
        print(f"{ex.id}: substantive={sub.substantive} chars={sub.chars} ratio={sub.length_ratio:.2f} "
              f"copied={sub.copied_share:.2f} framing={list(sub.framing)} repetition={sub.repetition:.2f} "
              f"calls={pred.fusion.usage.calls} cut={pred.fusion.cut is not None} "
              f"{rows[-1]['seconds']:.1f}s", flush=True)
    return rows


def load_moa():
    """OptiLLM's ``mixture_of_agents``, from its ``moa.py``.

    ``import optillm`` starts its whole proxy (torch, transformers, spaCy ...), so the package is
    installed with ``pip install --no-deps optillm`` and only ``moa.py`` and the logger it imports
    are loaded, under a bare ``optillm`` package module.
    """
    import types

    spec = importlib.util.find_spec("optillm")  # finds the folder without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("--moa needs OptiLLM's files: .venv/bin/pip install --no-deps optillm")
    folder = Path(next(iter(spec.submodule_search_locations)))
    package = types.ModuleType("optillm")
    package.__path__ = [str(folder)]
    sys.modules["optillm"] = package
    for name in ("conversation_logger", "moa"):
        module_spec = importlib.util.spec_from_file_location(f"optillm.{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[f"optillm.{name}"] = module
        module_spec.loader.exec_module(module)
        setattr(package, name, module)
    return package.moa.mixture_of_agents


# the plain probe, as it describes it: the user's prompt as the only message, then one call
# with a short fusor instruction and the drafts, no output format; a reference, not the library
PROBE_INSTRUCTION = ("You are given a user's request and several draft answers. Combine the drafts into one better answer: "
                     "keep what they get right, drop their mistakes. Reply with the answer only.")


def plain_probe(client, prompt: str, *, n: int, max_tokens: int, fusor_temperature: float) -> tuple[str, list[str], float]:
    """The issue's probe with the raw OpenAI client: (fused answer, drafts, seconds fusing)."""
    drafts = client.chat.completions.create(model="embedded", messages=[{"role": "user", "content": prompt}], n=n,
                                            max_tokens=max_tokens, temperature=0.7)
    sampled = time.perf_counter()
    user = f"Request:\n{prompt}\n\n" + "\n\n".join(f"Draft {i + 1}:\n{c.message.content}" for i, c in enumerate(drafts.choices))
    fused = client.chat.completions.create(
        model="embedded", messages=[{"role": "system", "content": PROBE_INSTRUCTION}, {"role": "user", "content": user}],
        max_tokens=max_tokens, temperature=fusor_temperature)
    texts = [c.message.content or "" for c in drafts.choices]
    return fused.choices[0].message.content or "", texts, time.perf_counter() - sampled


def side_by_side(server, prompts: list[str], *, n: int, max_tokens: int, fusor_temperature: float) -> dict:
    """Same prompts, same server, same max_tokens: FusionOfN, OptiLLM moa, and the issue's plain probe.

    The three run one prompt at a time, their order rotated per prompt, so that a slow spell of the
    machine does not fall on one method only.
    """
    import openai

    mixture_of_agents = load_moa()
    client = openai.OpenAI(base_url=server.api_base, api_key="none")
    os.environ.setdefault("OPTILLM_MAX_TOKENS", str(max_tokens))
    sampler = server.lm(max_tokens=max_tokens, cache=False)
    fusor = server.lm(max_tokens=max_tokens, temperature=fusor_temperature, cache=False)
    module = fd.FusionOfN(dspy.Predict("prompt -> response"), n=n, fusor=fusor, lm=sampler)
    seconds = {"fusion": 0.0, "moa": 0.0, "probe": 0.0}
    lengths: dict[str, list[int]] = {"fusion": [], "moa": [], "probe": []}
    fused_tokens = moa_tokens = 0
    fusor_seconds = probe_fusor_seconds = 0.0
    substantive = {"fusion": 0, "probe": 0}
    fusor_calls = 0
    examples = []
    for i, prompt in enumerate(prompts):
        answers: dict[str, str] = {}
        took: dict[str, float] = {}
        fusion_notes: dict[str, object] = {}
        methods = ["fusion", "moa", "probe"]
        for method in methods[i % 3:] + methods[: i % 3]:
            started = time.perf_counter()
            if method == "fusion":
                pred = module(prompt=prompt)
                answers[method] = pred.response or ""
                fused_tokens += pred.usage["total"]["total_tokens"]
                fusor_seconds += pred.fusion.usage.seconds
                fusor_calls += pred.fusion.usage.calls
                fusion_notes = {"fusor_calls": pred.fusion.usage.calls, "fallback": pred.fallback, "cut": pred.fusion.cut}
                drafts = [answer_text(c.outputs, "response") for c in pred.candidates.ok]
                substantive[method] += assess(answers[method], drafts, fallback=pred.fallback is not None).substantive
            elif method == "moa":
                answer, tokens = _moa(mixture_of_agents, client, prompt, max_tokens)
                answers[method] = answer or ""
                moa_tokens += tokens
            else:
                answers[method], drafts, fusing = plain_probe(client, prompt, n=n, max_tokens=max_tokens, fusor_temperature=fusor_temperature)
                probe_fusor_seconds += fusing
                substantive[method] += assess(answers[method], drafts).substantive
            took[method] = round(time.perf_counter() - started, 1)
            seconds[method] += took[method]
            lengths[method].append(len(answers[method]))
        examples.append({"prompt": prompt, **answers, "seconds": took, **fusion_notes})
        print(" | ".join(f"{m} {lengths[m][-1]} chars {took[m]} s" for m in methods) + f" | fusor calls {fusion_notes['fusor_calls']}",
              flush=True)
    median = {m: statistics.median(v) for m, v in lengths.items()}
    return {
        "prompts": len(prompts), "max_tokens": max_tokens,
        "fusion_seconds": round(seconds["fusion"], 1), "moa_seconds": round(seconds["moa"], 1),
        # where fusion's time goes: drawing the N candidates, then the one fusor call
        "fusion_sampling_seconds": round(seconds["fusion"] - fusor_seconds, 1), "fusion_fusor_seconds": round(fusor_seconds, 1),
        "time_ratio": round(seconds["fusion"] / seconds["moa"], 3) if seconds["moa"] else None,
        "fusion_median_chars": median["fusion"], "moa_median_chars": median["moa"],
        "length_ratio": round(median["fusion"] / max(1, median["moa"]), 3),
        "fusion_tokens": fused_tokens, "moa_completion_tokens": moa_tokens, "fusor_calls": fusor_calls,
        "probe_seconds": round(seconds["probe"], 1), "probe_fusor_seconds": round(probe_fusor_seconds, 1),
        "probe_time_ratio": round(seconds["probe"] / seconds["moa"], 3) if seconds["moa"] else None,
        "probe_median_chars": median["probe"],
        "substantive": substantive,  # fused answers that pass issue 12's checks (moa's drafts are not visible)
        "examples": examples,
    }


def _moa(mixture_of_agents, client, prompt: str, max_tokens: int) -> tuple[str, int]:
    """Call moa with the signature of the installed OptiLLM (newer ones take request_config)."""
    import inspect

    params = inspect.signature(mixture_of_agents).parameters
    kwargs = {"request_config": {"max_tokens": max_tokens}} if "request_config" in params else {}
    out = mixture_of_agents("", prompt, client, "embedded", **kwargs)
    answer, tokens = out[0], out[1] if len(out) > 1 else 0
    return answer, int(tokens or 0)


def write_answers(path: str, rows: list[dict]) -> None:
    lines = ["# Fused answers (bench_fusion_substance.py)\n"]
    for r in rows:
        lines.append(f"## {r['id']}\n\n**Prompt:** {r['prompt'][:600]}\n")
        for i, c in enumerate(r["candidates"]):
            lines.append(f"**Candidate {i}** ({len(c)} chars):\n\n```\n{c}\n```\n")
        if r["comparison"]:
            lines.append(f"**Comparison:**\n\n```\n{r['comparison']}\n```\n")
        if r.get("rejected"):
            lines.append(f"**Rejected by the guard** ({r['fallback']}):\n\n```\n{r['rejected']}\n```\n")
        lines.append(f"**Fused** ({r['substance'].to_dict()}):\n\n```\n{r['answer']}\n```\n")
        if r.get("cut"):
            lines.append(f"**The fusor's whole text** ({r['cut']}):\n\n```\n{r['uncut']}\n```\n")
    Path(path).write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="arena")
    ap.add_argument("--data", default=str(SHARED / "arena_hard_v2" / "question.jsonl"))
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument("--compare", action="store_true", help="the fusor compares the candidates first (separate call)")
    ap.add_argument("--fusor-temperature", type=float, default=0.0,
                    help="as eval, synth and demo use (0.3 measured worse: less copied from the candidates)")
    ap.add_argument("--format", default="auto", choices=["auto", "plain", "structured"])
    ap.add_argument("--moa", type=int, default=0, help="K prompts side by side with OptiLLM moa (0: skip)")
    ap.add_argument("--moa-data", default=str(SHARED / "ultrafeedback" / "train_clean.jsonl"))
    ap.add_argument("--moa-max-tokens", type=int, default=256)
    ap.add_argument("--json", default=None)
    ap.add_argument("--answers", default=None, help="write every candidate and fused answer to this Markdown file")
    args = ap.parse_args()

    result: dict = {}
    with fd.embedded() as server:
        if args.limit > 0:
            task = load_task(args.task)
            examples = task.load(args.data, limit=args.limit)[: args.limit]
            started = time.perf_counter()
            rows = fuse_many(server, examples, task=task, n=args.n, max_tokens=args.max_tokens, compare=args.compare, fmt=args.format,
                             fusor_temperature=args.fusor_temperature)
            summary = summarize([r["substance"] for r in rows])
            summary.update({
                "task": args.task, "data": args.data, "n": args.n, "max_tokens": args.max_tokens, "compare": args.compare,
                "format": args.format, "fusor_temperature": args.fusor_temperature, "truncated": sum(r["truncated"] for r in rows),
                "candidates": sum(len(r["candidates"]) for r in rows),
                "candidates_degenerate": sum(r["candidates_degenerate"] for r in rows),
                "loops_cut": sum(r["cut"] is not None for r in rows), "fusor_calls": sum(r["fusor_calls"] for r in rows),
                "seconds": round(time.perf_counter() - started, 1),
            })
            result["substance"] = summary
            result["rows"] = [{**r, "substance": r["substance"].to_dict()} for r in rows]
            if args.answers:
                write_answers(args.answers, rows)
        if args.moa:
            prompts = [p.text for p in itertools.islice(read_prompts(args.moa_data), args.moa)]
            result["versus_moa"] = side_by_side(server, prompts, n=args.n, max_tokens=args.moa_max_tokens,
                                                fusor_temperature=args.fusor_temperature)
    printable = {k: ({kk: vv for kk, vv in v.items() if kk != "examples"}) for k, v in result.items() if k != "rows"}
    print(json.dumps(printable, indent=2, ensure_ascii=False))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
