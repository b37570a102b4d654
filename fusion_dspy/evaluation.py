"""Test-time scaling evaluation: does fusion beat selection on this task, and at what cost?

Per example the candidate pool is sampled once (the largest N); every method then aggregates the
same pool, and for each smaller N its first N candidates (``CandidateSet.first``), so a scaling
curve costs one sampling pass. Each finished example is one JSON line in ``records.jsonl`` (an ``eval`` record of
``docs/records.md``, in a :class:`~fusion_dspy.records.RecordStore`), so an interrupted run is
completed by running it again.
The summary is recomputed from all records (:mod:`fusion_dspy.eval_summary`).

Example:
    >>> import fusion_dspy as fd
    >>> from fusion_dspy.evaluation import evaluate
    >>> with fd.embedded() as server:                                            # doctest: +SKIP
    ...     pool = fd.Pool({"embedded": server.endpoint}, ("embedded",))
    ...     summary = evaluate("mgsm", "mgsm_de.tsv", pool=pool, n=[1, 2, 4], out_dir="runs/mgsm")
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion_dspy.aggregate.registry import BASELINES, BON, FUSION, GREEDY, available_methods, check_methods
from fusion_dspy.data import BadRows
from fusion_dspy.errors import ConfigurationError, DataError, EndpointError, FusionError, first_line
from fusion_dspy.task import Task, load_task

logger = logging.getLogger(__name__)

RECORDS_FILE = "records.jsonl"
DEFAULT_MAX_TOKENS = 256
DEFAULT_CONCURRENCY = 2
# example fields that are bookkeeping, not gold labels
_NOT_GOLD = ("id", "language")


@dataclass
class EvalPlan:
    """A validated evaluation: everything is checked and the data is loaded before any model call.

    Attributes:
        task: the task.
        data_path: the data file or folder.
        examples: the loaded examples.
        ns: the pool sizes to evaluate, ascending; the pool is sampled once at ``max(ns)``.
        methods: method names (``greedy`` and aggregations), in the order given.
        bad_rows: rows skipped with ``skip_bad_rows``.
    """

    task: Task
    data_path: Path
    examples: list[Any]
    ns: tuple[int, ...]
    methods: tuple[str, ...]
    max_tokens: int
    concurrency: int
    seed: int
    bad_rows: BadRows = field(default_factory=BadRows)
    n_given: bool = True

    @property
    def n_max(self) -> int:
        return self.ns[-1]

    @property
    def aggregations(self) -> tuple[str, ...]:
        return tuple(m for m in self.methods if m not in BASELINES)


@dataclass
class EvalRoles:
    """The LMs and scorer an evaluation calls.

    Attributes:
        teachers: name -> LM of the models that produce candidates.
        samples_per_teacher: with several teachers, candidates drawn from each.
        temperature: sampling temperature (None: 0.7 for one teacher, 0.3 for several).
        fusor: the fusor LM; scorer: Best-of-N's scorer (an LLMRater or a RewardModelScorer).
        greedy_lm: the LM of the greedy baseline (the first teacher).
        judge_lm: the LM a metric that calls an LM uses (a pairwise judge) when DSPy has none
            configured: the pool's rater.
        describe: names of the models in each role (recorded with the configuration).
    """

    teachers: dict[str, Any]
    fusor: Any
    scorer: Any
    greedy_lm: Any
    samples_per_teacher: int = 1
    temperature: float | None = None
    describe: dict[str, Any] = field(default_factory=dict)
    judge_lm: Any = None

    @property
    def pool_size(self) -> int | None:
        """Candidates per example for several teachers (None: one LM sampled ``n`` times)."""
        return None if len(self.teachers) == 1 else len(self.teachers) * self.samples_per_teacher


def parse_ns(n: int | str | Sequence[int]) -> tuple[int, ...]:
    """``4``, ``"4"``, ``"1,2,4,8"`` or ``[1, 2, 4]`` -> sorted distinct pool sizes, each >= 1."""
    if isinstance(n, bool):
        raise ConfigurationError(f"n must be a positive integer or a list of them, got {n!r}")
    if isinstance(n, int):
        values = [n]
    elif isinstance(n, str):
        parts = [p.strip() for p in n.split(",")]
        try:
            values = [int(p) for p in parts if p]
        except ValueError:
            raise ConfigurationError(f"n must be an integer or a comma-separated list such as 1,2,4,8, got {n!r}") from None
    else:
        try:
            values = [int(v) for v in n]
        except (TypeError, ValueError):
            raise ConfigurationError(f"n must be a positive integer or a list of them, got {n!r}") from None
    if not values:
        raise ConfigurationError("n: give at least one pool size, e.g. 4 or 1,2,4,8")
    bad = [v for v in values if v < 1]
    if bad:
        raise ConfigurationError(f"n must be >= 1, got {', '.join(map(str, bad))}")
    return tuple(sorted(set(values)))


def default_methods(task: Task) -> tuple[str, ...]:
    """Every method the task supports (the baseline, then each aggregation whose needs the task meets)."""
    return available_methods(task)


def prepare(
    task: Task | str,
    data_path: str | Path,
    *,
    limit: int | None = None,
    n: int | str | Sequence[int] = 4,
    methods: Sequence[str] | str | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    concurrency: int = DEFAULT_CONCURRENCY,
    skip_bad_rows: bool = False,
    seed: int = 0,
    n_given: bool = True,
) -> EvalPlan:
    """Validate every setting and load the data; raises before any model is started or called.

    Raises:
        ConfigurationError: unknown task or method (the valid ones are listed), bad n, limit...
        DataError: a malformed data row (file and line named), unless ``skip_bad_rows``.
    """
    task = load_task(task) if isinstance(task, str) else task
    if not isinstance(task, Task):
        raise ConfigurationError(f"task must be a fusion_dspy.task.Task or a task name, got {type(task).__name__}")
    ns = parse_ns(n)
    if isinstance(methods, str):
        methods = methods.split(",")
    methods = check_methods(methods, task) if methods is not None else default_methods(task)
    if len(set(methods)) != len(methods):
        raise ConfigurationError(f"methods listed more than once: {', '.join(methods)}")
    if _uses_baseline(task) and task.baseline_method not in methods:
        raise ConfigurationError(
            f"task {task.name!r} has no reference answers, so its metric compares each method with "
            f"{task.baseline_method!r}: add {task.baseline_method!r} to the methods, or give the task reference answers"
        )
    for label, value in (("max_tokens", max_tokens), ("concurrency", concurrency)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{label} must be a positive integer, got {value!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigurationError(f"limit must be a positive integer, got {limit!r}")
    path = Path(data_path)
    if not path.exists():
        raise DataError("file or folder does not exist", path=str(path))
    bad_rows = BadRows()
    examples = task.load(path, limit=limit, skip_bad_rows=skip_bad_rows, bad_rows=bad_rows)
    if not examples:
        raise DataError("no usable examples", path=str(path))
    for ex in examples[:1]:
        if not hasattr(ex, "inputs") or ex.get("id") is None:
            raise ConfigurationError(f"task {task.name!r}: examples need inputs (with_inputs) and an 'id'")
    return EvalPlan(task, path, list(examples), ns, tuple(methods), max_tokens, concurrency, seed, bad_rows, n_given)


def roles_from_pool(pool: Any, *, max_tokens: int, cache: bool = True, rater_workers: int = 4) -> EvalRoles:
    """The evaluation roles of a :class:`~fusion_dspy.lm.endpoints.Pool`.

    One teacher is sampled ``n`` times at temperature 0.7; several teachers give
    ``samples_per_teacher`` each at the pool's temperature. The fusor and rater are the pool's; a
    reward model, when the pool has one, scores Best-of-N instead of the rater.
    """
    from fusion_dspy.lm.endpoints import Pool
    from fusion_dspy.select import LLMRater, RewardModelScorer

    if not isinstance(pool, Pool):
        raise ConfigurationError(f"pool must be a fusion_dspy.Pool, got {type(pool).__name__}")
    several = len(pool.teachers) > 1
    teachers = {name: pool.endpoints[name].lm(max_tokens=max_tokens, cache=cache) for name in pool.teachers}
    fusor = pool.endpoints[pool.fusor_name].lm(max_tokens=max_tokens, temperature=0.0, cache=cache)
    rater_lm = pool.endpoints[pool.rater_name].lm(max_tokens=max_tokens, temperature=0.0, cache=cache)
    if pool.reward_model:
        scorer: Any = RewardModelScorer.from_endpoint(pool.endpoints[pool.reward_model])
        scorer_name = f"reward_model:{pool.reward_model}"
    else:
        scorer = LLMRater(rater_lm, max_workers=rater_workers)
        scorer_name = f"rater:{pool.rater_name}"
    greedy_lm = teachers[pool.teachers[0]]
    return EvalRoles(
        teachers=teachers,
        fusor=fusor,
        scorer=scorer,
        greedy_lm=greedy_lm,
        samples_per_teacher=pool.samples_per_teacher,
        temperature=pool.temperature if several else None,
        describe={"teachers": list(pool.teachers), "fusor": pool.fusor_name, "scorer": scorer_name,
                  "samples_per_teacher": pool.samples_per_teacher if several else None},
        judge_lm=rater_lm,
    )


def run(
    plan: EvalPlan,
    roles: EvalRoles,
    out_dir: str | Path,
    *,
    progress: bool = True,
    stop: threading.Event | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Evaluate every example of ``plan`` not yet in ``out_dir``'s records; write and return the summary."""
    from fusion_dspy.eval_summary import RunningMetrics, write_summary
    from fusion_dspy.records import RecordStore, record_id, run_items

    plan = _fit_to_roles(plan, roles)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = RecordStore(out / RECORDS_FILE)
    config = {
        "ns": list(plan.ns),
        "methods": list(plan.methods),
        "max_tokens": plan.max_tokens,
        "seed": plan.seed,
        **roles.describe,
    }
    work = _Worker(plan, roles, config)

    def items() -> Iterator[tuple[str, Any]]:
        for ex in plan.examples:
            inputs = dict(ex.inputs().toDict())
            yield record_id(plan.task.name, str(ex.get("id")), inputs, config), ex

    running = RunningMetrics(plan.methods, plan.n_max)
    for rec in store:
        running.add(rec)
    bar = _progress_bar(len(plan.examples), running) if progress else None

    def recorded(rec: dict[str, Any]) -> None:
        running.add(rec)
        if bar is not None:
            bar.set_postfix_str(running.postfix(), refresh=False)
        if on_record is not None:
            on_record(rec)

    logger.info("evaluating %d examples of %s: N=%s, methods %s -> %s", len(plan.examples), plan.task.name,
                ",".join(map(str, plan.ns)), ",".join(plan.methods), out)
    try:
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
) -> dict[str, Any]:
    """Run the test-time scaling evaluation of ``task`` on ``data_path`` and return the summary.

    Args:
        task: a :class:`Task` or a task name / ``module:attr``.
        pool: a :class:`~fusion_dspy.lm.endpoints.Pool` or prepared :class:`EvalRoles`.
        out_dir: folder for ``records.jsonl``, ``summary.json``/``.md`` and ``scaling.png``
            (default ``runs/eval/<task>``). Finished examples there are skipped.
        n: pool size, or several (``[1, 2, 4, 8]``) for a scaling curve over one sampled pool
            (default 4). With several teachers the pool is the teachers' samples (the default N);
            ``n`` values must not exceed it.
        methods: any of :data:`~fusion_dspy.aggregate.ALL_METHODS` (default: all the task supports).
        concurrency: examples in flight.
        cache: use DSPy's response cache (turn off to measure speed).
    """
    plan = prepare(task, data_path, limit=limit, n=4 if n is None else n, methods=methods, max_tokens=max_tokens,
                   concurrency=concurrency, skip_bad_rows=skip_bad_rows, seed=seed, n_given=n is not None)
    roles = pool if isinstance(pool, EvalRoles) else roles_from_pool(pool, max_tokens=max_tokens, cache=cache)
    return run(plan, roles, out_dir or default_out_dir(plan.task.name), progress=progress)


