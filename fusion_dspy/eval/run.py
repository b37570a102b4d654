"""Running an evaluation: one record per example, every method on one sampled pool, the summary at the end.

Per example the candidate pool is sampled once (the largest N); every method then aggregates the
same pool, and for each smaller N its first N candidates (``CandidateSet.first``), so a scaling
curve costs one sampling pass. Each finished example is one JSON line in ``records.jsonl`` (an
``eval`` record of ``docs/records.md``, in a :class:`~fusion_dspy.records.RecordStore`), so an
interrupted run is completed by running it again.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fusion_dspy.aggregate.registry import BON, FUSION, GREEDY
from fusion_dspy.errors import ConfigurationError, EndpointError, FusionError, first_line, is_endpoint_failure
from fusion_dspy.eval.plan import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_TOKENS,
    DEFAULT_N,
    RECORDS_FILE,
    EvalPlan,
    EvalRoles,
    _fit_to_roles,
    _uses_baseline,
    default_out_dir,
    prepare,
    roles_from_pool,
)
from fusion_dspy.task import Task

logger = logging.getLogger(__name__)

# example fields that are bookkeeping, not gold labels
_NOT_GOLD = ("id", "language")


def run(
    plan: EvalPlan,
    roles: EvalRoles,
    out_dir: str | Path,
    *,
    progress: bool = True,
    stop: threading.Event | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    ray: Any = None,
    ray_engines: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate every example of ``plan`` not yet in ``out_dir``'s records; write and return the summary.

    ``ray``: :class:`~fusion_dspy.records.ray_runner.RayOptions` to run on Ray (``docs/scale-out.md``;
    its ``concurrency`` is the examples in flight per worker), None for in-process threads.
    ``ray_engines``: with ``ray``, the teachers sampled by vLLM engines inside the pipeline
    (``{name: ray.data.llm processor config}``, :func:`fusion_dspy.serving.ray_llm.engines_for_pool`);
    the records and their ids are those of the same run over HTTP.

    Raises:
        ConfigurationError: another run holds ``out_dir`` (:func:`~fusion_dspy.records.lock_folder`); an engine that is
            no teacher of the pool or no processor configuration, or engines without ``ray`` (before anything starts).
    """
    from fusion_dspy.records import lock_folder

    plan = _fit_to_roles(plan, roles)
    if ray_engines:
        if ray is None:
            raise ConfigurationError("ray_engines need ray=RayOptions(...): the engines run inside the Ray Data pipeline")
        from fusion_dspy.eval.ray_engine import check_eval_engines

        check_eval_engines(ray_engines, plan, roles)  # before Ray starts and before the folder is touched
    with lock_folder(out_dir):  # one run per folder: two would write the same ids
        return _run(plan, roles, Path(out_dir), progress=progress, stop=stop, on_record=on_record, ray=ray, ray_engines=ray_engines)


def _run(plan: EvalPlan, roles: EvalRoles, out: Path, *, progress: bool, stop: threading.Event | None,
         on_record: Callable[[dict[str, Any]], None] | None, ray: Any = None,
         ray_engines: Mapping[str, Any] | None = None) -> dict[str, Any]:
    from fusion_dspy.eval.report import write_summary
    from fusion_dspy.eval.summary import RunningMetrics
    from fusion_dspy.records import RecordStore, record_id, run_items
    from fusion_dspy.records.shards import merge_shards

    merge_shards(out / RECORDS_FILE)  # records a Ray run left in shards (its driver was killed) count as written
    store = RecordStore(out / RECORDS_FILE)
    config = {
        "ns": list(plan.ns),
        "methods": list(plan.methods),
        "max_tokens": plan.max_tokens,
        "seed": plan.seed,
        **roles.describe,
    }
    if plan.task.options:  # e.g. the reference answers, the oracle's metric (absent: ids of earlier runs stay valid)
        config["task_options"] = dict(plan.task.options)
    if plan.task.uses_judge or plan.task.extra_metrics:
        config["judge"] = roles.judge_name
    if plan.adaptive is not None:  # absent: ids of runs without it stay valid
        config["adaptive"] = plan.adaptive.to_dict()
    work = _Worker(plan, roles, config)

    def items() -> Iterator[tuple[str, Any]]:
        for ex in plan.examples:
            inputs = dict(ex.inputs().toDict())
            yield record_id(plan.task.name, str(ex.get("id")), inputs, config), ex

    running = RunningMetrics(plan.methods, plan.n_max)
    for rec in store:
        running.add(rec)
    bar = _progress_bar(len(plan.examples), running) if progress and ray is None else None  # Ray Data shows its own

    def recorded(rec: dict[str, Any]) -> None:
        running.add(rec)
        if bar is not None:
            bar.set_postfix_str(running.postfix(), refresh=False)
        if on_record is not None:
            on_record(rec)

    logger.info("evaluating %d examples of %s: N=%s, methods %s -> %s", len(plan.examples), plan.task.name,
                ",".join(map(str, plan.ns)), ",".join(plan.methods), out)
    try:
        if ray is not None:
            from fusion_dspy.eval.ray_engine import run_eval_on_ray

            stats = run_eval_on_ray(items(), work, store, options=ray, engines=ray_engines, on_record=recorded, stop=stop)
        else:
            stats = run_items(items(), work, store, concurrency=plan.concurrency, on_record=recorded, progress=bar, stop=stop)
    finally:
        if bar is not None:
            bar.close()
    summary = write_summary(store.path, plan.task, out, seed=plan.seed, bad_rows=plan.bad_rows.count)
    summary["run"] = stats.to_dict()
    if stats.interrupted:
        logger.warning("interrupted: %d examples done; run the same command again to complete the rest", len(store))
    return summary


