"""The figures of experiments that span several runs: fusor size (Fig. 4) and synthetic-data quality (Table 2).

The figures of one evaluation (scaling, per language, paired gains) are :mod:`fusion_dspy.eval.report`'s,
the contribution charts :mod:`fusion_dspy.analysis.report`'s.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fusor_size(fusors: Sequence[str], series: dict[str, tuple[str | None, Sequence[tuple[float, float, float]]]], path: Path, *,
                    ylabel: str, title: str) -> Path:
    """One line per method over the models in the order given (smallest first), each point a mean with its 95% CI.

    ``series`` maps a label (``Fusion-of-N (it fuses)``) to its colour and ``(mean, ci_low, ci_high)`` per model.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(fusors) + 2.5), 4.2), dpi=120)
    for i, (label, (colour, points)) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * 0.06 for x in range(len(fusors))]  # side by side, so equal points stay visible
        means = [p[0] for p in points]
        errs = [[max(0.0, p[0] - p[1]) for p in points], [max(0.0, p[2] - p[0]) for p in points]]
        ax.errorbar(xs, means, yerr=errs, marker="o", capsize=3, label=label, color=colour)
        for x, m in zip(xs, means, strict=True):
            ax.annotate(f"{m:.1f}", (x, m), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xticks(range(len(fusors)), list(fusors), rotation=20 if len(fusors) > 3 else 0)
    ax.set_xlim(-0.5, len(fusors) - 0.5)
    ax.set_xlabel("model (as fusor / as rater), in the order given")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_bars(labels: Sequence[str], values: Sequence[tuple[float, float, float]], path: Path, *, ylabel: str, title: str,
              colours: Sequence[str] | None = None, reference: float | None = None) -> Path:
    """One bar per label with its 95% CI and its value written on it; ``reference`` draws a dashed line (a 50% tie)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.4, 1.6 * len(labels) + 1.5), 4.8), dpi=120)
    xs = list(range(len(labels)))
    means = [v[0] for v in values]
    errs = [[max(0.0, v[0] - v[1]) for v in values], [max(0.0, v[2] - v[0]) for v in values]]
    bars = ax.bar(xs, means, 0.6, yerr=errs, capsize=3, color=list(colours) if colours else None, edgecolor="black", linewidth=0.5)
    for bar, m in zip(bars, means, strict=True):
        ax.annotate(f"{m:.1f}", (bar.get_x() + bar.get_width() / 2, m), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(xs, [textwrap.fill(label, 18) for label in labels], fontsize=8)  # wrapped, so long labels never overlap
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(title, 60))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
