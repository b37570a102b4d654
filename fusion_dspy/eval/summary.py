"""Summaries of evaluation records: metric with a bootstrap CI, tokens, corpus scores, scaling plot.

Everything is recomputed from the records file in one streaming pass, so the summary always
describes every finished example (also those of earlier, interrupted runs). Groups are
(method, N, language), plus ``all`` languages; greedy is one sample, reported at N=1.
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

from fusion_dspy.aggregate.registry import AGGREGATORS, BASELINES, method_order
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


def summarize(records_path: str | Path, task: Task | None = None, *, seed: int = 0) -> dict[str, Any]:
    """The summary of every record in ``records_path`` (one streaming pass).

    Returns a dict with ``rows`` (one per method, N and language: mean, 95% CI, count, tokens per
    example, fallbacks, failures and corpus metrics), and ``counts``.
    """
    from fusion_dspy.records import failures_path, read_records

    path = Path(records_path)
    groups: dict[tuple[str, int, str], _Group] = defaultdict(_Group)
    corpus = task is not None and task.corpus_metrics is not None
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
    if len(configs) > 1:
        logger.warning("%s holds records of %d different configurations; the summary pools them", path, len(configs))

    rows = []
    for (method, k, lang), g in sorted(groups.items(), key=lambda kv: (method_order(kv[0][0]), kv[0][1], kv[0][2] != ALL, kv[0][2])):
        count = len(g.scores)
        mean = sum(g.scores) / count if count else math.nan
        low, high = bootstrap_ci(g.scores, seed=seed)
        row: dict[str, Any] = {
            "method": method, "n": k, "language": lang, "mean": mean, "ci_low": low, "ci_high": high, "count": count,
            "tokens_prompt": g.prompt / count if count else 0.0,
            "tokens_completion": g.completion / count if count else 0.0,
            "tokens_total": (g.prompt + g.completion) / count if count else 0.0,
            "fallbacks": g.fallbacks, "failed": g.failed,
            "framed": g.framed,
            "length_ratio": statistics.median(g.length_ratios) if g.length_ratios else math.nan,
        }
        if g.extra:  # further metrics (a reasoning judge): mean and how many answers it scored
            row["metrics"] = {name: {"mean": sum(v) / len(v), "count": len(v)} for name, v in sorted(g.extra.items())}
        if corpus and g.examples:
            try:
                row["corpus"] = {name: float(v) for name, v in task.corpus_metrics(g.examples, g.predictions).items()}
            except Exception as exc:  # noqa: BLE001 - a corpus metric that fails is reported, not fatal
                logger.warning("corpus metrics failed for %s N=%d %s: %s", method, k, lang, exc)
                row["corpus"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        rows.append(row)

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
    }


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


def write_summary(records_path: str | Path, task: Task | None, out_dir: str | Path, *, seed: int = 0, bad_rows: int = 0) -> dict[str, Any]:
    """Write ``summary.json``, ``summary.md`` and (several N) ``scaling.png``; return the summary."""
    out = Path(out_dir)
    summary = summarize(records_path, task, seed=seed)
    summary["counts"]["bad_rows_skipped"] = bad_rows
    paths = {"summary_json": out / "summary.json", "summary_md": out / "summary.md"}
    if len(summary["ns"]) > 1:
        paths["scaling_png"] = out / "scaling.png"
        plot_scaling(summary, paths["scaling_png"])
    if summary["languages"]:
        paths["languages_png"] = out / "languages.png"
        plot_languages(summary, paths["languages_png"])
    summary["files"] = {k: str(v) for k, v in paths.items()}
    paths["summary_md"].write_text(to_markdown(summary), encoding="utf-8")
    paths["summary_json"].write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=_nan_safe) + "\n", encoding="utf-8")
    return summary


def _nan_safe(value: Any) -> Any:
    return str(value)


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def to_markdown(summary: Mapping[str, Any]) -> str:
    """The summary as a Markdown table (one row per method, N and language)."""
    corpus_names = sorted({name for r in summary["rows"] for name in (r.get("corpus") or {}) if name != "error"})
    extra_names = sorted({name for r in summary["rows"] for name in (r.get("metrics") or {})})
    c = summary["counts"]
    head = ["method", "N", "language", "metric", "95% CI", "count", "prompt tok/ex", "completion tok/ex", "total tok/ex",
            "length / candidates", "framing", "fallbacks", "failed"]
    lines = [
        f"# Evaluation of {summary.get('task') or 'task'}",
        "",
        f"Examples done: {c['done']}; failed (retried on rerun): {c['failed']}; bad rows skipped: {c.get('bad_rows_skipped', 0)}.",
        "Metric: the task's per-example metric, mean with a 95% percentile bootstrap interval "
        f"({summary['bootstrap']['resamples']} resamples): {summary.get('metric_label') or 'metric'}. "
        "Tokens per example include the shared sampling.",
        "Length / candidates: the median of each answer's length over its candidates' median length. Framing: answers "
        "that contain prompt scaffolding (field markers, {placeholders}, field lists, fence tags).",
        "",
        "| " + " | ".join(head + corpus_names + extra_names) + " |",
        "|" + "---|" * (len(head) + len(corpus_names) + len(extra_names)),
    ]
    for r in summary["rows"]:
        cells = [r["method"], str(r["n"]), r["language"], _fmt(r["mean"]), f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]",
                 str(r["count"]), f"{r['tokens_prompt']:.0f}", f"{r['tokens_completion']:.0f}", f"{r['tokens_total']:.0f}",
                 _fmt(r.get("length_ratio", math.nan), 2), str(r.get("framed", 0)), str(r["fallbacks"]), str(r["failed"])]
        corpus = r.get("corpus") or {}
        cells += [_fmt(corpus[name], 2) if name in corpus else "" for name in corpus_names]
        extra = r.get("metrics") or {}
        cells += [f"{_fmt(extra[name]['mean'])} ({extra[name]['count']})" if name in extra else "" for name in extra_names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_scaling(summary: Mapping[str, Any], path: str | Path, language: str = ALL) -> Path:
    """Metric against N per method with 95% CI bands (greedy as a flat line), as the paper's Fig. 5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["rows"] if r["language"] == language and r["count"]]
    ns = summary["ns"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for method in summary["methods"]:
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["n"])
        if not mine:
            continue
        if method in BASELINES:
            r = mine[0]
            ax.axhline(r["mean"], color="grey", linestyle="--", linewidth=1, label=method)
            ax.axhspan(r["ci_low"], r["ci_high"], color="grey", alpha=0.1)
            continue
        xs = [r["n"] for r in mine]
        # a method that looks at gold labels (the oracle) is a ceiling, drawn dotted
        style = {"linestyle": ":"} if method in AGGREGATORS and not AGGREGATORS[method].deployable else {}
        (line,) = ax.plot(xs, [r["mean"] for r in mine], marker="o", label=method, **style)
        ax.fill_between(xs, [r["ci_low"] for r in mine], [r["ci_high"] for r in mine], color=line.get_color(), alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns)
    ax.set_xticklabels([str(k) for k in ns])
    ax.set_xlabel("N (candidates)")
    ax.set_ylabel(f"{summary.get('task') or 'task'}: {summary.get('metric_label') or 'metric'}")
    ax.set_title(f"Test-time scaling ({language}, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_languages(summary: Mapping[str, Any], path: str | Path, *, n: int | None = None, methods: Sequence[str] | None = None,
                   title: str | None = None) -> Path:
    """The metric per language (and over all), one bar per method at pool size ``n`` (default the
    largest; greedy at 1), with 95% CIs: the layout of the paper's per-language figures (Figs. 1, 16)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = n or max(summary["ns"] or [1])
    wanted = [m for m in (methods or summary["methods"]) if m in summary["methods"]]
    languages = [*summary["languages"], ALL] if len(summary["languages"]) > 1 else list(summary["languages"])
    by = {(r["method"], r["language"]): r for r in summary["rows"]
          if r["count"] and r["n"] == (1 if r["method"] in BASELINES else n)}
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(languages) * max(1, len(wanted)) / 2 + 2), 4.2), dpi=120)
    width = 0.8 / max(1, len(wanted))
    for i, method in enumerate(wanted):
        xs, means, errs = [], [], [[], []]
        for j, lang in enumerate(languages):
            r = by.get((method, lang))
            if r is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            means.append(r["mean"])
            errs[0].append(max(0.0, r["mean"] - r["ci_low"]))
            errs[1].append(max(0.0, r["ci_high"] - r["mean"]))
        if xs:
            hatch = "//" if method in AGGREGATORS and not AGGREGATORS[method].deployable else None
            ax.bar(xs, means, width, yerr=errs, capsize=2, label=method, hatch=hatch, edgecolor="black", linewidth=0.5)
    ax.set_xticks(range(len(languages)), languages)
    ax.set_xlabel("language")
    ax.set_ylabel(summary.get("metric_label") or "metric")
    ax.set_title(title or f"{summary.get('task') or 'task'} by language (N={n}; greedy N=1; 95% CI)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


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