def evaluate(
    task: Task | str,
    data_path: str | Path,
    *,
    pool: Any,
    out_dir: str | Path | None = None,
    limit: int | None = None,
    n: int | str | Sequence[int] | None = None,
    methods: Sequence[str] | str | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    concurrency: int = DEFAULT_CONCURRENCY,
    skip_bad_rows: bool = False,
    seed: int = 0,
    progress: bool = True,
    cache: bool = True,
    adaptive: Any = None,
) -> dict[str, Any]:
    """Run the test-time scaling evaluation of ``task`` on ``data_path`` and return the summary.

    Args:
        task: a :class:`Task` or a task name / ``module:attr``.
        pool: a :class:`~fusion_dspy.lm.endpoints.Pool` or prepared :class:`EvalRoles`.
        out_dir: folder for ``records.jsonl``, ``summary.json``/``.md`` and ``scaling.png``
            (default ``runs/eval/<task>``). Finished examples there are skipped.
        n: pool size, or several (``[1, 2, 4, 8]``) for a scaling curve over one sampled pool
            (default :data:`~fusion_dspy.eval.plan.DEFAULT_N`). With several teachers the pool is the teachers' samples (the default N);
            ``n`` values must not exceed it.
        methods: any of :data:`~fusion_dspy.aggregate.ALL_METHODS` (default: all the task supports).
        concurrency: examples in flight.
        cache: use DSPy's response cache (turn off to measure speed).
        adaptive: an :class:`~fusion_dspy.adaptive.AdaptiveN` or settings string (``"on"``,
            ``"start=2,step=2"``): each method is also replayed as adaptive N on the same pools.
    """
    plan = prepare(task, data_path, limit=limit, n=DEFAULT_N if n is None else n, methods=methods, max_tokens=max_tokens,
                   concurrency=concurrency, skip_bad_rows=skip_bad_rows, seed=seed, n_given=n is not None, adaptive=adaptive)
    roles = pool if isinstance(pool, EvalRoles) else roles_from_pool(pool, max_tokens=max_tokens, cache=cache)
    return run(plan, roles, out_dir or default_out_dir(plan.task.name), progress=progress)


