"""Test-time scaling evaluation: does fusion beat selection on this task, and at what cost?

- :mod:`~fusion_dspy.eval.plan`: every setting checked and the data loaded before any model call;
  the roles (teachers, fusor, scorer) from a pool;
- :mod:`~fusion_dspy.eval.run`: one record per example (every method on one sampled pool, and on
  its first k candidates for each smaller N), resumable;
- :mod:`~fusion_dspy.eval.summary`: the summary recomputed from all records (bootstrap CIs, tokens,
  corpus metrics, fusion's paired gain over each method per language);
- :mod:`~fusion_dspy.eval.report`: its files: ``summary.json``, ``summary.md`` and the figures
  (``scaling.png``, ``languages.png``, ``deltas.png``).

Example:
    >>> import fusion_dspy as fd
    >>> with fd.embedded() as server:                                            # doctest: +SKIP
    ...     pool = fd.Pool({"embedded": server.endpoint}, ("embedded",))
    ...     summary = fd.evaluate("mgsm", "mgsm_de.tsv", pool=pool, n=[1, 2, 4], out_dir="runs/mgsm")
"""

from fusion_dspy.eval.plan import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_TOKENS,
    DEFAULT_N,
    RECORDS_FILE,
    EvalPlan,
    EvalRoles,
    default_methods,
    default_out_dir,
    parse_ns,
    prepare,
    roles_from_pool,
)
from fusion_dspy.eval.run import evaluate, run

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_N",
    "RECORDS_FILE",
    "EvalPlan",
    "EvalRoles",
    "default_methods",
    "default_out_dir",
    "evaluate",
    "parse_ns",
    "prepare",
    "roles_from_pool",
    "run",
]
