"""``fusion-dspy optimize``: tune the fusor instruction (DSPy) or search n, temperature and pool (Optuna).

The implementations live in the repository's ``optimizers/`` folder, installed as
``fusion_dspy.optimizers``; they load on first use (Optuna and DSPy's optimizers are heavy), by name.
Every input is checked (task, data, search space, storage, an existing study) before the embedded
model starts or any model is called.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

import typer

from fusion_dspy.aggregate import AGGREGATORS
from fusion_dspy.cli._models import (
    API_BASE_OPTION,
    API_KEY_OPTION,
    MODEL_OPTION,
    MODEL_PATH_OPTION,
    POOL_OPTION,
    open_pool,
)
from fusion_dspy.errors import ConfigurationError
from fusion_dspy.records import lock_folder
from fusion_dspy.sampling import DEFAULT_N, SINGLE_TEMPERATURE

INSTRUCTION_MODULE = "fusion_dspy.optimizers.instruction"
SEARCH_MODULE = "fusion_dspy.optimizers.search"
CACHE_MODULE = "fusion_dspy.optimizers.cache"
_DEPLOYABLE = ",".join(name for name, cls in AGGREGATORS.items() if cls.deployable)  # the methods a search may pick

optimize_app = typer.Typer(help="Tune Fusion-of-N for a task: the fusor instruction, or n / temperature / pool / method.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(optimize_app, name="optimize")


def _load(module: str) -> Any:
    return importlib.import_module(module)


def _examples(task_spec: str, data: Path, limit: int | None) -> tuple[Any, list[Any]]:
    from fusion_dspy.task import load_task

    task = load_task(task_spec)
    if not data.exists():
        raise ConfigurationError(f"data {data} does not exist")
    examples = task.load(str(data), limit=limit)
    if not examples:
        raise ConfigurationError(f"no examples in {data}")
    return task, list(examples)


def _model_names(pool: Path | None, model: str | None) -> tuple[list[str], list[str]]:
    """The model names a run will have (without starting anything): pool names, or the one model."""
    if pool is not None:
        from fusion_dspy.lm.endpoints import load_pool

        p = load_pool(pool)
        return [n for n in p.endpoints if n != p.reward_model], list(p.teachers)
    if model is not None:
        name = model.split("/", 1)[-1]
        return [name], [name]
    from fusion_dspy.serving.embedded import SERVED_NAME

    return [SERVED_NAME], [SERVED_NAME]


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[_fmt(v) for v in r])
    Console(width=160).print(table)


@optimize_app.command("instruction")
def instruction(
    task: str = typer.Option(..., "--task", help="Task name (mgsm, wmt, ...) or module:attribute."),
    data: Path = typer.Option(..., "--data", help="Data file or folder the task's loader reads."),
    train: int = typer.Option(8, "--train", help="Examples to tune on (the first ones of the data)."),
    val: int = typer.Option(8, "--val", help="Held-out examples (the next ones) for the before/after table."),
    optimizer: str = typer.Option("gepa", "--optimizer", help="gepa, miprov2 or copro."),
    budget: str = typer.Option("light", "--budget", help="light/medium/heavy, or an integer (GEPA metric calls, MIPROv2 candidates, COPRO breadth)."),
    n: int = typer.Option(DEFAULT_N, "--n", help="Candidates per teacher to fuse (default 5, the paper's N)."),
    temperature: float = typer.Option(SINGLE_TEMPERATURE, "--temperature", help="Teachers' sampling temperature (default 0.7, the paper's)."),
    proposer: str | None = typer.Option(None, "--proposer", help="Model that proposes instructions (default: the fusor)."),
    max_tokens: int = typer.Option(256, "--max-tokens", help="max_tokens of teachers and fusor."),
    proposer_max_tokens: int = typer.Option(768, "--proposer-max-tokens", help="max_tokens of the proposer."),
    num_threads: int = typer.Option(2, "--num-threads", help="Concurrent requests."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default runs/optimize/instruction-TASK-OPTIMIZER)."),
    cache: Path | None = typer.Option(None, "--cache", help="Candidate cache JSONL (default OUT/candidates.jsonl); share it between runs."),
    seed: int = typer.Option(0, "--seed"),
    pool: Path | None = POOL_OPTION,
    model: str | None = MODEL_OPTION,
    api_base: str | None = API_BASE_OPTION,
    api_key: str | None = API_KEY_OPTION,
    model_path: Path | None = MODEL_PATH_OPTION,
) -> None:
    """Tune only the fusor's instruction on a train split; print before/after on a held-out split."""
    mod = _load(INSTRUCTION_MODULE)
    budget_value = mod.check_budget(optimizer, budget)
    for name, value in (("--n", n), ("--max-tokens", max_tokens), ("--num-threads", num_threads)):
        if value < 1:
            raise ConfigurationError(f"{name} must be >= 1, got {value}")
    the_task, examples = _examples(task, data, None)
    trainset, valset = mod.split_examples(examples, train, val)
    names, _ = _model_names(pool, model)
    if proposer is not None and proposer not in names:
        raise ConfigurationError(f"--proposer {proposer!r} is not a model of this run; known: {', '.join(names)}")
    out = out or Path("runs") / "optimize" / f"instruction-{the_task.name}-{optimizer}"
    cache_mod = _load(CACHE_MODULE)
    with lock_folder(out), open_pool(pool, model, api_base, api_key, model_path) as the_pool:  # one run per --out
        eps = the_pool.endpoints
        teachers = {t: eps[t].lm(max_tokens=max_tokens, temperature=temperature, cache=False) for t in the_pool.teachers}
        fusor_lm = eps[the_pool.fusor_name].lm(max_tokens=max_tokens, cache=False)
        proposer_lm = eps[proposer or the_pool.fusor_name].lm(max_tokens=proposer_max_tokens, temperature=1.0, cache=False)
        result = mod.tune_instruction(
            the_task, trainset, valset, teachers=teachers, fusor_lm=fusor_lm, proposer_lm=proposer_lm,
            cache=cache_mod.CandidateCache(cache or out / "candidates.jsonl", task_name=the_task.name),
            optimizer=optimizer, budget=budget_value, n=n, temperature=temperature, num_threads=num_threads,
            seed=seed, out_dir=out,
        )
    b, a = result.before.to_dict(), result.after.to_dict()
    _table(
        f"{the_task.name}: fusor instruction tuned with {optimizer} (budget {budget_value}) on {len(trainset)}, held out {len(valset)}",
        ["instruction", "metric", "fusor tokens/ex", "total tokens/ex", "fallbacks"],
        [
            ["before (default)", b["metric"], b["fusor_tokens_per_example"], b["total_tokens_per_example"], b["fallbacks"]],
            ["after (tuned)", a["metric"], a["fusor_tokens_per_example"], a["total_tokens_per_example"], a["fallbacks"]],
        ],
    )
    typer.echo(f"optimizer spent {result.optimizer_usage.total_tokens} tokens in {result.seconds:.1f}s; instruction changed: {result.changed}")
    typer.echo(f"tuned instruction:\n{result.instruction_after}\n")
    typer.echo(f"saved: {result.saved}  (FusionOfN(program).load(path) restores it)")


