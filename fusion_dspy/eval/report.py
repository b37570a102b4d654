"""The files of an evaluation's summary: ``summary.json``, ``summary.md`` and the figures, in the
paper's layouts: scaling over N (Fig. 5), the metric per language and method (Figs. 1, 16), and
fusion's paired gains per language (Fig. 2). Each figure takes a summary
(:func:`~fusion_dspy.eval.summary.summarize`) and writes one PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fusion_dspy.aggregate.registry import AGGREGATORS, BASELINES, BON, FUSION, GREEDY, MAJORITY, ORACLE
from fusion_dspy.eval.summary import ALL, summarize
from fusion_dspy.task import Task
from fusion_dspy.types import json_text


def write_summary(records_path: str | Path, task: Task | None, out_dir: str | Path, *, seed: int = 0, bad_rows: int = 0) -> dict[str, Any]:
    """Write ``summary.json``, ``summary.md`` and (several N) ``scaling.png``; return the summary."""
    out = Path(out_dir)
    summary = summarize(records_path, task, seed=seed)
    summary["counts"]["bad_rows_skipped"] = bad_rows
    paths = {"summary_json": out / "summary.json", "summary_md": out / "summary.md"}
    if len(summary["ns"]) > 1:
        paths["scaling_png"] = out / "scaling.png"
        plot_scaling(summary, paths["scaling_png"])
    if len(summary["ns"]) > 1 or summary.get("adaptive"):
        paths["scaling_tokens_png"] = out / "scaling_tokens.png"
        plot_scaling_tokens(summary, paths["scaling_tokens_png"])
    if summary["languages"]:
        paths["languages_png"] = out / "languages.png"
        plot_languages(summary, paths["languages_png"])
    if summary["deltas"]:
        paths["deltas_png"] = out / "deltas.png"
        plot_deltas(summary, paths["deltas_png"])
    summary["files"] = {k: str(v) for k, v in paths.items()}
    paths["summary_md"].write_text(to_markdown(summary), encoding="utf-8")
    paths["summary_json"].write_text(json_text(summary, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return summary


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def to_markdown(summary: Mapping[str, Any]) -> str:
    """The summary as a Markdown table (one row per method, N and language)."""
    corpus_names = sorted({name for r in summary["rows"] for name in (r.get("corpus") or {}) if name != "error"})
    extra_names = sorted({name for r in summary["rows"] for name in (r.get("metrics") or {})})
    c = summary["counts"]
    head = ["method", "N", "language", "metric", "95% CI", "count", "prompt tok/ex", "completion tok/ex", "total tok/ex",
            "tok/correct", "length / candidates", "framing", "fallbacks", "failed"]
    lines = [
        f"# Evaluation of {summary.get('task') or 'task'}",
        "",
        f"Examples done: {c['done']}; failed (retried on rerun): {c['failed']}; bad rows skipped: {c.get('bad_rows_skipped', 0)}.",
        "Metric: the task's per-example metric, mean with a 95% percentile bootstrap interval "
        f"({summary['bootstrap']['resamples']} resamples): {summary.get('metric_label') or 'metric'}. "
        "Tokens per example include the shared sampling; tok/correct is tokens over the summed metric (per correct answer for 0/1 metrics).",
        "Length / candidates: the median of each answer's length over its candidates' median length. Framing: answers "
        "that contain prompt scaffolding (field markers, {placeholders}, field lists, fence tags).",
        "",
        "| " + " | ".join(head + corpus_names + extra_names) + " |",
        "|" + "---|" * (len(head) + len(corpus_names) + len(extra_names)),
    ]
    for r in summary["rows"]:
        cells = [r["method"], str(r["n"]), r["language"], _fmt(r["mean"]), f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]",
                 str(r["count"]), f"{r['tokens_prompt']:.0f}", f"{r['tokens_completion']:.0f}", f"{r['tokens_total']:.0f}",
                 _fmt(r.get("tokens_per_correct"), 0),
                 _fmt(r.get("length_ratio", math.nan), 2), str(r.get("framed", 0)), str(r["fallbacks"]), str(r["failed"])]
        corpus = r.get("corpus") or {}
        cells += [_fmt(corpus[name], 2) if name in corpus else "" for name in corpus_names]
        extra = r.get("metrics") or {}
        cells += [f"{_fmt(extra[name]['mean'])} ({extra[name]['count']})" if name in extra else "" for name in extra_names]
        lines.append("| " + " | ".join(cells) + " |")
    adaptive = [r for r in summary.get("adaptive") or [] if r["language"] == ALL]
    if adaptive:
        lines += ["", "## Adaptive N (replayed on the same pools; all languages)", "",
                  "Each aggregation as adaptive sampling would have run it up to max N: rounds of the pool's candidates, "
                  "stopping when they agree (then no aggregation call). Tokens saved: against the same method at fixed N = max N.", "",
                  "| method | max N | metric | 95% CI | fixed-N metric | count | samples/ex | aggregation skipped | stops | total tok/ex | "
                  "tokens saved/ex | tok/correct |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in adaptive:
            stops = ", ".join(f"{k} {v}" for k, v in sorted(r.get("stops", {}).items()))
            saved = r.get("tokens_saved")
            lines.append(f"| {r['method']} | {r['n']} | {_fmt(r['mean'])} | [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | "
                         f"{_fmt(r.get('fixed_mean'))} | {r['count']} | {_fmt(r.get('samples'), 2)} | {r.get('aggregation_skipped', 0)} | "
                         f"{stops} | {r['tokens_total']:.0f} | {'-' if saved is None else f'{saved:.0f}'} | {_fmt(r.get('tokens_per_correct'), 0)} |")
    if summary.get("deltas"):
        lines += ["", "## Fusion's gain per language (paired: the same examples, largest N)", "",
                  "| versus | N | language | fusion minus it | 95% CI | count |", "|---|---|---|---|---|---|"]
        for d in summary["deltas"]:
            lines.append(f"| {d['versus']} | {d['n']} | {d['language']} | {d['mean']:+.3f} | "
                         f"[{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}] | {d['count']} |")
    return "\n".join(lines) + "\n"


#: one colour per method in every figure (greedy grey, Best-of-N blue, fusion green, oracle red)
METHOD_COLOURS = {GREEDY: "#7f7f7f", BON: "#1f77b4", FUSION: "#2ca02c", ORACLE: "#d62728", MAJORITY: "#9467bd"}


def method_colour(method: str) -> str | None:
    return METHOD_COLOURS.get(method)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scaling(summary: Mapping[str, Any], path: str | Path, language: str = ALL) -> Path:
    """Metric against N per method with 95% CI bands (greedy as a flat line), as the paper's Fig. 5."""
    plt = _pyplot()
    rows = [r for r in summary["rows"] if r["language"] == language and r["count"]]
    ns = summary["ns"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for method in summary["methods"]:
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["n"])
        if not mine:
            continue
        if method in BASELINES:
            r = mine[0]
            ax.axhline(r["mean"], color=method_colour(method) or "grey", linestyle="--", linewidth=1, label=method)
            ax.axhspan(r["ci_low"], r["ci_high"], color="grey", alpha=0.1)
            continue
        xs = [r["n"] for r in mine]
        # a method that looks at gold labels (the oracle) is a ceiling, drawn dotted
        style = {"linestyle": ":"} if method in AGGREGATORS and not AGGREGATORS[method].deployable else {}
        (line,) = ax.plot(xs, [r["mean"] for r in mine], marker="o", label=method, color=method_colour(method), **style)
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


