"""Planning an evaluation: every setting checked and the data loaded before any model call; the roles.

:func:`prepare` validates the task, pool sizes and methods (names from the method registry, and
what the task supports) and loads the examples; :func:`roles_from_pool` turns a
:class:`~fusion_dspy.lm.endpoints.Pool` into the LMs and scorer an evaluation calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion_dspy.adaptive import AdaptiveN
from fusion_dspy.aggregate.registry import BASELINES, available_methods, check_methods
from fusion_dspy.data import BadRows
from fusion_dspy.errors import ConfigurationError, DataError
from fusion_dspy.sampling import DEFAULT_N
from fusion_dspy.task import Task, load_task

RECORDS_FILE = "records.jsonl"
DEFAULT_MAX_TOKENS = 256
DEFAULT_CONCURRENCY = 2


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
        adaptive: adaptive-N settings: each aggregation is also replayed adaptively on the pool, up
            to each N (``max_n`` is taken from ``ns``), for the adaptive curve of the summary.
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
    adaptive: AdaptiveN | None = None

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
        judge_lm: the LM a metric that calls an LM uses (a pairwise or reasoning judge) when DSPy has
            none configured: ``--judge``, else the pool's judge (its rater unless it names one).
        judge_name: the judge's name (recorded with the configuration of tasks that use a judge).
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
    judge_name: str | None = None

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
    n: int | str | Sequence[int] = DEFAULT_N,
    methods: Sequence[str] | str | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    concurrency: int = DEFAULT_CONCURRENCY,
    skip_bad_rows: bool = False,
    seed: int = 0,
    n_given: bool = True,
    adaptive: AdaptiveN | str | None = None,
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
    if isinstance(adaptive, str):
        adaptive = AdaptiveN.from_spec(adaptive, max_n=max(ns))
    if adaptive is not None and not isinstance(adaptive, AdaptiveN):
        raise ConfigurationError(f"adaptive must be an AdaptiveN or a settings string, got {type(adaptive).__name__}")
    if adaptive is not None and max(ns) < 2:
        raise ConfigurationError("adaptive N needs a pool of at least 2 candidates: give --n 8 or a list such as 2,4,8")
    if adaptive is not None:
        adaptive = adaptive.with_max_n(max(ns))  # each N of the curve is a max_n
    return EvalPlan(task, path, list(examples), ns, tuple(methods), max_tokens, concurrency, seed, bad_rows, n_given, adaptive)


def roles_from_pool(
    pool: Any,
    *,
    max_tokens: int,
    cache: bool = True,
    rater_workers: int = 4,
    judge: str | None = None,
    judge_api_base: str | None = None,
    judge_api_key: str | None = None,
) -> EvalRoles:
    """The evaluation roles of a :class:`~fusion_dspy.lm.endpoints.Pool`.

    One teacher is sampled ``n`` times at temperature 0.7 (the paper's test-time setting); several
    teachers give ``samples_per_teacher`` each at the pool's temperature (0.3 by default, the
    paper's for teachers). The fusor and rater are the pool's; a reward model, when the pool has one,
    scores Best-of-N instead of the rater. The judge (of tasks whose metric calls an LLM) is
    ``judge`` (a pool member or a LiteLLM model string, :meth:`Pool.endpoint_for`), else the pool's.
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
    judge_ep = pool.endpoint_for(judge, api_base=judge_api_base, api_key=judge_api_key)
    judge_lm = rater_lm if judge_ep is pool.endpoints.get(pool.rater_name) else judge_ep.lm(max_tokens=max_tokens, temperature=0.0, cache=cache)
    return EvalRoles(
        teachers=teachers,
        fusor=fusor,
        scorer=scorer,
        greedy_lm=greedy_lm,
        samples_per_teacher=pool.samples_per_teacher,
        temperature=pool.temperature if several else None,
        describe={"teachers": list(pool.teachers), "fusor": pool.fusor_name, "scorer": scorer_name,
                  "samples_per_teacher": pool.samples_per_teacher if several else None},
        judge_lm=judge_lm,
        judge_name=judge_ep.model if judge_ep.name not in pool.endpoints else judge_ep.name,
    )



def default_out_dir(task_name: str) -> Path:
    """``runs/eval/<task>`` (a stable place, so rerunning the same command resumes)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in task_name)
    return Path("runs") / "eval" / safe


def _fit_to_roles(plan: EvalPlan, roles: EvalRoles) -> EvalPlan:
    """Several teachers fix the pool size: check (or default) the N list against it."""
    size = roles.pool_size
    if size is None:
        return plan
    if plan.adaptive is not None:
        raise ConfigurationError(f"adaptive N samples rounds of one model; this pool has {len(roles.teachers)} teachers: "
                                 "evaluate adaptive N with one teacher")
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



def _uses_baseline(task: Task) -> bool:
    return task.baseline_method is not None and not task.has_gold