@optimize_app.command("search")
def search(
    task: str = typer.Option(..., "--task", help="Task name (mgsm, wmt, ...) or module:attribute."),
    data: Path = typer.Option(..., "--data", help="Data file or folder the task's loader reads."),
    limit: int | None = typer.Option(None, "--limit", help="At most this many examples (per language)."),
    trials: int = typer.Option(..., "--trials", help="Trials to add to the study in this run."),
    storage: str | None = typer.Option(None, "--storage", help="Optuna storage URL (default sqlite:///OUT/study.db)."),
    study: str | None = typer.Option(None, "--study", help="Study name (default fusion-TASK); reused if it exists."),
    objective: str = typer.Option("pareto", "--objective", help="pareto (metric vs tokens) or budget (metric under --budget)."),
    budget: float | None = typer.Option(None, "--budget", help="Token budget: mean tokens per example (with --objective budget)."),
    n_choices: str | None = typer.Option(None, "--n-choices", help="Choices of n, samples per teacher (default 1,2,4)."),
    temperatures: str | None = typer.Option(None, "--temperatures", help="Temperature choices (default 0.3,0.7)."),
    teachers: str | None = typer.Option(None, "--teachers", help="Teachers whose subsets are searched (default: the pool's)."),
    methods: str | None = typer.Option(None, "--methods", help=f"Methods (default {_DEPLOYABLE} where the task allows)."),
    fusors: str | None = typer.Option(None, "--fusors", help="Models that may fuse (default: every model)."),
    raters: str | None = typer.Option(None, "--raters", help="Models that may rate for bon (default: the first model)."),
    param: list[str] = typer.Option([], "--param", help="Any parameter as NAME=V1,V2 (n, temperature, teachers, method, fusor, rater; "
                                    "adaptive N: adaptive_start=off,2,4, adaptive_step, adaptive_threshold (closed-form tasks), "
                                    "adaptive_similarity (free-form), adaptive_budget=none,2000)."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe, random or grid."),
    max_tokens: int = typer.Option(128, "--max-tokens", help="max_tokens of every model (keep small on CPU)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Examples per pruning step (budget objective; default a quarter)."),
    num_threads: int = typer.Option(2, "--num-threads", help="Examples evaluated concurrently."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default runs/optimize/search-STUDY)."),
    cache: Path | None = typer.Option(None, "--cache", help="Candidate cache JSONL (default OUT/candidates.jsonl)."),
    seed: int = typer.Option(0, "--seed"),
    pool: Path | None = POOL_OPTION,
    model: str | None = MODEL_OPTION,
    api_base: str | None = API_BASE_OPTION,
    api_key: str | None = API_KEY_OPTION,
    model_path: Path | None = MODEL_PATH_OPTION,
) -> None:
    """Search n, temperature, teachers, fusor and method with Optuna; write the chosen pool YAML."""
    mod = _load(SEARCH_MODULE)
    for name, value in (("--max-tokens", max_tokens), ("--num-threads", num_threads)):
        if value < 1:
            raise ConfigurationError(f"{name} must be >= 1, got {value}")
    if batch_size is not None and batch_size < 1:
        raise ConfigurationError(f"--batch-size must be >= 1, got {batch_size}")
    goal = mod.Objective(objective, budget)  # type: ignore[arg-type]
    the_task, examples = _examples(task, data, limit)
    values: dict[str, Any] = {}
    for item in param:
        if "=" not in item:
            raise ConfigurationError(f"--param must be NAME=V1,V2, got {item!r}")
        key, _, choices = item.partition("=")
        values[key.strip()] = choices
    settings = (("n", n_choices), ("temperature", temperatures), ("teachers", teachers), ("method", methods), ("fusor", fusors), ("rater", raters))
    for key, value in settings:
        if value is not None:
            values[key] = value
    names, pool_teachers = _model_names(pool, model)
    space = mod.SearchSpace.build(values, names=names, teachers=pool_teachers, task=the_task)
    study_name = study or f"fusion-{the_task.name}"
    out = out or Path("runs") / "optimize" / f"search-{study_name}"
    if storage is None:
        out.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(out / 'study.db').resolve()}"
    rdb = mod.check_storage(storage)
    mod.check_study(rdb, study_name, goal, space, mod.study_attrs(the_task, goal, examples))
    if goal.kind == "budget" and batch_size is None:
        batch_size = max(1, math.ceil(len(examples) / 4))

    with lock_folder(out), open_pool(pool, model, api_base, api_key, model_path) as the_pool:  # one run per --out
        models = mod.Models.from_pool(the_pool, max_tokens=max_tokens)
        result = mod.run_search(
            the_task, examples, models, space, trials=trials, storage=storage, study_name=study_name, objective=goal,
            out_dir=out, sampler=sampler, num_threads=num_threads, batch_size=batch_size, seed=seed, cache_path=cache,
        )
    rows = result.rows()
    shown = sorted(rows, key=lambda r: (not r["chosen"], not r["best"], -(r["metric"] if r["metric"] is not None else -1), r["trial"]))[:15]
    _table(
        f"study {study_name!r}: {len(rows)} trials ({trials} this run), objective {goal.kind}"
        + (f" (budget {budget:g} tokens/ex)" if budget else ""),
        ["trial", "state", "n", "temp", "teachers", "method", "aggregator", "adaptive", "metric", "tokens/ex", "best"],
        [
            [r["trial"], r["state"], r["params"].get("n"), r["params"].get("temperature"), r["params"].get("teachers"), r["params"].get("method"),
             r["params"].get("fusor") or r["params"].get("rater") or "", _adaptive_cell(r["params"]), r["metric"], r["tokens_per_example"],
             "chosen" if r["chosen"] else ("yes" if r["best"] else "")]
            for r in shown
        ],
    )
    typer.echo(f"new samples drawn this run: {result.drawn.total_tokens} tokens")
    if result.plot:
        typer.echo(f"plot: {result.plot}")
    if result.pool_file:
        typer.echo(f"chosen configuration: {result.pool_file}  (use it with --pool)")
    elif result.chosen is None:
        typer.echo("no trial completed" + (" within the budget" if goal.kind == "budget" else "") + "; no configuration chosen")
    typer.echo(f"study: {storage} ({study_name})")


def _adaptive_cell(params: dict[str, Any]) -> str:
    """A trial's adaptive settings in a table cell (empty: not searched; off: a fixed n)."""
    if "adaptive_start" not in params:
        return ""
    if params["adaptive_start"] == "off":
        return "off"
    return ",".join(f"{k[len('adaptive_'):]}={v}" for k, v in params.items() if k.startswith("adaptive_"))