def default_out_dir(task_name: str) -> Path:
    """``runs/eval/<task>`` (a stable place, so rerunning the same command resumes)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in task_name)
    return Path("runs") / "eval" / safe


def _fit_to_roles(plan: EvalPlan, roles: EvalRoles) -> EvalPlan:
    """Several teachers fix the pool size: check (or default) the N list against it."""
    size = roles.pool_size
    if size is None:
        return plan
    if not plan.n_given:
        plan.ns = (size,)
        return plan
    too_big = [k for k in plan.ns if k > size]
    if too_big:
        raise ConfigurationError(
            f"n={','.join(map(str, too_big))} exceeds the pool: {len(roles.teachers)} teachers x "
            f"{roles.samples_per_teacher} samples = {size} candidates per example"
        )
    return plan


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
        from fusion_dspy.records import EVAL, stamp
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
        })

    def _greedy(self, program: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        from fusion_dspy.aggregate.registry import run_greedy

        try:
            return run_greedy(program, inputs, self.roles.greedy_lm)
        except EndpointError:
            raise  # a server that did not answer fails the example, so a rerun retries it
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
        except EndpointError:
            raise  # a server that did not answer fails the example, so a rerun retries it
        except Exception as exc:  # noqa: BLE001 - isolate the method that failed
            logger.info("aggregation failed (%s); running the methods one by one", exc)
            results = {}
            for method in wanted:
                try:
                    results.update(self.aggregators.run(cset, (method,), example))
                except Exception as one_exc:  # noqa: BLE001 - recorded as this method's failure
                    results[method] = _failed(one_exc)
        return results

    def _scored(self, result: dict[str, Any], example: Any) -> dict[str, Any]:
        import dspy

        try:
            score = float(self.task.metric(example, dspy.Prediction(**result["outputs"])))
        except Exception as exc:  # noqa: BLE001 - a metric that cannot score this output fails the method
            return {**_jsonable(result), **_failed(exc, "metric")}
        return {**_jsonable(result), "status": "ok", "score": score}


def _uses_baseline(task: Task) -> bool:
    return task.baseline_method is not None and not task.has_gold


def _failed(exc: BaseException, stage: str = "method") -> dict[str, Any]:
    return {"status": "failed", "error": f"{stage}: {first_line(exc, 500)}"[:500]}


def _jsonable(value: Any) -> Any:
    from fusion_dspy.types import _jsonable as convert

    return convert(value)


def _progress_bar(total: int, running: Any) -> Any:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="eval", unit="ex", dynamic_ncols=True)
    bar.set_postfix_str(running.postfix(), refresh=False)
    return bar
