"""The Optuna study: its storage, the checks before any model call, the trials, the chosen configuration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fusion_dspy.errors import ConfigurationError, EndpointError, first_line, is_endpoint_failure
from fusion_dspy.records import record_id
from fusion_dspy.task import Task
from fusion_dspy.types import Usage, json_text

from ..cache import CandidateCache
from .models import Models, ResultCache
from .report import plot_trials, write_pool
from .scoring import ConfigScore, SearchContext, evaluate_config
from .space import Objective, SearchSpace, TrialConfig


def check_storage(storage: str) -> Any:
    """Open an Optuna RDB storage URL (``sqlite:///file.db``, ``postgresql://...``), or say why not."""
    import optuna

    if not isinstance(storage, str) or "://" not in storage:
        raise ConfigurationError(f"storage must be an Optuna storage URL such as sqlite:///study.db, got {storage!r}")
    try:
        return optuna.storages.RDBStorage(storage)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds; all mean "cannot open"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(f"cannot open the study storage {storage!r}: {first}") from None


def study_attrs(task: Task, objective: Objective, examples: Sequence[Any]) -> dict[str, Any]:
    ids = [str(e.get("id")) for e in examples]
    return {"task": task.name, **objective.describe(), "examples": record_id(ids), "example_count": len(ids)}


def check_study(storage: Any, study_name: str, objective: Objective, space: SearchSpace, attrs: Mapping[str, Any]) -> bool:
    """Compare an existing study with this run (directions, objective, task, examples, space).

    Returns whether the study exists. Raises ConfigurationError on any mismatch, before a model call.
    """
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return False
    directions = [d.name.lower() for d in storage.get_study_directions(study_id)]
    if directions != objective.directions:
        raise ConfigurationError(
            f"study {study_name!r} exists with directions {directions}; this run's objective {objective.kind!r} needs "
            f"{objective.directions}: use another --study or the study's own objective"
        )
    stored = storage.get_study_user_attrs(study_id)
    for key in ("task", "objective", "budget", "examples"):
        if key in stored and stored[key] != attrs.get(key):
            raise ConfigurationError(
                f"study {study_name!r} was run with {key}={stored[key]!r}, this run has {key}={attrs.get(key)!r}; "
                "trials would not be comparable: use another --study"
            )
    ours = space.distributions()
    for trial in storage.get_all_trials(study_id, deepcopy=False):
        for name, dist in trial.distributions.items():
            if name in ours and dist != ours[name]:
                theirs = getattr(dist, "choices", dist)
                raise ConfigurationError(
                    f"study {study_name!r} searched {name!r} over {list(theirs)}; this run asks for "
                    f"{list(ours[name].choices)}: use the same choices or another --study"
                )
    return True


@dataclass
class SearchResult:
    """The study after this run, its best trials and the chosen configuration."""

    study: Any
    objective: Objective
    space: SearchSpace
    best: list[Any]
    chosen: Any | None
    trials_run: int
    drawn: Usage
    plot: Path | None = None
    pool_file: Path | None = None

    def rows(self) -> list[dict[str, Any]]:
        """Every trial of the study as a table row (number, state, params, metric, tokens)."""
        best_numbers = {t.number for t in self.best}
        out = []
        for t in self.study.get_trials(deepcopy=False):
            out.append(
                {
                    "trial": t.number,
                    "state": t.state.name,
                    "params": dict(t.params),
                    "metric": t.user_attrs.get("metric"),
                    "tokens_per_example": t.user_attrs.get("tokens_per_example"),
                    "feasible": t.user_attrs.get("feasible"),
                    "best": t.number in best_numbers,
                    "chosen": self.chosen is not None and t.number == self.chosen.number,
                }
            )
        return out


def run_search(
    task: Task,
    examples: Sequence[Any],
    models: Models,
    space: SearchSpace,
    *,
    trials: int,
    storage: str,
    study_name: str,
    objective: Objective = Objective(),
    out_dir: str | Path,
    sampler: Literal["tpe", "random", "grid"] = "tpe",
    num_threads: int = 2,
    batch_size: int | None = None,
    seed: int = 0,
    cache_path: str | Path | None = None,
) -> SearchResult:
    """Run ``trials`` more trials of the study ``study_name`` in ``storage``; plot and pick a configuration.

    Every check (storage, existing study, space) happens before any model call.
    """
    import optuna

    if trials < 1:
        raise ConfigurationError(f"--trials must be >= 1, got {trials}")
    if not examples:
        raise ConfigurationError("no examples to evaluate on")
    if sampler not in ("tpe", "random", "grid"):
        raise ConfigurationError(f"sampler must be tpe, random or grid, got {sampler!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rdb = check_storage(storage)
    attrs = study_attrs(task, objective, examples)
    existed = check_study(rdb, study_name, objective, space, attrs)
    previous = len(rdb.get_all_trials(rdb.get_study_id_from_name(study_name), deepcopy=False)) if existed else 0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    constraints = (lambda t: [float(t.user_attrs.get("constraint", 0.0))]) if objective.kind == "budget" else None
    run_seed = seed + previous  # a resumed study does not replay the first run's random draws
    if sampler == "grid":
        dists = space.distributions()
        chosen_sampler: Any = optuna.samplers.GridSampler({k: list(d.choices) for k, d in dists.items()}, seed=run_seed)
    elif sampler == "random":
        chosen_sampler = optuna.samplers.RandomSampler(seed=run_seed)
    else:
        chosen_sampler = optuna.samplers.TPESampler(seed=run_seed, constraints_func=constraints, n_startup_trials=max(2, min(10, trials // 2)))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0) if objective.kind == "budget" else optuna.pruners.NopPruner()
    study = optuna.create_study(storage=rdb, study_name=study_name, directions=objective.directions,
                                load_if_exists=True, sampler=chosen_sampler, pruner=pruner)
    if not existed:
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        study.set_user_attr("space", space.to_dict())

    ctx = SearchContext(
        task, list(examples), models, CandidateCache(cache_path or out / "candidates.jsonl", task_name=task.name),
        ResultCache(out / "aggregations.jsonl"), num_threads=num_threads, batch_size=batch_size, seed=seed,
    )
    try:
        study.optimize(lambda trial: _objective(trial, ctx, space, objective), n_trials=trials)
    except EndpointError as exc:  # Optuna has marked the trial FAIL; nothing was learnt from the outage
        raise EndpointError(
            f"a server did not answer during a trial, so the trial is FAIL in study {study_name!r} (not scored): {first_line(exc)}; "
            "rerun the same command once the server answers (the study resumes)", endpoint=exc.endpoint, api_base=exc.api_base,
        ) from exc

    best, chosen = pick(study, objective)
    result = SearchResult(study, objective, space, best, chosen, trials, ctx.candidates.drawn)
    result.plot = plot_trials(study, objective, chosen, out / "pareto.png")
    if chosen is not None and models.endpoints:
        result.pool_file = write_pool(out / "chosen_pool.yaml", TrialConfig.from_params(chosen.params), models, chosen,
                                      study_name=study_name, storage=storage, task=task.name)
    (out / "trials.json").write_text(json_text(result.rows(), indent=2, default=str), encoding="utf-8")  # a NaN metric is null
    return result


def _objective(trial: Any, ctx: SearchContext, space: SearchSpace, objective: Objective) -> Any:
    import optuna

    config = TrialConfig.suggest(trial, space)
    total = len(ctx.examples)

    def on_batch(score: ConfigScore, done: int) -> None:
        if objective.kind != "budget" or done >= total:
            return
        assert objective.budget is not None
        trial.report(score.metric, step=done)
        _record(trial, score, objective)
        if sum(score.tokens) > objective.budget * total:
            trial.set_user_attr("pruned_because", "over the token budget before the last example")
            raise optuna.TrialPruned("over the token budget")
        if trial.should_prune():
            trial.set_user_attr("pruned_because", f"metric {score.metric:.3f} after {done} examples is below the median")
            raise optuna.TrialPruned()

    try:
        score = evaluate_config(ctx, config, on_batch=on_batch)
    except Exception as exc:
        if is_endpoint_failure(exc) and not isinstance(exc, EndpointError):  # LiteLLM's own (a metric calling an LM)
            raise EndpointError(first_line(exc)) from exc
        raise  # Optuna marks the trial FAIL
    _record(trial, score, objective)
    if objective.kind == "pareto":
        return score.metric, score.tokens_per_example
    assert objective.budget is not None
    feasible = score.tokens_per_example <= objective.budget
    return score.metric if feasible else score.metric - 1.0


def _record(trial: Any, score: ConfigScore, objective: Objective) -> None:
    """The trial's figures as user attributes (few of them: each is one storage commit)."""
    trial.set_user_attr("metric", score.metric)
    trial.set_user_attr("tokens_per_example", score.tokens_per_example)
    trial.set_user_attr("detail", {
        "examples": len(score.scores), "sampling_tokens": score.sampling.total_tokens,
        "aggregation_tokens": score.aggregation.total_tokens, "fallbacks": score.fallbacks, "failures": score.failures,
    })
    if objective.kind == "budget":
        assert objective.budget is not None
        trial.set_user_attr("constraint", score.tokens_per_example - objective.budget)
        trial.set_user_attr("feasible", score.tokens_per_example <= objective.budget)


def pick(study: Any, objective: Objective) -> tuple[list[Any], Any | None]:
    """The best trials (Pareto front, or best feasible) and the chosen one: highest metric, then fewest tokens."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return [], None
    key = lambda t: (-float(t.user_attrs.get("metric", -math.inf)), float(t.user_attrs.get("tokens_per_example", math.inf)), t.number)  # noqa: E731
    if objective.kind == "pareto":
        best = sorted(study.best_trials, key=key)
    else:
        feasible = [t for t in complete if t.user_attrs.get("feasible")]
        best = sorted(feasible, key=key)[:5]
    return best, (best[0] if best else None)

