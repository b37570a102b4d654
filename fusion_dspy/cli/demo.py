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

DEFAULT_PROMPT = "Give three practical tips for writing clear technical documentation."


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def run_demo(pool: Any, prompt: str, *, n: int = 4, max_tokens: int = 200, seed: int = 0) -> dict[str, Any]:
    """Sample N candidates for ``prompt``, select with the LLM rater, fuse with the fusor; return a report."""
    import dspy

    from fusion_dspy.fuse import Fusor
    from fusion_dspy.methods import Aggregators
    from fusion_dspy.sampling import sample_candidates
    from fusion_dspy.select import LLMRater

    program = dspy.Predict("prompt -> response")
    started = time.perf_counter()
    multi = len(pool.teachers) > 1
    # Fresh samples on every run (no DSPy cache): a demo run twice should not replay its candidates.
    sampler = pool.endpoints[pool.teachers[0]].lm(max_tokens=max_tokens, cache=False)
    cset = sample_candidates(
        program, {"prompt": prompt}, lm=sampler, n=n,
        pool=pool.teacher_lms(max_tokens=max_tokens, cache=False) if multi else None,
        samples_per_model=pool.samples_per_teacher,
    )  # fmt: skip
    fusor_lm = pool.endpoints[pool.fusor_name].lm(max_tokens=max_tokens, temperature=0.0, cache=False)
    rater_lm = pool.endpoints[pool.rater_name].lm(max_tokens=max(96, max_tokens // 2), temperature=0.0, cache=False)
    aggregators = Aggregators(fusor=Fusor(program.signature, lm=fusor_lm, seed=seed), scorer=LLMRater(rater_lm))
    results = aggregators.run(cset, ["bon", "fusion"])
    bon, fusion = results["bon"], results["fusion"]
    selection, fused = bon["selection"], fusion["fusion"]
    return {
        "prompt": prompt,
        "candidates": [
            {"index": c.index, "model": c.model, "sample": c.sample, "answer": c.outputs.get("response"),
             "error": c.error, "parse": c.parse}
            for c in cset.candidates
        ],  # fmt: skip
        "best_of_n": {
            "index": selection["index"],
            "answer": selection["outputs"].get("response"),
            "scores": {int(k): v for k, v in selection["scores"].items()},
            "fallback": selection["fallback"],
        },
        "fusion": {
            "answer": fused["outputs"].get("response"),
            "comparison": fused["comparison"],
            "order": fused["order"],
            "fallback": fused["fallback"],
        },
        "usage": {
            "sampling": cset.usage.to_dict(),
            "best_of_n": bon["usage"]["aggregation"],
            "fusion": fusion["usage"]["aggregation"],
            "seconds_total": round(time.perf_counter() - started, 2),
        },
    }


def demo(
    prompt: str = typer.Argument(DEFAULT_PROMPT, help="The prompt to answer (default: a built-in one)."),
    n: int = typer.Option(4, "--n", min=1, help="Candidates to sample."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a report."),
    max_tokens: int = typer.Option(200, "--max-tokens", min=16, help="Completion budget per call."),
    seed: int = typer.Option(0, "--seed", help="Seed of the candidates' shown order."),
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
        report = run_demo(run_pool, prompt, n=n, max_tokens=max_tokens, seed=seed)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    console = Console()
    console.print(Panel(report["prompt"], title="prompt"))
    scores = report["best_of_n"]["scores"]
    for c in report["candidates"]:
        body = c["answer"] if c["error"] is None else f"[failed] {c['error']}"
        title = f"candidate {c['index']} ({c['model']}#{c['sample']}) score {scores.get(c['index'])}"
        console.print(Panel(str(body), title=title))
    bon = report["best_of_n"]
    console.print(Panel(str(bon["answer"]), title=f"Best-of-N pick: candidate {bon['index']}" + (f" (fallback: {bon['fallback']})" if bon["fallback"] else "")))
    fusion = report["fusion"]
    console.print(Panel(fusion["comparison"] or "(none)", title=f"fusor's comparison (shown order {fusion['order']})"))
    console.print(Panel(str(fusion["answer"]), title="Fusion-of-N answer" + (f" (fallback: {fusion['fallback']})" if fusion["fallback"] else "")))
    table = Table(title="usage per stage")
    for col in ("stage", "prompt tokens", "completion tokens", "calls", "seconds"):
        table.add_column(col)
    for stage in ("sampling", "best_of_n", "fusion"):
        u = report["usage"][stage]
        table.add_row(stage, str(u["prompt_tokens"]), str(u["completion_tokens"]), str(u["calls"]), f"{u['seconds']:.1f}")
    console.print(table)
    console.print(f"total {report['usage']['seconds_total']:.1f} s")
