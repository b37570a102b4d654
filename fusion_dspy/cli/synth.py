"""``fusion-dspy synth``: one fused (or selected) training answer per prompt, resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from fusion_dspy.aggregate import BON, FUSION
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
    RAY_ENGINES_OPTION,
    RAY_WORKERS_OPTION,
    ray_engines_file,
    ray_engines_for,
    ray_options_for,
)


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)


def synth(
    prompts: Path = typer.Option(..., "--prompts", help="JSONL (prompt: text or chat messages), parquet, or a datasets folder."),
    out: Path = typer.Option(..., "--out", help="Folder for synth.jsonl (appended to; reruns skip finished prompts)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first K prompts."),
    methods: str = typer.Option(FUSION, "--methods", help=f"{FUSION}, {BON}, or {FUSION},{BON} (Best-of-N on the same candidates)."),
    n: int | None = typer.Option(None, "--n", min=1, help="Samples per teacher (default: the pool's; 5 without --pool, the paper's N)."),
    temperature: float | None = typer.Option(None, "--temperature", help="Teacher temperature (default: the pool's, 0.3, the paper's for teachers)."),
    max_tokens: int = typer.Option(512, "--max-tokens", min=16, help="Completion tokens per teacher sample (the fusor gets 2x)."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Prompts in flight at once (--engine ray: per worker)."),
    min_length: int | None = typer.Option(None, "--min-length", min=1, help="Drop candidates shorter than L characters."),
    language: str | None = typer.Option(
        None, "--language", help="Keep candidates in these languages (ISO 639-1, e.g. de or de,fr) or 'auto' (the prompt's)."
    ),
    prompt_field: str = typer.Option("prompt", "--prompt-field", help="The column holding the prompt."),
    parquet: bool = typer.Option(False, "--parquet", help="Also export synth.parquet at the end."),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Skip (and count) malformed prompt rows instead of stopping."),
    pool: Path | None = POOL_OPTION,
    model: str | None = MODEL_OPTION,
    api_base: str | None = API_BASE_OPTION,
    api_key: str | None = API_KEY_OPTION,
    model_path: Path | None = MODEL_PATH_OPTION,
    engine: str = ENGINE_OPTION,
    ray_address: str | None = RAY_ADDRESS_OPTION,
    ray_workers: int = RAY_WORKERS_OPTION,
    ray_engines: Path | None = RAY_ENGINES_OPTION,
    ray_engine_models: str | None = RAY_ENGINE_MODELS_OPTION,
) -> None:
    """Sample the teachers for each prompt, fuse their answers, append one SFT row to OUT/synth.jsonl."""
    from fusion_dspy.synth import DEFAULT_SAMPLES, Filters, check_filters, check_synth_methods, read_prompts, synthesize

    ray_options = ray_options_for(engine, ray_address, ray_workers, concurrency)  # no Ray, a bad address: fail before anything runs
    engine_file, engine_models = ray_engines_file(ray_engines, ray_engine_models, ray_options)
    method_list = check_synth_methods(methods.split(","))
    filters = Filters.parse(language, min_length)
    check_filters(filters)  # a bad language code fails before any server starts
    # Read the prompts once before any server starts or any model call: a bad row fails now, naming file and line.
    for count, _ in enumerate(read_prompts(prompts, field_name=prompt_field, skip_bad_rows=skip_bad_rows), 1):
        if limit is not None and count >= limit:
            break
    samples = n if (n is not None or pool is not None) else DEFAULT_SAMPLES

    def engines_of(p: Any) -> dict[str, Any]:
        fusor = p.fusor_name if FUSION in method_list else None  # the fusor runs as an engine only when fusion runs
        return ray_engines_for(engine_file, engine_models, p.teachers, fusor) or {}

    def engine_only(p: Any) -> set[str]:  # no server to check; the scorer and reward model stay HTTP
        return set(engines_of(p)) - {p.rater_name, p.reward_model}

    with open_pool(pool, model, api_base, api_key, model_path, temperature=0.3, samples_per_teacher=samples,
                   engine_only=engine_only if engine_file is not None else None) as run_pool:
        engines = engines_of(run_pool) or None  # before Ray starts
        stats = synthesize(
            prompts, out, pool=run_pool, limit=limit, methods=method_list, samples_per_teacher=n if pool is not None else samples,
            temperature=temperature, max_tokens=max_tokens, concurrency=concurrency, filters=filters,
            prompt_field=prompt_field, skip_bad_rows=skip_bad_rows, export_parquet=parquet,
            progress=_Progress() if ray_options is None else None,  # Ray Data shows its own progress
            engine="inprocess" if ray_options is None else "ray", ray=ray_options, ray_engines=engines,
        )
    summary = stats.to_dict()
    keys = ("done", "skipped", "failed", "duplicates", "bad_rows", "interrupted", "seconds", "completion_tokens_per_second", "records", "parquet")
    typer.echo(json.dumps({k: summary[k] for k in keys}))
    if stats.failed:
        reasons = f"{Path(stats.records_path).with_suffix('')}.failed.jsonl"
        typer.echo(f"{stats.failed} prompt(s) failed (reasons in {reasons}); rerun the same command to retry them", err=True)
    if stats.failed or stats.interrupted:
        raise typer.Exit(1)


class _Progress:
    """A one-line counter on stderr (rows finished, skipped or failed)."""

    def __init__(self) -> None:
        self.count = 0

    def update(self, k: int) -> None:
        self.count += k
        typer.echo(f"\rprompts: {self.count}", err=True, nl=False)
