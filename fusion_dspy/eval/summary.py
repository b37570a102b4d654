"""Summaries of evaluation records: metric with a bootstrap CI, tokens, corpus scores, fusion's paired gains.

Everything is recomputed from the records file in one streaming pass, so the summary always
describes every finished example (also those of earlier, interrupted runs). Groups are
(method, N, language), plus ``all`` languages; greedy is one sample, reported at N=1. The files
(JSON, Markdown, figures) are written by :mod:`~fusion_dspy.eval.report`.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fusion_dspy.aggregate.registry import AGGREGATORS, BASELINES, FUSION, method_order
from fusion_dspy.substance import answer_text, framing_found
from fusion_dspy.task import Task

logger = logging.getLogger(__name__)

ALL = "all"
BOOTSTRAP_RESAMPLES = 1000


def method_results(rec: Mapping[str, Any]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(method, N, result)`` of an evaluation record: the full pool's, then each smaller N's."""
    n_max = int(rec.get("n_max") or 0)
    for method, result in (rec.get("methods") or {}).items():
        if isinstance(result, Mapping):
            yield method, (1 if method in BASELINES else n_max), dict(result)
    for k, results in (rec.get("by_n") or {}).items():
        for method, result in (results or {}).items():
            if isinstance(result, Mapping):
                yield method, int(k), dict(result)


def adaptive_results(rec: Mapping[str, Any]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(method, max_n, result)`` of an evaluation record's adaptive replay (``eval --adaptive``)."""
    for k, results in (rec.get("adaptive") or {}).items():
        for method, result in (results or {}).items():
            if isinstance(result, Mapping):
                yield method, int(k), dict(result)


def bootstrap_ci(values: Sequence[float], *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (seeded, so summaries are reproducible)."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1 or np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // x.size)  # bounded memory for large runs
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)))


@dataclass
class _Group:
    scores: list[float] = field(default_factory=list)
    prompt: int = 0
    completion: int = 0
    failed: int = 0
    fallbacks: int = 0
    framed: int = 0
    length_ratios: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    samples: list[int] = field(default_factory=list)  # adaptive: samples drawn per example
    skipped: int = 0  # adaptive: examples whose aggregation call was skipped (agreement)
    stops: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: list[Any] = field(default_factory=list)
    predictions: list[Any] = field(default_factory=list)

    def add(self, result: Mapping[str, Any], field_name: str | None = None, candidate_chars: float = 0.0) -> None:
        if result.get("status") == "failed" or result.get("score") is None:
            self.failed += 1
            return
        self.scores.append(float(result["score"]))
        for name, value in (result.get("metrics") or {}).items():
            if value is not None:
                self.extra[name].append(float(value))
        answer = answer_text(result.get("outputs") or {}, field_name)
        if framing_found(answer):
            self.framed += 1
        if candidate_chars:
            self.length_ratios.append(len(answer.strip()) / candidate_chars)
        total = ((result.get("usage") or {}).get("total")) or {}
        self.prompt += int(total.get("prompt_tokens") or 0)
        self.completion += int(total.get("completion_tokens") or 0)
        if result.get("fallback"):
            self.fallbacks += 1
        trace = result.get("adaptive")
        if isinstance(trace, Mapping):
            self.samples.append(int(trace.get("samples") or 0))
            self.skipped += bool(trace.get("aggregation_skipped"))
            self.stops[str(trace.get("stop"))] += 1


