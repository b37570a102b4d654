"""``fusion-dspy demo``: the main job. N candidates, then Best-of-N and Fusion-of-N on the same pool."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from fusion_dspy.cli._models import (
    API_BASE_OPTION,
    API_KEY_OPTION,
    MODEL_OPTION,
    MODEL_PATH_OPTION,
    POOL_OPTION,
    open_pool,
)
from fusion_dspy.sampling import DEFAULT_N

DEFAULT_PROMPT = "Give three practical tips for writing clear technical documentation."


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def run_demo(pool: Any, prompt: str, *, n: int = DEFAULT_N, max_tokens: int = 384, seed: int = 0, compare: bool = False) -> dict[str, Any]:
    """Sample N candidates for ``prompt``, select with the LLM rater, fuse with the fusor; return a report.

    The prompt goes to the model as the only message (plain prompts); the report says how much of
    the fused answer each candidate supplied (the paper's contribution analysis) and whether it
    passes the substance checks of :mod:`fusion_dspy.substance`.
    """
    import dspy

    from fusion_dspy.aggregate import BON, FUSION, Aggregators
    from fusion_dspy.analysis import contributions
    from fusion_dspy.fuse import Fusor
    from fusion_dspy.sampling import sample_candidates
    from fusion_dspy.select import LLMRater
    from fusion_dspy.substance import assess

    program = dspy.Predict("prompt -> response")
    started = time.perf_counter()
    multi = len(pool.teachers) > 1
    # Fresh samples on every run (no DSPy cache): a demo run twice should not replay its candidates.
    sampler = pool.endpoints[pool.teachers[0]].lm(max_tokens=max_tokens, cache=False)
    cset = sample_candidates(
        program, {"prompt": prompt}, lm=sampler, n=n,
        pool=pool.teacher_lms(max_tokens=max_tokens, cache=False) if multi else None,
        samples_per_model=pool.samples_per_teacher,
    )
    fusor_lm = pool.endpoints[pool.fusor_name].lm(max_tokens=max_tokens, temperature=0.0, cache=False)
    rater_lm = pool.endpoints[pool.rater_name].lm(max_tokens=max(96, max_tokens // 2), temperature=0.0, cache=False)
    fusor = Fusor(program.signature, lm=fusor_lm, seed=seed, compare=compare)
    aggregators = Aggregators(fusor=fusor, scorer=LLMRater(rater_lm), seed=seed)
    results = aggregators.run(cset, [BON, FUSION])
    bon, fusion = results[BON], results[FUSION]
    selection, fused = bon["selection"], fusion[FUSION]
    answer = str(fused["outputs"].get("response") or "")
    texts = {f"candidate {c.index}": str(c.outputs.get("response") or "") for c in cset.ok}
    shares = contributions(answer, texts) if answer else {}
    substance = assess(answer, list(texts.values()), fallback=fused["fallback"] is not None)
    return {
        "prompt": prompt,
        "candidates": [
            {"index": c.index, "model": c.model, "sample": c.sample, "answer": c.outputs.get("response"),
             "error": c.error, "parse": c.parse}
            for c in cset.candidates
        ],
        "best_of_n": {
            "index": selection["index"],
            "answer": selection["outputs"].get("response"),
            "scores": {int(k): v for k, v in selection["scores"].items()},
            "fallback": selection["fallback"],
        },
        FUSION: {
            "answer": answer,
            "comparison": fused["comparison"],
            "order": fused["order"],
            "fallback": fused["fallback"],
            "truncated": fused["truncated"],
            "copied_from": {int(k.split()[-1]): round(v, 3) for k, v in shares.items() if k.startswith("candidate ")},
            "copied_from_several": round(shares.get("multiple", 0.0), 3),
            "new_text": round(shares.get("unmatched", 0.0), 3),
            "substance": substance.to_dict(),
        },
        "usage": {
            "sampling": cset.usage.to_dict(),
            "best_of_n": bon["usage"]["aggregation"],
            FUSION: fusion["usage"]["aggregation"],
            "seconds_total": round(time.perf_counter() - started, 2),
        },
    }


def demo(
    prompt: str = typer.Argument(DEFAULT_PROMPT, help="The prompt to answer (default: a built-in one)."),
    n: int = typer.Option(DEFAULT_N, "--n", min=1, help="Candidates to sample (default 5 at temperature 0.7, the paper's test-time setting)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a report."),
    max_tokens: int = typer.Option(384, "--max-tokens", min=16, help="Completion budget per call."),
    seed: int = typer.Option(0, "--seed", help="Seed of the candidates' shown order and of Best-of-N's tie-break."),
    compare: bool = typer.Option(False, "--compare", help="The fusor compares the candidates first (one more call)."),
    pool: Path | None = POOL_OPTION,
    model: str | None = MODEL_OPTION,
    api_base: str | None = API_BASE_OPTION,
    api_key: str | None = API_KEY_OPTION,
    model_path: Path | None = MODEL_PATH_OPTION,
) -> None:
    """Sample N answers to PROMPT, pick one (Best-of-N, LLM rater) and fuse them (Fusion-of-N)."""
    with open_pool(pool, model, api_base, api_key, model_path) as run_pool:
        if not as_json:
            typer.echo(f"Sampling {n} candidates and aggregating them (endpoints: {', '.join(run_pool.endpoints)}) ...", err=True)
        report = run_demo(run_pool, prompt, n=n, max_tokens=max_tokens, seed=seed, compare=compare)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    from fusion_dspy.aggregate import FUSION

    console = Console()
    console.print(Panel(report["prompt"], title="prompt"))
    scores = report["best_of_n"]["scores"]
    for c in report["candidates"]:
        body = c["answer"] if c["error"] is None else f"[failed] {c['error']}"
        title = f"candidate {c['index']} ({c['model']}#{c['sample']}) score {scores.get(c['index'])}"
        console.print(Panel(str(body), title=title))
    bon = report["best_of_n"]
    note = f" (fallback: {bon['fallback']})" if bon["fallback"] else ""
    console.print(Panel(str(bon["answer"]), title=f"Best-of-N pick: candidate {bon['index']}{note}"))
    fusion = report[FUSION]
    if fusion["comparison"]:
        console.print(Panel(fusion["comparison"], title=f"fusor's comparison (shown order {fusion['order']})"))
    notes = [f"fallback: {fusion['fallback']}"] if fusion["fallback"] else []
    if fusion["truncated"]:
        notes.append("truncated at max_tokens")
    console.print(Panel(str(fusion["answer"]), title="Fusion-of-N answer" + (f" ({'; '.join(notes)})" if notes else "")))
    shares = ", ".join(f"candidate {k}: {v:.0%}" for k, v in sorted(fusion["copied_from"].items(), key=lambda kv: int(kv[0])))
    sub = fusion["substance"]
    console.print(
        f"where the fused answer comes from: {shares}; from several at once: {fusion['copied_from_several']:.0%}; "
        f"new text: {fusion['new_text']:.0%}\n"
        f"substance: {'substantive' if sub['substantive'] else 'NOT substantive'} ({sub['chars']} characters, "
        f"{sub['length_ratio']:.2f}x the candidates' median, {sub['copied_share']:.0%} in passages of 12+ characters "
        f"from the candidates{', framing: ' + ', '.join(sub['framing']) if sub['framing'] else ''})"
    )
    table = Table(title="usage per stage")
    for col in ("stage", "prompt tokens", "completion tokens", "calls", "seconds"):
        table.add_column(col)
    for stage in ("sampling", "best_of_n", FUSION):
        u = report["usage"][stage]
        table.add_row(stage, str(u["prompt_tokens"]), str(u["completion_tokens"]), str(u["calls"]), f"{u['seconds']:.1f}")
    console.print(table)
    console.print(f"total {report['usage']['seconds_total']:.1f} s")
