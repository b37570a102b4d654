"""Every experiment of the paper that needs no training, as one command: ``fusion-dspy reproduce EXPERIMENT``.

An experiment runs the stages users run (``eval``, ``synth``, ``analyze``) with the paper's settings,
then writes into ``OUT/<experiment>/`` its figure (PNG) and its table (``table.md`` with the settings
used, ``table.csv``) in the layout of the figure or table it mirrors, and ``settings.json``.

- :mod:`~fusion_dspy.reproduce.runs`: the settings and the shared ``eval``/``synth`` runs;
- :mod:`~fusion_dspy.reproduce.experiments`: one function per experiment;
- :mod:`~fusion_dspy.reproduce.tables`, :mod:`~fusion_dspy.reproduce.figures`: tables, and the figures
  that span several runs.

Example:
    >>> import fusion_dspy as fd
    >>> from fusion_dspy.reproduce import Settings, run_experiment
    >>> run_experiment("wmt-oracle", Settings(pool=fd.load_pool("endpoints.yaml"), out=Path("repro"), limit=20))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.reproduce import experiments as ex
from fusion_dspy.reproduce.runs import DATA_ENV, DEFAULT_DATA, Settings
from fusion_dspy.reproduce.tables import Table

__all__ = ["DATA_ENV", "DEFAULT_DATA", "EXPERIMENTS", "Experiment", "Settings", "Table", "run_experiment"]

TEST_TIME = "test time: the pool's first teacher sampled N times at temperature 0.7"
SYNTHETIC = "synthetic data: every teacher of the pool sampled at the pool's temperature (0.3)"


@dataclass(frozen=True)
class Experiment:
    """One experiment: its name, the figure or table of the paper it mirrors, what it shows, how it runs."""

    name: str
    mirrors: str
    what: str
    setting: str
    run: Callable[[Settings, Path], ex.Outcome]


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment("scaling", "Fig. 5", "test-time scaling over N (1..16): greedy, Best-of-N, Fusion-of-N, oracle on one pool per example",
               TEST_TIME, ex.scaling),
    Experiment("arena-languages", "Figs. 1, 16", "Arena-Hard win rate per language (vs reference answers), Fusion-of-N vs Best-of-N",
               TEST_TIME, ex.arena_languages),
    Experiment("wmt-languages", "Fig. 2", "WMT24++ per language pair: Fusion-of-N's gain over Best-of-N and over the oracle",
               TEST_TIME, ex.wmt_languages),
    Experiment("wmt-oracle", "Fig. 2 (oracle)", "Fusion-of-N vs the oracle (the best candidate by a reference metric) on WMT24++",
               TEST_TIME, ex.wmt_oracle),
    Experiment("fusor-size", "Fig. 4", "each model of the pool as the fusor and as the rater of the same candidates",
               TEST_TIME, ex.fusor_size),
    Experiment("synth-quality", "Table 2", "synthetic data judged against references: fusion vs Best-of-N data, the fusor alone, one teacher",
               SYNTHETIC, ex.synth_quality),
    Experiment("contributions", "Fig. 6", "the share of fused characters each teacher supplied (appendix F)", SYNTHETIC, ex.contributions),
    Experiment("positions", "Figs. 7, 11", "position bias: fused characters by the position a candidate was shown in",
               SYNTHETIC, ex.positions),
)}


def run_experiment(name: str, settings: Settings, *, command: str | None = None) -> dict[str, Any]:
    """Run experiment ``name`` and write its figure, table and settings into ``settings.out / name``.

    Returns:
        ``{"experiment", "figures", "table_md", "table_csv", "settings", "seconds"}`` (paths as strings).
    """
    experiment = EXPERIMENTS.get(name)
    if experiment is None:
        raise ConfigurationError(f"unknown experiment {name!r}; experiments: {', '.join(EXPERIMENTS)} (fusion-dspy reproduce --list)")
    folder = settings.out / name
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    outcome = experiment.run(settings, folder)
    seconds = time.perf_counter() - started
    pool = settings.test_time_pool() if experiment.setting == TEST_TIME else settings.pool
    used = {
        "experiment": f"{name} (mirrors {experiment.mirrors}: {experiment.what})",
        "setting": experiment.setting,
        "models": settings.models(pool),
        **outcome.used,
        "limit": (f"{settings.limit} examples per language" if experiment.setting == TEST_TIME else f"{settings.limit} prompts")
        if settings.limit else "all",
        "max_tokens": settings.max_tokens,
        "seed": settings.seed,
        "runs": [str(p) for p in outcome.runs],
        "seconds": round(seconds, 1),
    }
    if command:
        used["command"] = command
    md, csv = outcome.table.write(folder, used)
    settings_path = folder / "settings.json"
    settings_path.write_text(json.dumps(used, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return {"experiment": name, "figures": [str(p) for p in outcome.figures], "table_md": str(md), "table_csv": str(csv),
            "settings": str(settings_path), "seconds": round(seconds, 1)}