def summarize(records_path: str | Path, task: Task | None = None, *, seed: int = 0) -> dict[str, Any]:
    """The summary of every record in ``records_path`` (one streaming pass).

    Returns a dict with ``rows`` (one per method, N and language: mean, 95% CI, count, tokens per
    example, fallbacks, failures and corpus metrics), ``adaptive`` (the same per method, ``max_n``
    and language of an ``--adaptive`` run, with samples drawn, aggregation calls skipped, stop
    reasons and tokens saved against the fixed N), ``pareto`` and ``counts``.
    """
    from fusion_dspy.records import failures_path, read_records

    path = Path(records_path)
    groups: dict[tuple[str, int, str], _Group] = defaultdict(_Group)
    adaptive_groups: dict[tuple[str, int, str], _Group] = defaultdict(_Group)
    corpus = task is not None and task.corpus_metrics is not None
    paired: dict[tuple[str, str], list[float]] = defaultdict(list)
    n_paired = 0
    done = 0
    configs: set[str] = set()
    ids: set[str] = set()
    for rec in read_records(path):
        done += 1
        ids.add(rec["id"])
        configs.add(json.dumps(rec.get("config"), sort_keys=True, default=str))
        language = str(rec.get("language") or "-")
        example = _example(rec) if corpus else None
        field_name = task.answer_field if task is not None else None
        candidate_chars = _candidate_chars(rec, field_name)
        for method, k, result in method_results(rec):
            for lang in (language, ALL):
                g = groups[(method, k, lang)]
                g.add(result, field_name, candidate_chars)
                if corpus and lang != ALL and result.get("status") != "failed":
                    g.examples.append(example)
                    g.predictions.append(_prediction(result.get("outputs")))
        for method, k, result in adaptive_results(rec):
            for lang in (language, ALL):
                adaptive_groups[(method, k, lang)].add(result, field_name, candidate_chars)
        for other, delta in _fusion_gains(rec):
            n_paired = max(n_paired, int(rec.get("n_max") or 0))
            for lang in (language, ALL):
                paired[(other, lang)].append(delta)
    if len(configs) > 1:
        logger.warning("%s holds records of %d different configurations; the summary pools them", path, len(configs))

    rows = [_row(key, g, task if corpus else None, seed) for key, g in _ordered(groups)]
    fixed = {(r["method"], r["n"], r["language"]): r for r in rows}
    adaptive_rows = []
    for key, g in _ordered(adaptive_groups):
        row = _row(key, g, None, seed)
        row.update(samples=sum(g.samples) / len(g.samples) if g.samples else math.nan, aggregation_skipped=g.skipped,
                   stops=dict(g.stops), adaptive=True)
        same = fixed.get(key)
        # against the same method at fixed N = max_n (on the same examples when none failed)
        row["tokens_saved"] = same["tokens_total"] - row["tokens_total"] if same and same["count"] == row["count"] else None
        row["fixed_mean"] = same["mean"] if same else None
        adaptive_rows.append(row)

    failed_ids: set[str] = set()
    fail_log = failures_path(SimpleNamespace(path=path))  # type: ignore[arg-type] - it only reads .path
    if fail_log.exists():
        for line in fail_log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                failed_ids.add(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                continue
    fallbacks: dict[str, int] = defaultdict(int)
    method_failures: dict[str, int] = defaultdict(int)
    for row in rows:
        if row["language"] == ALL:
            fallbacks[row["method"]] += row["fallbacks"]
            method_failures[row["method"]] += row["failed"]
    deltas = []
    for (other, lang), values in sorted(paired.items(), key=lambda kv: (method_order(kv[0][0]), kv[0][1] == ALL, kv[0][1])):
        low, high = bootstrap_ci(values, seed=seed)
        deltas.append({"method": FUSION, "versus": other, "n": n_paired, "language": lang, "mean": sum(values) / len(values),
                       "ci_low": low, "ci_high": high, "count": len(values)})
    return {
        "records": str(path),
        "task": task.name if task is not None else None,
        "metric_label": (task.metric_label if task is not None else "") or "metric",
        "counts": {
            "done": done,
            "failed": len(failed_ids - ids),
            "fallbacks": dict(fallbacks),
            "method_failures": dict(method_failures),
        },
        "methods": sorted({r["method"] for r in rows}, key=method_order),
        "ns": sorted({r["n"] for r in rows if r["method"] not in BASELINES}),
        "languages": sorted({r["language"] for r in rows if r["language"] != ALL}),
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "level": 0.95, "seed": seed},
        "rows": rows,
        "deltas": deltas,
        "adaptive": adaptive_rows,
        "pareto": pareto_front([*rows, *adaptive_rows]),
    }


def _ordered(groups: Mapping[tuple[str, int, str], _Group]) -> list[tuple[tuple[str, int, str], _Group]]:
    return sorted(groups.items(), key=lambda kv: (method_order(kv[0][0]), kv[0][1], kv[0][2] != ALL, kv[0][2]))


