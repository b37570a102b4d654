"""The settings of a reproduction and the runs it makes: ``eval`` and ``synth`` themselves, in shared folders.

An experiment never samples or aggregates on its own: it calls :func:`eval_run` (``prepare`` +
``roles_from_pool`` + ``run`` of :mod:`fusion_dspy.eval`) or :func:`synth_run`
(:func:`fusion_dspy.synth.synthesize`) and reads what they wrote. Runs live under ``OUT/runs/`` in a
folder named by what configures them, so two experiments that need the same run share it (the
second finds every example done and only reads the summary), and rerunning an interrupted
reproduction resumes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fusion_dspy.errors import ConfigurationError, FusionError
from fusion_dspy.eval import DEFAULT_MAX_TOKENS, DEFAULT_N

logger = logging.getLogger(__name__)

DATA_ENV = "FUSION_DSPY_DATA"
#: where each kind of data is found under the data root (the layout of the shared data folder, docs/reproduce.md)
DEFAULT_DATA = {
    "wmt": "wmt24pp",
    "wmt-one": "wmt24pp/en-de_DE.jsonl",
    "arena": "m_arenahard_v0.1",
    "arena-one": "m_arenahard_v0.1/m-arena-hard-de",
    "mgsm-one": "mgsm/mgsm_en.tsv",
    "geofactx-one": "geofactx/geofact_x_test.jsonl",
    "prompts": "ultrafeedback/train_clean.jsonl",
}


@dataclass
class Settings:
    """Everything a reproduction is run with (the CLI's options).

    Attributes:
        pool: the models and roles; test-time experiments sample its first teacher N times (the
            paper's setting), synthetic-data experiments sample all its teachers.
        out: the output folder (``OUT/<experiment>/`` per experiment, ``OUT/runs/`` for the runs).
        data_root: the folder holding the datasets (default ``$FUSION_DSPY_DATA``, else ``data``).
        limit: at most this many examples per language (prompts for synth); None: all.
        data: a data file or folder instead of the experiment's default; task: the task instead of
            the experiment's default (where it has a choice).
        n: the pool size (``5``), or the list of sizes of the scaling curve (``1,2,4,8,16``).
        judge: the judge (a pool member or a LiteLLM model string; default the pool's judge).
        references: Arena's reference answers (Arena-Hard's ``model_answer`` layout).
        prompt_references: the synthetic-data prompts' reference answers (JSONL ``{prompt, answer}``;
            default: the prompts' own ``chosen`` answers).
        metric, oracle_metric, comet_model, comet_device: WMT's metric options.
        fusors: the models compared as fusors and raters (default: every model of the pool but the judge).
    """

    pool: Any
    out: Path
    data_root: Path = Path(os.environ.get(DATA_ENV, "data"))
    limit: int | None = None
    data: Path | None = None
    task: str | None = None
    n: str | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    concurrency: int = 2
    seed: int = 0
    judge: str | None = None
    judge_api_base: str | None = None
    references: Path | None = None
    reference_model: str | None = None
    prompt_references: Path | None = None
    metric: str | None = None
    oracle_metric: str | None = None
    comet_model: str | None = None
    comet_device: str | None = None
    fusors: tuple[str, ...] = ()
    progress: bool = False

    def data_path(self, kind: str) -> Path:
        """``--data``, else the experiment's default under the data root (which must exist)."""
        if self.data is None and kind not in DEFAULT_DATA:
            raise ConfigurationError(f"no default data for {kind.removesuffix('-one')!r}: give --data")
        path = self.data if self.data is not None else self.data_root / DEFAULT_DATA[kind]
        if not path.exists():
            raise ConfigurationError(f"data {path} does not exist: give --data, or --data-root (or ${DATA_ENV}) "
                                     "pointing at the datasets laid out as in docs/reproduce.md")
        return path

    def test_time_pool(self, fusor: str | None = None, rater: str | None = None) -> Any:
        """The paper's test-time setting: the pool's first teacher alone, sampled N times at temperature 0.7.

        A ``rater`` given here scores Best-of-N itself (the pool's reward model, if any, is left out).
        """
        pool = self.pool
        return replace(pool, teachers=(pool.teachers[0],), samples_per_teacher=1, fusor=fusor or pool.fusor_name,
                       rater=rater or pool.rater_name, reward_model=None if rater else pool.reward_model)

    def models(self, pool: Any | None = None) -> dict[str, Any]:
        """The roles of a pool, named with their models (recorded in every table)."""
        pool = pool or self.pool
        name = lambda n: f"{n} ({pool.endpoints[n].model})"  # noqa: E731 - a one-line formatter
        return {"teachers": [name(t) for t in pool.teachers], "samples per teacher": pool.samples_per_teacher,
                "fusor": name(pool.fusor_name), "rater": name(pool.rater_name),
                "judge": self.judge or name(pool.judge_name)}

    def task_options(self, task: Any) -> dict[str, Any]:
        """The options of ours that ``task`` takes (references for Arena, metrics for WMT)."""
        given = {"references": self.references, "reference_model": self.reference_model, "metric": self.metric,
                 "oracle_metric": self.oracle_metric, "comet_model": self.comet_model, "comet_device": self.comet_device}
        accepted = task.option_names()
        return {k: v for k, v in given.items() if v is not None and k in accepted}


def run_name(label: str, *config: Any) -> str:
    """A run folder's name: a label and a hash of what configures the run (not the limit: more examples resume)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{label}-{digest}"


def eval_run(s: Settings, label: str, task_name: str, data: Path, *, ns: tuple[int, ...], methods: tuple[str, ...],
             pool: Any | None = None) -> tuple[dict[str, Any], Path]:
    """Run (or resume) ``eval`` and return its summary and folder."""
    from fusion_dspy.eval import prepare, roles_from_pool, run
    from fusion_dspy.task import load_task

    task = load_task(task_name)
    task = task.configure(**s.task_options(task))
    pool = pool or s.test_time_pool()
    plan = prepare(task, data, limit=s.limit, n=list(ns), methods=list(methods), max_tokens=s.max_tokens,
                   concurrency=s.concurrency, seed=s.seed)
    roles = roles_from_pool(pool, max_tokens=s.max_tokens, judge=s.judge, judge_api_base=s.judge_api_base)
    folder = s.out / "runs" / run_name(label, task_name, str(data), ns, methods, dict(task.options), roles.describe,
                                       roles.judge_name, s.max_tokens, s.seed)
    logger.info("eval %s on %s -> %s", task_name, data, folder)
    summary = run(plan, roles, folder, progress=s.progress)
    if not summary["counts"]["done"]:
        raise FusionError(f"no example of {label} finished ({summary['counts']['failed']} failed): the reasons are in "
                          f"{folder / 'records.failed.jsonl'}; rerun to retry them")
    if summary["counts"]["failed"]:
        logger.warning("%d examples of %s failed (see %s); rerun to retry them", summary["counts"]["failed"], label, folder)
    return summary, folder


def synth_run(s: Settings, label: str, pool: Any, methods: tuple[str, ...]) -> Path:
    """Run (or resume) ``synth`` with ``pool`` on the experiment's prompts; return its records file."""
    from fusion_dspy.synth import synthesize

    prompts = s.data_path("prompts")
    folder = s.out / "runs" / run_name(label, str(prompts), s.models(pool), pool.temperature, methods, s.max_tokens, s.seed)
    stats = synthesize(prompts, folder, pool=pool, limit=s.limit, methods=methods, max_tokens=s.max_tokens, concurrency=s.concurrency)
    if not stats.done and not stats.skipped:
        raise FusionError(f"no prompt of {label} finished ({stats.failed} failed): the reasons are in {folder / 'synth.failed.jsonl'}; "
                          "rerun to retry them")
    if stats.failed:
        logger.warning("%d prompts of %s failed (see %s); rerun to retry them", stats.failed, label, folder)
    return Path(stats.records_path)


def default_ns(s: Settings, default: str = str(DEFAULT_N)) -> tuple[int, ...]:
    from fusion_dspy.eval import parse_ns

    return parse_ns(s.n or default)
