"""An Optuna study over how to spend test-time compute: n, temperature, teachers, fusor and method.

Each trial picks

- ``n``: samples per teacher (the pool YAML's ``samples_per_teacher``),
- ``temperature``: the teachers' sampling temperature,
- ``teachers``: a non-empty subset of the pool's teachers (one categorical: ``"a+b"``),
- ``method``: every deployable method of :mod:`fusion_dspy.aggregate` the task supports (fusion,
  Best-of-N with an LLM rater, majority vote when the task has an answer normaliser),
- ``fusor`` (only for a method that needs a fusor) or ``rater`` (only for one that needs a scorer):
  which model aggregates,
- adaptive N, when any ``adaptive_*`` parameter is given: ``adaptive_start`` (``off`` for a fixed
  n), ``adaptive_step``, ``adaptive_threshold`` (closed-form tasks: the Beta rule) or
  ``adaptive_similarity`` (free-form: near-duplicates), ``adaptive_budget`` (``max_tokens_total``,
  ``none`` for no budget); ``max_n`` is the trial's n. The rule is replayed on the cached pool
  (:func:`fusion_dspy.adaptive.replay`): where the candidates agree no aggregation call is made,

and scores it on the examples: the mean task metric and the mean tokens per example (sampling plus
aggregation). Two objectives:

- ``pareto``: maximise the metric, minimise tokens (``directions=["maximize", "minimize"]``). Optuna
  cannot prune multi-objective trials, so every trial runs on all examples; the caches below keep a
  repeated or overlapping trial cheap instead.
- ``budget``: maximise the metric subject to a token budget (mean tokens per example). Over-budget
  trials are infeasible: the sampler is told through ``constraints_func``, and their value is
  ``metric - 1`` (below any feasible trial, as metrics are in 0..1). Examples run in batches; after
  each batch the running metric is reported (``trial.report``) and the median pruner stops poor
  trials; a trial whose tokens so far already exceed the budget for all examples is pruned too.

Candidates are cached on disk per teacher (:class:`~fusion_dspy.optimizers.cache.CandidateCache`): a trial with a
smaller n or fewer teachers reuses a larger pool's samples. Aggregation results are cached too
(:class:`ResultCache`), so a repeated configuration is free and costs the tokens it cost first.
The study lives in persistent storage (SQLite by default; any Optuna RDB URL), so running the same
command again adds trials to the one study.
"""

from .models import Models, ResultCache
from .report import plot_trials, write_pool
from .scoring import ConfigScore, SearchContext, evaluate_config
from .space import METHODS, PARAMETERS, Objective, SearchSpace, TrialConfig, aggregator_parameter
from .study import SearchResult, check_storage, check_study, pick, run_search, study_attrs

__all__ = [
    "METHODS",
    "PARAMETERS",
    "ConfigScore",
    "Models",
    "Objective",
    "ResultCache",
    "SearchContext",
    "SearchResult",
    "SearchSpace",
    "TrialConfig",
    "aggregator_parameter",
    "check_storage",
    "check_study",
    "evaluate_config",
    "pick",
    "plot_trials",
    "run_search",
    "study_attrs",
    "write_pool",
]