class _Worker:
    """Turns one example into its record; one bad method output never fails the example."""

    def __init__(self, plan: EvalPlan, roles: EvalRoles, config: Mapping[str, Any]):
        from fusion_dspy.aggregate.modules import fusor_for
        from fusion_dspy.aggregate.registry import Aggregators
        from fusion_dspy.sampling import output_fields_of

        self.plan = plan
        self.roles = roles
        self.config = dict(config)
        self.task = plan.task
        probe = plan.task.program()
        self.output_fields = output_fields_of(probe)
        fusor = fusor_for(probe, lm=roles.fusor, seed=plan.seed) if FUSION in plan.methods else None
        self.aggregators = Aggregators(fusor=fusor, scorer=roles.scorer if BON in plan.methods else None, task=plan.task, seed=plan.seed)

    def __call__(self, example: Any) -> dict[str, Any]:
        import dspy

        # a metric that calls an LM (a pairwise judge, also inside oracle) uses the pool's rater unless DSPy has an LM
        with dspy.context(lm=dspy.settings.lm or self.roles.judge_lm):
            return self._record(example)

    def _record(self, example: Any) -> dict[str, Any]:
        return self.finish(example, self.sample(example))

    def sample(self, example: Any) -> Any:
        """The example's candidate pool (the largest N), drawn once for every method and every smaller N."""
        from fusion_dspy.sampling import sample_candidates

        program = self.task.program()
        inputs = dict(example.inputs().toDict())
        if len(self.roles.teachers) == 1:
            lm = next(iter(self.roles.teachers.values()))
            cset = sample_candidates(program, inputs, lm=lm, n=self.plan.n_max, temperature=self.roles.temperature,
                                     rollout_offset=self.plan.seed)
        else:
            cset = sample_candidates(program, inputs, pool=self.roles.teachers, samples_per_model=self.roles.samples_per_teacher,
                                     temperature=self.roles.temperature, rollout_offset=self.plan.seed)
        return cset

    @property
    def temperature(self) -> float:
        """The sampling temperature :meth:`sample` uses (the pool's; else 0.7 for one teacher, 0.3 for several)."""
        from fusion_dspy.sampling import POOL_TEMPERATURE, SINGLE_TEMPERATURE

        if self.roles.temperature is not None:
            return self.roles.temperature
        return SINGLE_TEMPERATURE if len(self.roles.teachers) == 1 else POOL_TEMPERATURE

    def samples_of(self, teacher: str) -> int:
        """Candidates ``teacher`` gives to an example's pool: the largest N for one teacher, else samples per teacher."""
        return self.plan.n_max if len(self.roles.teachers) == 1 else self.roles.samples_per_teacher

    def max_tokens_of(self, teacher: str) -> int:
        """The token limit of ``teacher``'s samples (its LM's, as in-process requests send it)."""
        return int(getattr(self.roles.teachers[teacher], "kwargs", {}).get("max_tokens") or self.plan.max_tokens)

    def sample_teacher(self, example: Any, teacher: str) -> list[Any]:
        """``teacher``'s part of the example's pool (:meth:`sample` is every teacher's at once), failed samples kept."""
        from fusion_dspy.sampling import sample_teacher

        n = len(self.roles.teachers)
        return sample_teacher(self.task.program(), dict(example.inputs().toDict()), teacher, self.roles.teachers[teacher],
                              self.samples_of(teacher), temperature=self.temperature, max_workers=max(1, 4 // n) if n > 1 else 4,
                              rollout_offset=self.plan.seed)

    def finish(self, example: Any, cset: Any) -> dict[str, Any]:
        """The record of ``example`` from its pool: greedy, every method at every N, the scores.

        Its own step so that the Ray engine (:mod:`fusion_dspy.eval.ray_engine`) runs sampling and
        aggregation as two stages and writes the same record.
        """
        from fusion_dspy.records import EVAL, stamp

        program = self.task.program()
        inputs = dict(example.inputs().toDict())
        methods: dict[str, Any] = {}
        if GREEDY in self.plan.methods:
            methods[GREEDY] = self._greedy(program, inputs)
        by_n: dict[str, Any] = {}
        for k in self.plan.ns:
            results = self._aggregate(cset.first(k), example)
            if k == self.plan.n_max:
                methods.update(results)
            else:
                by_n[str(k)] = results
        scoring = self._with_baseline(example, methods)
        for results in (methods, *by_n.values()):
            for name, result in results.items():
                if result.get("status") != "failed":
                    results[name] = self._scored(result, scoring)
        fields = example.toDict()
        extra = {"adaptive": self._adaptive(cset, {**by_n, str(self.plan.n_max): methods}, example, scoring)} if self.plan.adaptive else {}
        return stamp(EVAL, {
            "config": self.config,
            "inputs": inputs,
            "candidates": cset.to_dict(),
            "methods": methods,
            "by_n": by_n,
            "n_max": self.plan.n_max,
            "task": self.task.name,
            "example_id": str(fields.get("id")),
            "language": str(fields.get("language") or "-"),
            "gold": {k: v for k, v in fields.items() if k not in inputs and k not in _NOT_GOLD},
            **extra,
        })

    def _adaptive(self, cset: Any, fixed: Mapping[str, Mapping[str, Any]], example: Any, scoring: Any) -> dict[str, Any]:
        """Each aggregation as adaptive N would have run it up to each N, replayed on the sampled pool.

        No model is called: where the rule stops on agreement the agreed candidate is the answer (no
        aggregation call), and where it draws all N candidates the answer is the fixed-N method's, on
        the identical candidates, with the sampling tokens of drawing them in rounds.
        """
        from fusion_dspy.adaptive import answer_key, replay
        from fusion_dspy.aggregate.adaptive import run_adaptive
        from fusion_dspy.types import Usage

        key = answer_key(self.task.answer_field, self.task.normalize) if self.task.normalize is not None else None
        out: dict[str, Any] = {}
        for k in self.plan.ns:
            if k < 2:
                continue
            used, trace = replay(cset.first(k), self.plan.adaptive.with_max_n(k), key=key, field=self.task.answer_field,
                                 n_limit=self._n_limit)
            results: dict[str, Any] = {}
            for method in self.plan.aggregations:
                if trace.agreed:
                    try:
                        done = run_adaptive(self.aggregators.get(method), used, trace, example=example).to_record()
                        results[method] = self._scored(done, scoring)
                    except Exception as exc:  # noqa: BLE001 - recorded as this method's failure
                        results[method] = _failed(exc)
                    continue
                same = dict(fixed.get(str(k), {}).get(method) or {})
                if same.get("status") != "failed" and same.get("usage"):
                    same["usage"] = Usage.breakdown(used.usage, Usage.from_dict(same["usage"]["aggregation"]))
                results[method] = {**same, "adaptive": trace.to_dict()}
            out[str(k)] = results
        return out

    @property
    def _n_limit(self) -> int | None:
        from fusion_dspy.sampling import n_limit_of

        return n_limit_of(next(iter(self.roles.teachers.values())))

    def _greedy(self, program: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        from fusion_dspy.aggregate.registry import run_greedy

        try:
            return run_greedy(program, inputs, self.roles.greedy_lm)
        except Exception as exc:  # noqa: BLE001 - a failed baseline is recorded, the example goes on
            return _failed(exc)

    def _with_baseline(self, example: Any, methods: Mapping[str, Any]) -> Any:
        """The example to score with: a task without references gets its baseline method's answer."""
        if not _uses_baseline(self.task):
            return example
        base = methods.get(self.task.baseline_method) or {}
        if base.get("status") == "failed" or not base.get("outputs"):
            # without its baseline nothing in this example can be scored: fail it, a rerun retries it
            raise FusionError(f"the baseline method {self.task.baseline_method!r} failed ({base.get('error', 'no answer')}), "
                              "so no method of this example can be scored")
        return example.copy(baseline=base["outputs"].get(self.task.answer_field))

    def _aggregate(self, cset: Any, example: Any) -> dict[str, Any]:
        """Every aggregation on ``cset``; if one raises, each is run alone so only that one fails."""
        wanted = self.plan.aggregations
        if not wanted:
            return {}
        try:
            results = self.aggregators.run(cset, wanted, example)
        except Exception as exc:  # noqa: BLE001 - isolate the method that failed
            _raise_endpoint_failure(exc)
            logger.info("aggregation failed (%s); running the methods one by one", first_line(exc))
            results = {}
            for method in wanted:
                try:
                    results.update(self.aggregators.run(cset, (method,), example))
                except Exception as one_exc:  # noqa: BLE001 - recorded as this method's failure
                    results[method] = _failed(one_exc)
        return results

    def _scored(self, result: dict[str, Any], example: Any) -> dict[str, Any]:
        import dspy

        prediction = dspy.Prediction(**result["outputs"])
        try:
            score = float(self.task.metric(example, prediction))
            if not math.isfinite(score):
                raise ValueError(f"the metric gave {score}, not a finite number")
        except Exception as exc:  # noqa: BLE001 - a metric that cannot score this output fails the method
            return {**_jsonable(result), **_failed(exc, "metric")}  # a dead judge raises instead (_failed)
        scored = {**_jsonable(result), "status": "ok", "score": score}
        if self.task.extra_metrics:
            scored["metrics"] = {name: _extra_score(name, fn, example, prediction) for name, fn in self.task.extra_metrics.items()}
        return scored



def _raise_endpoint_failure(exc: BaseException) -> None:
    """Re-raise ``exc`` as an EndpointError when a server failed (down, 5xx, auth): the example fails and a rerun retries it.

    Only unusable *output* becomes a failed method. LiteLLM's own exceptions (a task's metric that
    calls an LM directly) count as well as ours, by :func:`~fusion_dspy.errors.is_endpoint_failure`.
    """
    if isinstance(exc, EndpointError):
        raise exc
    if is_endpoint_failure(exc):
        raise EndpointError(f"a server did not answer: {first_line(exc)}") from exc


def _extra_score(name: str, fn: Callable[..., Any], example: Any, prediction: Any) -> float | None:
    """A further metric's score (None when it gives none); a server that is down fails the example."""
    try:
        value = fn(example, prediction)
    except Exception as exc:  # noqa: BLE001 - a further metric that fails leaves this score empty, the method stands
        _raise_endpoint_failure(exc)
        logger.warning("metric %r failed: %s", name, first_line(exc))
        return None
    if value is None:
        return None
    if not math.isfinite(float(value)):
        logger.warning("metric %r gave %s, not a finite number; no score", name, value)
        return None
    return float(value)


def _failed(exc: BaseException, stage: str = "method") -> dict[str, Any]:
    """A method's failure as recorded; a server failure is never one (:func:`_raise_endpoint_failure`)."""
    _raise_endpoint_failure(exc)
    return {"status": "failed", "error": f"{stage}: {first_line(exc, 500)}"[:500]}


def _jsonable(value: Any) -> Any:
    from fusion_dspy.types import _jsonable as convert

    return convert(value)


def _progress_bar(total: int, running: Any) -> Any:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="eval", unit="ex", dynamic_ncols=True)
    bar.set_postfix_str(running.postfix(), refresh=False)
    return bar
