"""``fusion-dspy reproduce EXPERIMENT``: one experiment of the paper, its figure and its table.

``reproduce --list`` names every experiment with the figure or table it mirrors; ``reproduce all``
runs them one after the other. The runs land in ``OUT/runs/`` (shared between experiments and
resumed by a rerun); each experiment writes ``OUT/<experiment>/`` (PNG, ``table.md``, ``table.csv``,
``settings.json``). The GPU recipe is docs/reproduce.md.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import typer

from fusion_dspy.cli._models import API_BASE_OPTION, API_KEY_OPTION, MODEL_OPTION, MODEL_PATH_OPTION, POOL_OPTION, open_pool
from fusion_dspy.eval import DEFAULT_MAX_TOKENS, DEFAULT_N
from fusion_dspy.reproduce import DATA_ENV, EXPERIMENTS, Settings, run_experiment
from fusion_dspy.sampling import POOL_TEMPERATURE

ALL = "all"


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce)


def reproduce(
    experiment: str | None = typer.Argument(None, help=f"An experiment (see --list), or {ALL!r}."),
    list_: bool = typer.Option(False, "--list", help="Name every experiment with the figure or table of the paper it mirrors."),
    out: Path | None = typer.Option(None, "--out", help="Folder for the figures, tables and runs (OUT/<experiment>/, OUT/runs/)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most K examples per language (K prompts for synthetic data); default all."),
    data_root: Path | None = typer.Option(None, "--data-root", help=f"The datasets' folder (default ${DATA_ENV}, else ./data; docs/reproduce.md)."),
    data: Path | None = typer.Option(None, "--data", help="A data file or folder instead of the experiment's default."),
    task: str | None = typer.Option(None, "--task", help="scaling, fusor-size: the task (default wmt; mgsm, arena, geofactx)."),
    n: str | None = typer.Option(
        None, "--n", help=f"Candidates per example (default {DEFAULT_N}, the paper's); scaling: a list (default 1,2,4,8,16)."
    ),
    max_tokens: int = typer.Option(DEFAULT_MAX_TOKENS, "--max-tokens", min=16, help="Token limit of every generation."),
    concurrency: int = typer.Option(2, "--concurrency", min=1, help="Examples (prompts) in flight at once."),
    seed: int = typer.Option(0, "--seed", help="Seeds shuffling, sampling rollouts and the bootstrap."),
    judge: str | None = typer.Option(
        None, "--judge", help="The judge: a pool member or a LiteLLM model string (default: the pool's judge, else its rater)."
    ),
    judge_api_base: str | None = typer.Option(None, "--judge-api-base", help="Base URL of the --judge model's server."),
    references: Path | None = typer.Option(
        None, "--references", help="arena-languages: reference answers, a file or folder in Arena-Hard's model_answer layout."
    ),
    prompt_references: Path | None = typer.Option(
        None, "--prompt-references", help="synth-quality: JSONL of the prompts with an 'answer' (default: their own 'chosen' answers)."
    ),
    reference_model: str | None = typer.Option(None, "--reference-model", help="The reference model, when --references holds several."),
    metric: str | None = typer.Option(None, "--metric", help="WMT's metric: chrf (default), bleu or comet."),
    oracle_metric: str | None = typer.Option(None, "--oracle-metric", help="WMT: the metric the oracle selects by (default: --metric)."),
    comet_model: str | None = typer.Option(None, "--comet-model", help="WMT: a local COMET/XCOMET checkpoint for the comet metric."),
    comet_device: str | None = typer.Option(None, "--comet-device", help="WMT: auto (a GPU when present), cpu or gpu."),
    fusors: str | None = typer.Option(None, "--fusors", help="fusor-size: pool members to compare, smallest first (default: all but the judge)."),
    progress: bool = typer.Option(False, "--progress", help="Progress bars of the runs."),
    pool: Path | None = POOL_OPTION,
    model: str | None = MODEL_OPTION,
    api_base: str | None = API_BASE_OPTION,
    api_key: str | None = API_KEY_OPTION,
    model_path: Path | None = MODEL_PATH_OPTION,
) -> None:
    """Run one experiment of the paper (or all) and write its figure (PNG) and table (Markdown, CSV)."""
    if list_:
        for e in EXPERIMENTS.values():
            typer.echo(f"{e.name:<16} {e.mirrors:<16} {e.what}")
        return
    if experiment is None or out is None:
        raise typer.BadParameter("give an EXPERIMENT (or 'all') and --out DIR; --list names the experiments")
    names = list(EXPERIMENTS) if experiment == ALL else [experiment]
    unknown = [name for name in names if name not in EXPERIMENTS]
    if unknown:
        raise typer.BadParameter(f"unknown experiment {unknown[0]!r}; experiments: {', '.join(EXPERIMENTS)}, or {ALL}")
    # one model (the embedded one, or --model) is a pool of one teacher: N samples of it per prompt for synthetic data
    with open_pool(pool, model, api_base, api_key, model_path, temperature=POOL_TEMPERATURE,
                   samples_per_teacher=1 if pool is not None else DEFAULT_N) as the_pool:
        the_pool.endpoint_for(judge, api_base=judge_api_base)  # a judge that is neither a member nor a model string fails now
        settings = Settings(
            pool=the_pool, out=out, limit=limit, data=data, task=task, n=n, max_tokens=max_tokens, concurrency=concurrency, seed=seed,
            judge=judge, judge_api_base=judge_api_base, references=references, reference_model=reference_model,
            prompt_references=prompt_references, metric=metric, oracle_metric=oracle_metric, comet_model=comet_model,
            comet_device=comet_device, progress=progress,
            fusors=tuple(f.strip() for f in fusors.split(",") if f.strip()) if fusors else (),
            **({"data_root": data_root} if data_root is not None else {}),
        )
        command = shlex.join(["fusion-dspy", *sys.argv[1:]]) if sys.argv else None
        for name in names:
            typer.echo(f"reproduce {name} ({EXPERIMENTS[name].mirrors}) -> {out / name}", err=True)
            result = run_experiment(name, settings, command=command)
            typer.echo(json.dumps(result, ensure_ascii=False))