def _row(key: tuple[str, int, str], g: _Group, task: Task | None, seed: int) -> dict[str, Any]:
    """One summary row: the metric with its CI, tokens per example and per correct answer, and the answers' health."""
    method, k, lang = key
    count = len(g.scores)
    mean = sum(g.scores) / count if count else math.nan
    low, high = bootstrap_ci(g.scores, seed=seed)
    row: dict[str, Any] = {
        "method": method, "n": k, "language": lang, "mean": mean, "ci_low": low, "ci_high": high, "count": count,
        "tokens_prompt": g.prompt / count if count else 0.0,
        "tokens_completion": g.completion / count if count else 0.0,
        "tokens_total": (g.prompt + g.completion) / count if count else 0.0,
        # tokens spent per unit of metric: per correct answer for 0/1 metrics (None when nothing scored)
        "tokens_per_correct": (g.prompt + g.completion) / sum(g.scores) if sum(g.scores) > 0 else None,
        "fallbacks": g.fallbacks, "failed": g.failed,
        "framed": g.framed,
        "length_ratio": statistics.median(g.length_ratios) if g.length_ratios else math.nan,
    }
    if g.extra:  # further metrics (a reasoning judge): mean and how many answers it scored
        row["metrics"] = {name: {"mean": sum(v) / len(v), "count": len(v)} for name, v in sorted(g.extra.items())}
    if task is not None and task.corpus_metrics is not None and g.examples:
        try:
            row["corpus"] = {name: float(v) for name, v in task.corpus_metrics(g.examples, g.predictions).items()}
        except Exception as exc:  # noqa: BLE001 - a corpus metric that fails is reported, not fatal
            logger.warning("corpus metrics failed for %s N=%d %s: %s", method, k, lang, exc)
            row["corpus"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return row


def pareto_front(rows: Sequence[Mapping[str, Any]], language: str = ALL) -> list[dict[str, Any]]:
    """The (method, N) points of ``language`` no other point beats on both metric and tokens per example
    (adaptive rows, marked ``adaptive``, compete with the fixed ones; their N is their ``max_n``).

    A point is dominated when another has at least its mean with at most its tokens, and is strictly
    better in one of them; oracle-like methods (not deployable) are left out. Sorted by tokens.
    """

    points = [r for r in rows if r["language"] == language and r["count"] and not math.isnan(r["mean"])
              and (r["method"] not in AGGREGATORS or AGGREGATORS[r["method"]].deployable)]

    def beaten(r: Mapping[str, Any]) -> bool:
        return any(o["mean"] >= r["mean"] and o["tokens_total"] <= r["tokens_total"]
                   and (o["mean"] > r["mean"] or o["tokens_total"] < r["tokens_total"]) for o in points)

    front = [{"method": r["method"], "n": r["n"], "mean": r["mean"], "tokens_total": r["tokens_total"], "adaptive": bool(r.get("adaptive"))}
             for r in points if not beaten(r)]
    return sorted(front, key=lambda p: (p["tokens_total"], -p["mean"]))


def _fusion_gains(rec: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """``(other method, fusion's score minus its score)`` on one example, at the record's largest N
    (greedy: its one sample): the paired differences behind the paper's per-language gains."""
    methods = rec.get("methods") or {}
    fusion = methods.get(FUSION) or {}
    if fusion.get("status") == "failed" or fusion.get("score") is None:
        return
    for other, result in methods.items():
        if other != FUSION and isinstance(result, Mapping) and result.get("status") != "failed" and result.get("score") is not None:
            yield other, float(fusion["score"]) - float(result["score"])


def _candidate_chars(rec: Mapping[str, Any], field_name: str | None) -> float:
    """The median length of the record's candidate answers (what a method's answer is compared with)."""
    cands = (rec.get("candidates") or {}).get("candidates") or []
    lengths = [len(answer_text(c.get("outputs") or {}, field_name).strip()) for c in cands if not c.get("error")]
    return float(statistics.median(lengths)) if lengths else 0.0


def _example(rec: Mapping[str, Any]) -> Any:
    import dspy

    inputs = dict(rec.get("inputs") or {})
    fields = {**(rec.get("gold") or {}), **inputs, "id": rec.get("example_id"), "language": rec.get("language")}
    return dspy.Example(**fields).with_inputs(*inputs)


def _prediction(outputs: Any) -> Any:
    import dspy

    return dspy.Prediction(**(outputs if isinstance(outputs, Mapping) else {}))


class RunningMetrics:
    """Running mean of each method (at the largest N) for the progress bar."""

    def __init__(self, methods: Sequence[str], n_max: int):
        self.methods = tuple(methods)
        self.n_max = n_max
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, rec: Mapping[str, Any]) -> None:
        for method, k, result in method_results(rec):
            if k in (self.n_max, 1) and (method in BASELINES or k == self.n_max) and result.get("score") is not None:
                self.sums[method] += float(result["score"])
                self.counts[method] += 1

    def postfix(self) -> str:
        parts = [f"{m}={self.sums[m] / self.counts[m]:.3f}" for m in self.methods if self.counts[m]]
        return " ".join(parts)