def plot_scaling_tokens(summary: Mapping[str, Any], path: str | Path, language: str = ALL) -> Path:
    """Metric against tokens spent per example (prompt + completion, sampling and aggregation), one curve
    per method over its N (labelled), greedy as a point, each adaptive run as its own dashed curve over
    its max N; the Pareto front (metric vs tokens) drawn and circled."""
    plt = _pyplot()
    rows = [r for r in summary["rows"] if r["language"] == language and r["count"]]
    fig, ax = plt.subplots(figsize=(8.0, 4.2), dpi=120)
    for method in summary["methods"]:
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["tokens_total"])
        if not mine:
            continue
        style = {"linestyle": ":"} if method in AGGREGATORS and not AGGREGATORS[method].deployable else {}
        xs = [max(r["tokens_total"], 1.0) for r in mine]
        (line,) = ax.plot(xs, [r["mean"] for r in mine], marker="o", label=method, color=method_colour(method), **style)
        for r, x in zip(mine, xs, strict=True):
            ax.annotate(f"N={r['n']}", (x, r["mean"]), textcoords="offset points", xytext=(3, 3), fontsize=6, color=line.get_color())
    for method in summary["methods"]:
        mine = sorted((r for r in summary.get("adaptive") or [] if r["method"] == method and r["language"] == language and r["count"]),
                      key=lambda r: r["tokens_total"])
        if not mine:
            continue
        xs = [max(r["tokens_total"], 1.0) for r in mine]
        (line,) = ax.plot(xs, [r["mean"] for r in mine], marker="s", linestyle="--", label=f"{method} (adaptive)",
                          color=method_colour(method), alpha=0.8)
        for r, x in zip(mine, xs, strict=True):
            ax.annotate(f"max {r['n']}", (x, r["mean"]), textcoords="offset points", xytext=(3, -9), fontsize=6, color=line.get_color())
    front = summary.get("pareto") if language == ALL else None
    if front:
        fx, fy = [max(p["tokens_total"], 1.0) for p in front], [p["mean"] for p in front]
        ax.step(fx, fy, where="post", color="black", linewidth=0.8, alpha=0.6, label="Pareto front")
        ax.scatter(fx, fy, s=90, facecolors="none", edgecolors="black", linewidths=1.0, zorder=3)
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("tokens per example (prompt + completion, all calls)")
    ax.set_ylabel(f"{summary.get('task') or 'task'}: {summary.get('metric_label') or 'metric'}")
    ax.set_title(f"Test-time scaling in tokens ({language})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the curves fill the axes
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _plain_log_ticks(axis: Any) -> None:
    """Label a log axis with plain numbers (200, 500, 1,000, 2,000) instead of mantissa x 10^k on every minor tick."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:,.0f}"))
    axis.set_minor_formatter(NullFormatter())


def plot_languages(summary: Mapping[str, Any], path: str | Path, *, n: int | None = None, methods: Sequence[str] | None = None,
                   title: str | None = None) -> Path:
    """The metric per language (and over all), one bar per method at pool size ``n`` (default the
    largest; greedy at 1), with 95% CIs: the layout of the paper's per-language figures (Figs. 1, 16)."""
    plt = _pyplot()
    n = n or max(summary["ns"] or [1])
    wanted = [m for m in (methods or summary["methods"]) if m in summary["methods"]]
    languages = [*summary["languages"], ALL] if len(summary["languages"]) > 1 else list(summary["languages"])
    by = {(r["method"], r["language"]): r for r in summary["rows"]
          if r["count"] and r["n"] == (1 if r["method"] in BASELINES else n)}
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(languages) * max(1, len(wanted)) / 2 + 2), 4.2), dpi=120)
    width = 0.8 / max(1, len(wanted))
    for i, method in enumerate(wanted):
        xs, means, errs = _grouped_bars([by.get((method, lang)) for lang in languages], i, width)
        if xs:
            hatch = "//" if method in AGGREGATORS and not AGGREGATORS[method].deployable else None
            ax.bar(xs, means, width, yerr=errs, capsize=2, label=method, hatch=hatch, edgecolor="black", linewidth=0.5,
                   color=method_colour(method))
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


