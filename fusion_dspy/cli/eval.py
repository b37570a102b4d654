"""``fusion-dspy eval``: does fusion beat selection on this task, and at what cost per token?

Samples each example's candidate pool once and applies every method to it (and to its first k
candidates for each k of ``--n 1,2,4,8``). Records go to ``--out``/records.jsonl as examples
finish; running the same command again completes an interrupted run. Everything the user typed is
checked, and the data read, before a model is started.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from fusion_dspy.aggregate import ALL_METHODS, GREEDY
from fusion_dspy.cli._models import (
    API_BASE_OPTION,
    API_KEY_OPTION,
    MODEL_OPTION,
    MODEL_PATH_OPTION,
    POOL_OPTION,
    open_pool,
)
from fusion_dspy.cli._ray import (
    ENGINE_OPTION,
    RAY_ADDRESS_OPTION,
    RAY_ENGINE_MODELS_OPTION,
    RAY_WORKERS_OPTION,
    ray_engines_file,
    ray_engines_for,
    ray_options_for,
)
from fusion_dspy.eval import DEFAULT_CONCURRENCY, DEFAULT_MAX_TOKENS, DEFAULT_N


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def eval_command(
    task: str = typer.Option(..., "--task", help="Task name (mgsm, wmt, arena, geofactx) or module:attribute."),
    data: Path = typer.Option(..., "--data", help="Data file or folder in the task's format."),
    limit: int | None = typer.Option(None, "--limit", help="At most K examples (per language)."),
    n: str | None = typer.Option(
        None, "--n", help=f"Candidates per example, or a list such as 1,2,4,8 for a scaling curve (default {DEFAULT_N}, the paper's, "
        "sampled at temperature 0.7; with several teachers, the whole pool at the pool's temperature, 0.3 by default)."
    ),
    methods: str | None = typer.Option(
        None, "--methods", help=f"Comma-separated: {','.join(ALL_METHODS)} (default: all the task supports)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Folder for records, summary and plot (default runs/eval/<task>)."),
    max_tokens: int = typer.Option(DEFAULT_MAX_TOKENS, "--max-tokens", help="Token limit of every generation."),
    concurrency: int = typer.Option(DEFAULT_CONCURRENCY, "--concurrency", help="Examples in flight at once (--engine ray: per worker)."),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Skip and count malformed data rows."),
    seed: int = typer.Option(0, "--seed", help="Seeds candidate shuffling, sampling rollouts and the bootstrap."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    references: Path | None = typer.Option(
        None, "--references", help="arena: reference answers, a JSONL file or a folder in Arena-Hard's model_answer layout "
        "(matched by question id and language); each method's score is then its judged win rate against them."
    ),
    reference_model: str | None = typer.Option(None, "--reference-model", help="arena: the reference model, when --references holds several."),
    judge: str | None = typer.Option(
        None, "--judge", help="The judge of judged metrics (arena win rates, --judge-reasoning): a pool member or a LiteLLM "
        "model string such as openai/gpt-4o (default: the pool's judge, else its rater)."
    ),
    judge_api_base: str | None = typer.Option(None, "--judge-api-base", help="Base URL of the --judge model's server (a model string only)."),
    judge_reasoning: bool | None = typer.Option(
        None, "--judge-reasoning/--no-judge-reasoning", help="geofactx: also grade each answer's reasoning with the judge (1-5, reported 0..1)."
    ),
    oracle_metric: str | None = typer.Option(
        None, "--oracle-metric", help="wmt: the metric the oracle selects by (chrf, bleu, comet; default: the task metric)."
    ),
    wmt_metric: str | None = typer.Option(None, "--metric", help="wmt: the per-example metric (chrf, bleu, comet; default chrf)."),
    comet_model: str | None = typer.Option(None, "--comet-model", help="wmt: a local COMET/XCOMET checkpoint (.ckpt) for the comet metric."),
    comet_device: str | None = typer.Option(None, "--comet-device", help="wmt: where COMET runs: auto (a GPU when present), cpu or gpu."),
    adaptive: str | None = typer.Option(
        None, "--adaptive", help="Also replay each method as adaptive N on the same pools, up to each N: 'on', or settings "
        "such as start=2,step=2,threshold=0.95,similarity=90 (rounds stop when the candidates agree; then no aggregation call). "
        "The summary and scaling_tokens.png get an adaptive curve per method. No extra model calls."
    ),
    pool: Path | None = POOL_OPTION,
    model: str | None = MODEL_OPTION,
    api_base: str | None = API_BASE_OPTION,
    api_key: str | None = API_KEY_OPTION,
    model_path: Path | None = MODEL_PATH_OPTION,
    engine: str = ENGINE_OPTION,
    ray_address: str | None = RAY_ADDRESS_OPTION,
    ray_workers: int = RAY_WORKERS_OPTION,
    ray_engines: Path | None = typer.Option(
        None, "--ray-engines", help="With --engine ray on a GPU cluster: a serve configuration (e.g. examples/ray_gpu_cluster.yaml); "
        "every pool teacher that is an `engine: vllm` model of it is sampled by a vLLM engine inside the pipeline (greedy, the "
        "fusor, the scorer and the judge stay HTTP; docs/scale-out.md)."
    ),
    ray_engine_models: str | None = RAY_ENGINE_MODELS_OPTION,
) -> None:
    """Evaluate greedy, Best-of-N, Fusion-of-N, oracle and majority vote on one shared candidate pool."""
    import warnings

    from fusion_dspy.eval import default_out_dir, prepare, roles_from_pool, run
    from fusion_dspy.lm.endpoints import load_pool

    # greedy is one temperature-0 call; DSPy warns that its rollout id is moot, which is expected here
    warnings.filterwarnings("ignore", message="rollout_id has no effect when temperature=0")

    from fusion_dspy.task import load_task

    ray_options = ray_options_for(engine, ray_address, ray_workers, concurrency)  # no Ray, a bad address: fail before anything runs
    engine_file, engine_models = ray_engines_file(ray_engines, ray_engine_models, ray_options)
    the_task = load_task(task).configure(
        references=references, reference_model=reference_model, judge_reasoning=judge_reasoning,
        oracle_metric=oracle_metric, metric=wmt_metric, comet_model=comet_model, comet_device=comet_device,
    )
    plan = prepare(the_task, data, limit=limit, n=n if n is not None else DEFAULT_N, methods=methods, max_tokens=max_tokens,
                   concurrency=concurrency, skip_bad_rows=skip_bad_rows, seed=seed, n_given=n is not None, adaptive=adaptive)
    if pool is not None:
        load_pool(pool).endpoint_for(judge, api_base=judge_api_base)  # a bad pool file or judge fails here, before any server starts
    out_dir = out or default_out_dir(plan.task.name)
    if plan.bad_rows.count:
        typer.echo(f"skipped {plan.bad_rows.count} bad rows (first: {plan.bad_rows.examples[0]})", err=True)
    typer.echo(f"{len(plan.examples)} examples of {plan.task.name}; N={','.join(map(str, plan.ns))}; "
               f"methods {','.join(plan.methods)}; results in {out_dir}", err=True)

    def engine_only(p: Any) -> set[str]:  # no server to check; greedy (the first teacher), fusor, scorer and judge stay HTTP
        engines = ray_engines_for(engine_file, engine_models, p.teachers) or {}
        greedy = {p.teachers[0]} if GREEDY in plan.methods else set()
        return set(engines) - greedy - {p.fusor_name, p.rater_name, p.judge_name, p.reward_model}

    with open_pool(pool, model, api_base, api_key, model_path, engine_only=engine_only if engine_file is not None else None) as the_pool:
        roles = roles_from_pool(the_pool, max_tokens=plan.max_tokens, judge=judge, judge_api_base=judge_api_base)
        engines = ray_engines_for(engine_file, engine_models, roles.teachers)  # the teachers only; checked before Ray starts
        summary = run(plan, roles, out_dir, progress=not no_progress, ray=ray_options, ray_engines=engines)
    print_summary(summary)
    c = summary["counts"]
    typer.echo(f"done {c['done']}, failed {c['failed']}, bad rows skipped {c['bad_rows_skipped']}; "
               f"records and summary in {out_dir}")
    if summary.get("run", {}).get("interrupted"):
        typer.echo("interrupted: run the same command again to complete the remaining examples", err=True)
        raise typer.Exit(130)
    if c["failed"]:
        typer.echo(f"{c['failed']} examples failed (see {out_dir}/records.failed.jsonl); rerun to retry them", err=True)


def print_summary(summary: dict) -> None:
    """The per-method table over all languages (per-language rows are in summary.md)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary.get('task')}: metric (95% CI), all languages")
    for col in ("method", "N", "metric", "95% CI", "count", "tokens/ex", "len/cand", "framing", "fallbacks", "failed"):
        table.add_column(col, justify="left" if col == "method" else "right")
    corpus_names = sorted({k for r in summary["rows"] for k in (r.get("corpus") or {}) if k != "error"})
    for r in summary["rows"]:
        if r["language"] != "all":
            continue
        table.add_row(r["method"], str(r["n"]), _f(r["mean"]), f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]", str(r["count"]),
                      f"{r['tokens_total']:.0f}", _f(r.get("length_ratio"), 2), str(r.get("framed", 0)), str(r["fallbacks"]),
                      str(r["failed"]))
    Console().print(table)
    adaptive = [r for r in summary.get("adaptive") or [] if r["language"] == "all"]
    if adaptive:
        at = Table(title="adaptive N (replayed on the same pools), all languages")
        for col in ("method", "max N", "metric", "fixed-N metric", "samples/ex", "skipped", "tokens/ex", "saved/ex"):
            at.add_column(col, justify="left" if col == "method" else "right")
        for r in adaptive:
            saved = r.get("tokens_saved")
            at.add_row(r["method"], str(r["n"]), _f(r["mean"]), _f(r.get("fixed_mean")), _f(r.get("samples"), 2),
                       f"{r.get('aggregation_skipped', 0)}/{r['count']}", f"{r['tokens_total']:.0f}", "-" if saved is None else f"{saved:.0f}")
        Console().print(at)
    if corpus_names:
        ct = Table(title="corpus metrics per language")
        for col in ("method", "N", "language", *corpus_names):
            ct.add_column(col)
        for r in summary["rows"]:
            if r.get("corpus") and r["language"] != "all":
                ct.add_row(r["method"], str(r["n"]), r["language"], *[_f(r["corpus"].get(k), 2) for k in corpus_names])
        Console().print(ct)


def _f(value, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
