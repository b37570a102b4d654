"""What a search leaves behind: the metric-against-tokens plot and the chosen configuration as a pool file.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.lm import model_list_of

from .models import Models
from .space import Objective, TrialConfig, aggregator_parameter

logger = logging.getLogger(__name__)


def plot_trials(study: Any, objective: Objective, chosen: Any | None, path: Path) -> Path | None:
    """A PNG of metric against tokens per example: every trial, the Pareto front, the chosen one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    done = [
        t for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("metric") is not None and t.user_attrs.get("tokens_per_example") is not None
    ]
    if not done:
        return None
    front = _front([t for t in done if t.state == optuna.trial.TrialState.COMPLETE])
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    styles = (("COMPLETE", dict(c="tab:blue", alpha=0.5, label="trial")), ("PRUNED", dict(c="tab:gray", marker="x", alpha=0.6, label="pruned")))
    for state, style in styles:
        pts = [t for t in done if t.state.name == state]
        if pts:
            ax.scatter([t.user_attrs["tokens_per_example"] for t in pts], [t.user_attrs["metric"] for t in pts], **style)
    if front:
        ax.plot([t.user_attrs["tokens_per_example"] for t in front], [t.user_attrs["metric"] for t in front],
                "-o", c="tab:red", label="Pareto front")
    if chosen is not None:
        ax.scatter([chosen.user_attrs["tokens_per_example"]], [chosen.user_attrs["metric"]], s=180, facecolors="none",
                   edgecolors="black", linewidths=2, label=f"chosen (trial {chosen.number})")
        p = chosen.params
        label = f"n={p.get('n')} {p.get('method')} t={p.get('temperature')}"
        point = (chosen.user_attrs["tokens_per_example"], chosen.user_attrs["metric"])
        ax.annotate(label, point, textcoords="offset points", xytext=(8, -14), fontsize=8)
    if objective.kind == "budget":
        ax.axvline(objective.budget, ls="--", c="tab:orange", label=f"budget {objective.budget:g}")
    ax.set_xlabel("tokens per example (sampling + aggregation)")
    ax.set_ylabel("metric")
    ax.set_title(f"{study.study_name}: {len(done)} trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _front(trials: list[Any]) -> list[Any]:
    """Non-dominated trials (metric up, tokens down), sorted by tokens."""
    pts = sorted(trials, key=lambda t: (t.user_attrs["tokens_per_example"], -t.user_attrs["metric"]))
    front, best = [], -math.inf
    for t in pts:
        if t.user_attrs["metric"] > best:
            front.append(t)
            best = t.user_attrs["metric"]
    return front


def write_pool(path: str | Path, config: TrialConfig, models: Models, trial: Any = None, **provenance: Any) -> Path:
    """Write ``config`` as a pool YAML (LiteLLM model_list + ``fusion_dspy:`` roles) for ``--pool``.

    The method and the search's figures go under a top-level ``optimized:`` section, which
    :func:`fusion_dspy.load_pool` ignores. Keys are written as their ``os.environ/NAME`` reference; a
    key the pool gave literally is left out (with a warning), never copied into the file.
    """
    import yaml

    used = list(config.teachers) + ([config.aggregator] if config.aggregator and config.aggregator not in config.teachers else [])
    missing = [n for n in used if n not in models.endpoints]
    if missing:
        raise ConfigurationError(f"cannot write a pool file: no endpoint for {', '.join(missing)}")
    roles: dict[str, Any] = {"teachers": list(config.teachers), "samples_per_teacher": config.n, "temperature": config.temperature}
    parameter = aggregator_parameter(config.method)
    if parameter:  # the pool file's role names are the search's parameter names (fusor, rater)
        roles[parameter] = config.aggregator
    optimized: dict[str, Any] = {"method": config.method, "n": config.n, **provenance}
    if config.adaptive is not None:  # FusionOfN(..., adaptive=AdaptiveN(**optimized["adaptive"])) reproduces it
        optimized["adaptive"] = config.adaptive.to_dict()
    if trial is not None:
        attrs = trial.user_attrs
        optimized.update({"trial": trial.number, "metric": attrs.get("metric"), "tokens_per_example": attrs.get("tokens_per_example")})
    endpoints = [models.endpoints[n] for n in used]
    literal = [ep.name for ep in endpoints if any(k is not None and not k.reference for _, _, k in ep.deployments())]
    if literal:
        logger.warning("%s: the api_key of %s is not written (it was given literally); add it as "
                       "api_key: os.environ/NAME", path, ", ".join(literal))
    doc = {"model_list": model_list_of(endpoints), "fusion_dspy": roles, "optimized": optimized}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return p