def _grouped_bars(cells: list[Mapping[str, Any] | None], i: int, width: float) -> tuple[list[float], list[float], list[list[float]]]:
    """Bar positions, heights and CI error bars of series ``i`` over the language groups (a missing cell is skipped)."""
    xs: list[float] = []
    means: list[float] = []
    errs: list[list[float]] = [[], []]
    for j, cell in enumerate(cells):
        if cell is None:
            continue
        xs.append(j - 0.4 + width * (i + 0.5))
        means.append(cell["mean"])
        errs[0].append(max(0.0, cell["mean"] - cell["ci_low"]))
        errs[1].append(max(0.0, cell["ci_high"] - cell["mean"]))
    return xs, means, errs


def plot_deltas(summary: Mapping[str, Any], path: str | Path, *, title: str | None = None) -> Path:
    """Fusion's paired gain over each other method, per language, with 95% CIs (the paper's Fig. 2:
    fusion minus Best-of-N, and minus the oracle, in the task's metric)."""
    plt = _pyplot()
    deltas = list(summary["deltas"])
    versus = list(dict.fromkeys(d["versus"] for d in deltas))
    languages = list(dict.fromkeys(d["language"] for d in deltas if d["language"] != ALL))
    if len(languages) > 1:
        languages.append(ALL)
    by = {(d["versus"], d["language"]): d for d in deltas}
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(languages) * max(1, len(versus)) / 1.5 + 2), 4.2), dpi=120)
    width = 0.8 / max(1, len(versus))
    for i, other in enumerate(versus):
        xs, means, errs = _grouped_bars([by.get((other, lang)) for lang in languages], i, width)
        if xs:
            bars = ax.bar(xs, means, width, yerr=errs, capsize=2, label=f"{deltas[0]['method']} - {other}", edgecolor="black", linewidth=0.5,
                          color=method_colour(other))
            for bar, value in zip(bars, means, strict=True):
                ax.annotate(f"{value:+.3f}", (bar.get_x() + bar.get_width() / 2, value), ha="center",
                            va="bottom" if value >= 0 else "top", fontsize=7)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(languages)), languages)
    ax.set_xlabel("language")
    ax.set_ylabel(f"difference in {summary.get('metric_label') or 'metric'}")
    n = deltas[0]["n"] if deltas else "-"
    ax.set_title(title or f"{summary.get('task') or 'task'}: fusion's gain per language (N={n}, paired, 95% CI)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
