"""Every experiment of the paper that needs no training, each one function: its runs, its figure, its table.

Each function takes the :class:`~fusion_dspy.reproduce.runs.Settings` and the experiment's folder,
makes its runs through ``eval``/``synth``/``analyze`` (:mod:`~fusion_dspy.reproduce.runs`), draws its
figure with their plotting code, and returns an :class:`Outcome` (the table, the figures, what was
used). Numbers in tables are x100 (win rates in %, chrF++ and COMET in points), as in the paper.

Why one file over 400 lines: the eight experiments read best side by side (same shape: runs, figure,
table), and each is short.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fusion_dspy.aggregate.registry import BON, FUSION, GREEDY, ORACLE
from fusion_dspy.errors import ConfigurationError
from fusion_dspy.eval.summary import ALL, bootstrap_ci
from fusion_dspy.reproduce.runs import Settings, default_ns, eval_run, synth_run
from fusion_dspy.reproduce.tables import Table

logger = logging.getLogger(__name__)

NAMES = {GREEDY: "Greedy", BON: "Best-of-N", FUSION: "Fusion-of-N", ORACLE: "Oracle"}
SCALE = 100.0


@dataclass
class Outcome:
    """What an experiment produced."""

    table: Table
    figures: list[Path]
    used: dict[str, Any] = field(default_factory=dict)
    runs: list[Path] = field(default_factory=list)


def _row(summary: Mapping[str, Any], method: str, language: str, n: int) -> Mapping[str, Any] | None:
    k = 1 if method == GREEDY else n
    return next((r for r in summary["rows"] if r["method"] == method and r["language"] == language and r["n"] == k and r["count"]), None)


def _mean(summary: Mapping[str, Any], method: str, language: str, n: int) -> float | None:
    r = _row(summary, method, language, n)
    return None if r is None else r["mean"] * SCALE


def _delta(summary: Mapping[str, Any], versus: str, language: str) -> Mapping[str, Any] | None:
    return next((d for d in summary["deltas"] if d["versus"] == versus and d["language"] == language), None)


def _ci(d: Mapping[str, Any] | None) -> str | None:
    return None if d is None else f"[{d['ci_low'] * SCALE:+.1f}, {d['ci_high'] * SCALE:+.1f}]"


def _languages(summary: Mapping[str, Any]) -> list[str]:
    return [*summary["languages"], ALL] if len(summary["languages"]) > 1 else list(summary["languages"])


def _task_for(s: Settings, default: str) -> str:
    return s.task or default


# --- test time (one model sampled N times at temperature 0.7) ----------------------------------------


def scaling(s: Settings, folder: Path) -> Outcome:
    """Fig. 5: each method's metric as N grows, on one sampled pool per example (prefixes for smaller N)."""
    from fusion_dspy.eval.report import plot_scaling
    from fusion_dspy.task import load_task

    task_name = _task_for(s, "wmt")
    data = s.data_path(f"{task_name}-one")
    ns = default_ns(s, "1,2,4,8,16")
    if len(ns) < 2:
        raise ConfigurationError(f"the scaling experiment needs several pool sizes (--n 1,2,4,8,16), got {ns[0]}")
    methods = (GREEDY, BON, FUSION) + ((ORACLE,) if load_task(task_name).has_gold else ())
    summary, run = eval_run(s, f"scaling-{task_name}", task_name, data, ns=ns, methods=methods)
    label = summary["metric_label"]
    figure = plot_scaling(summary, folder / "fig5_scaling.png")
    table = Table(f"Fig. 5: test-time scaling on {task_name} ({label} x100)",
                  ["method", "N", "score", "95% CI", "examples", "tokens / example"])
    for r in summary["rows"]:
        if r["language"] == ALL and r["count"]:
            table.add(**{"method": NAMES.get(r["method"], r["method"]), "N": r["n"], "score": r["mean"] * SCALE,
                         "95% CI": f"[{r['ci_low'] * SCALE:.1f}, {r['ci_high'] * SCALE:.1f}]", "examples": r["count"],
                         "tokens / example": round(r["tokens_total"])})
    table.notes.append("Greedy is one sample at temperature 0 (drawn at N=1). Each larger N extends the same candidates.")
    return Outcome(table, [figure], {"task": task_name, "data": str(data), "N": list(ns), "temperature": 0.7,
                                     "metric": label, "methods": list(methods)}, [run])


def _arena_note(summary: Mapping[str, Any], s: Settings) -> list[str]:
    if s.references is None:
        return ["No --references: each win rate is against the run's own greedy answer (greedy scores 50), not against a "
                "reference model's answers as in the paper (Gemini 2.5 Pro); give --references in Arena-Hard's model_answer layout."]
    return []


def arena_languages(s: Settings, folder: Path) -> Outcome:
    """Figs. 1, 16: Arena win rate per language, Fusion-of-N vs Best-of-N, on the same candidates."""
    from fusion_dspy.eval.report import plot_languages

    data = s.data_path("arena")
    (n,) = default_ns(s)[-1:]
    summary, run = eval_run(s, "arena", "arena", data, ns=(n,), methods=(GREEDY, BON, FUSION))
    label = summary["metric_label"]
    figure = plot_languages(summary, folder / "fig1_arena_languages.png", n=n, methods=(BON, FUSION),
                            title=f"Fig. 1: {label} by language (N={n}, 95% CI)")
    table = Table(f"Figs. 1, 16: Arena-Hard {label} (%) by language, N={n}",
                  ["language", "Greedy", "Best-of-N", "Fusion-of-N", "fusion - BoN", "95% CI", "examples"])
    for lang in _languages(summary):
        d = _delta(summary, BON, lang)
        table.add(**{"language": lang, "Greedy": _mean(summary, GREEDY, lang, n), "Best-of-N": _mean(summary, BON, lang, n),
                     "Fusion-of-N": _mean(summary, FUSION, lang, n), "fusion - BoN": None if d is None else d["mean"] * SCALE,
                     "95% CI": _ci(d), "examples": None if d is None else d["count"]})
    table.notes += _arena_note(summary, s) + ["Every comparison is judged in both orders; a tie counts half."]
    return Outcome(table, [figure], {"data": str(data), "N": n, "temperature": 0.7, "metric": label,
                                     "references": str(s.references) if s.references else "none (against greedy)"}, [run])


def _wmt(s: Settings) -> tuple[dict[str, Any], Path, int]:
    """The WMT run both WMT experiments read (the same folder: the second finds it done)."""
    (n,) = default_ns(s)[-1:]
    summary, run = eval_run(s, "wmt", "wmt", s.data_path("wmt"), ns=(n,), methods=(GREEDY, BON, FUSION, ORACLE))
    return summary, run, n


def _oracle_by(s: Settings) -> str:
    return s.oracle_metric or s.metric or "chrf"


def wmt_languages(s: Settings, folder: Path) -> Outcome:
    """Fig. 2: WMT24++ per language pair, Fusion-of-N's gain over Best-of-N and over the oracle."""
    from fusion_dspy.eval.report import plot_deltas

    summary, run, n = _wmt(s)
    label = summary["metric_label"]
    shown = {**summary, "deltas": [d for d in summary["deltas"] if d["versus"] in (BON, ORACLE)]}
    figure = plot_deltas(shown, folder / "fig2_wmt_gains.png", title=f"Fig. 2: fusion's gain per language pair (N={n}, paired, 95% CI)")
    table = Table(f"Fig. 2: WMT24++ {label} x100 by language pair, N={n}",
                  ["language pair", "Greedy", "Best-of-N", "Fusion-of-N", "Oracle", "fusion - BoN", "fusion - oracle", "examples"])
    for lang in _languages(summary):
        bon, oracle = _delta(summary, BON, lang), _delta(summary, ORACLE, lang)
        table.add(**{"language pair": lang, "Greedy": _mean(summary, GREEDY, lang, n), "Best-of-N": _mean(summary, BON, lang, n),
                     "Fusion-of-N": _mean(summary, FUSION, lang, n), "Oracle": _mean(summary, ORACLE, lang, n),
                     "fusion - BoN": None if bon is None else bon["mean"] * SCALE,
                     "fusion - oracle": None if oracle is None else oracle["mean"] * SCALE, "examples": None if bon is None else bon["count"]})
    table.notes.append(f"The oracle is the candidate the {_oracle_by(s)} metric rates best against the reference, reported by {label}.")
    return Outcome(table, [figure], {"data": str(s.data_path("wmt")), "N": n, "temperature": 0.7, "metric": label,
                                     "oracle selects by": _oracle_by(s)}, [run])


def wmt_oracle(s: Settings, folder: Path) -> Outcome:
    """Fusion vs the oracle on WMT24++ (the paper: fusion beats the XCOMET oracle for de, ru, zh)."""
    from fusion_dspy.eval.report import plot_languages

    summary, run, n = _wmt(s)
    label = summary["metric_label"]
    figure = plot_languages(summary, folder / "fig2_wmt_oracle.png", n=n, methods=(ORACLE, FUSION),
                            title=f"Fusion-of-N vs the oracle (by {_oracle_by(s)}), N={n}, 95% CI")
    table = Table(f"Fusion-of-N vs the oracle on WMT24++ ({label} x100), N={n}",
                  ["language pair", "Oracle", "Fusion-of-N", "fusion - oracle", "95% CI", "fusion beats the oracle", "examples"])
    for lang in _languages(summary):
        d = _delta(summary, ORACLE, lang)
        verdict = None if d is None else ("yes" if d["ci_low"] > 0 else "no" if d["ci_high"] < 0 else "not resolved (CI spans 0)")
        table.add(**{"language pair": lang, "Oracle": _mean(summary, ORACLE, lang, n), "Fusion-of-N": _mean(summary, FUSION, lang, n),
                     "fusion - oracle": None if d is None else d["mean"] * SCALE, "95% CI": _ci(d),
                     "fusion beats the oracle": verdict, "examples": None if d is None else d["count"]})
    table.notes.append(f"The oracle selects by {_oracle_by(s)}; the paper's is XCOMET-XL (--oracle-metric comet --comet-model ...).")
    return Outcome(table, [figure], {"data": str(s.data_path("wmt")), "N": n, "metric": label, "oracle selects by": _oracle_by(s)}, [run])


def fusor_size(s: Settings, folder: Path) -> Outcome:
    """Fig. 4: each model as the fusor (Fusion-of-N) and as the rater (Best-of-N) of the same candidates."""
    from fusion_dspy.eval.report import method_colour
    from fusion_dspy.reproduce.figures import plot_fusor_size

    pool = s.pool
    fusors = s.fusors or tuple(n for n in pool.endpoints if n not in (pool.judge, pool.reward_model))
    unknown = [f for f in fusors if f not in pool.endpoints]
    if unknown:
        raise ConfigurationError(f"--fusors {', '.join(unknown)}: not in the pool ({', '.join(pool.endpoints)})")
    task_name = _task_for(s, "wmt")
    data = s.data_path(f"{task_name}-one")
    (n,) = default_ns(s)[-1:]
    summaries, runs = [], []
    for name in fusors:
        summary, run = eval_run(s, f"fusor-{name}", task_name, data, ns=(n,), methods=(BON, FUSION),
                                pool=s.test_time_pool(fusor=name, rater=name))
        summaries.append(summary)
        runs.append(run)
    label = summaries[0]["metric_label"]
    same = _identical_candidates(runs)
    points = {f"{NAMES[m]} ({'it fuses' if m == FUSION else 'it rates'})": (method_colour(m), [
        tuple(v * SCALE for v in _stats(_row(sm, m, ALL, n))) for sm in summaries]) for m in (FUSION, BON)}
    figure = plot_fusor_size(list(fusors), points, folder / "fig4_fusor_size.png", ylabel=f"{label} x100",
                             title=f"Fig. 4: the model as fusor vs as rater ({task_name}, N={n})")
    table = Table(f"Fig. 4: fusor size on {task_name} ({label} x100), N={n}",
                  ["model", "model string", "Best-of-N (it rates)", "Fusion-of-N (it fuses)", "fusion - BoN", "95% CI", "examples"])
    for name, sm in zip(fusors, summaries, strict=True):
        d = _delta(sm, BON, ALL)
        table.add(**{"model": name, "model string": pool.endpoints[name].model, "Best-of-N (it rates)": _mean(sm, BON, ALL, n),
                     "Fusion-of-N (it fuses)": _mean(sm, FUSION, ALL, n), "fusion - BoN": None if d is None else d["mean"] * SCALE,
                     "95% CI": _ci(d), "examples": None if d is None else d["count"]})
    table.notes.append(f"Every model saw the same candidates (the first teacher's, through the response cache): identical in {same}.")
    table.notes.append("List the models smallest first with --fusors; the paper finds fusion needs a large fusor, while small models rate well.")
    return Outcome(table, [figure], {"task": task_name, "data": str(data), "N": n, "models compared": list(fusors), "metric": label}, runs)


def _stats(row: Mapping[str, Any] | None) -> tuple[float, float, float]:
    return (float("nan"),) * 3 if row is None else (row["mean"], row["ci_low"], row["ci_high"])


def _identical_candidates(runs: list[Path]) -> str:
    """How many examples had the very same candidates in every run (``k of n examples``)."""
    from fusion_dspy.records import read_records

    seen: list[dict[str, list[Any]]] = []
    for run in runs:
        seen.append({r["example_id"]: [c.get("outputs") for c in r["candidates"]["candidates"]] for r in read_records(run / "records.jsonl")})
    common = set.intersection(*(set(d) for d in seen)) if seen else set()
    same = sum(1 for ex in common if all(d[ex] == seen[0][ex] for d in seen))
    return f"{same} of {len(common)} examples"


# --- synthetic data (every teacher sampled at temperature 0.3) -----------------------------------------


def _synth_all(s: Settings) -> Path:
    return synth_run(s, "synth-teachers", s.pool, (BON, FUSION))


def synth_quality(s: Settings, folder: Path) -> Outcome:
    """Table 2: the win rate of each synthetic dataset against reference answers, judged in both orders."""
    from fusion_dspy.eval.report import METHOD_COLOURS
    from fusion_dspy.judge import PairwiseJudge
    from fusion_dspy.reproduce.figures import plot_bars
    from fusion_dspy.synth.quality import load_reference_answers, score_quality

    pool = s.pool
    prompts = s.data_path("prompts")
    ref_path = s.prompt_references or prompts
    ref_field = "chosen" if s.prompt_references is None else "answer"
    references = load_reference_answers(ref_path, field=ref_field)
    judge_ep = pool.endpoint_for(s.judge, api_base=s.judge_api_base)
    judge = PairwiseJudge(lm=judge_ep.lm(max_tokens=s.max_tokens, temperature=0.0))
    k = len(pool.teachers) * pool.samples_per_teacher
    datasets: list[tuple[str, Path, tuple[str, ...]]] = [("all teachers", _synth_all(s), (BON, FUSION))]
    if len(pool.teachers) > 1:
        single = replace(pool, teachers=(pool.teachers[0],), samples_per_teacher=k)
        datasets.append((f"{pool.teachers[0]} x{k}", synth_run(s, "synth-single", single, (BON, FUSION)), (BON, FUSION)))
    alone = replace(pool, teachers=(pool.fusor_name,), samples_per_teacher=1)
    datasets.insert(0, (f"fusor alone ({pool.fusor_name}, 1 sample)", synth_run(s, "synth-fusor", alone, (BON,)), (BON,)))
    ref_name = f"{ref_path.name}:{ref_field}"
    table = Table("Table 2: quality of the synthetic data, win rate (%) against reference answers",
                  ["data", "method", "win rate", "95% CI", "rows judged", "rows"])
    labels, values = [], []
    for label, records, methods in datasets:
        result = score_quality(records, references, judge=judge, methods=methods, concurrency=s.concurrency, reference_name=ref_name)
        for m in methods:
            scores = result["methods"].get(m, {}).get("scores") or []
            low, high = bootstrap_ci(scores, seed=s.seed) if scores else (float("nan"),) * 2
            mean = sum(scores) / len(scores) * SCALE if scores else float("nan")
            shown = "the sample" if len(methods) == 1 else NAMES[m]
            table.add(**{"data": label, "method": shown, "win rate": mean, "95% CI": f"[{low * SCALE:.1f}, {high * SCALE:.1f}]",
                         "rows judged": len(scores), "rows": result["rows"]})
            labels.append(f"{label}: {shown}")
            values.append((mean, low * SCALE, high * SCALE))
    colours = [METHOD_COLOURS[GREEDY] if "alone" in lab else METHOD_COLOURS[BON] if NAMES[BON] in lab else METHOD_COLOURS[FUSION]
               for lab in labels]
    figure = plot_bars(labels, values, folder / "table2_synth_quality.png", ylabel="win rate vs reference (%)", reference=50.0,
                       title="Table 2: synthetic data judged against references (both orders)", colours=colours)
    if len(pool.teachers) == 1:
        table.notes.append("The pool has one teacher, so its single-teacher row would repeat the all-teachers row and is left out.")
    if s.prompt_references is None:
        table.notes.append(f"References: the prompts' own 'chosen' answers ({prompts.name}), standing in for the paper's Gemini 2.5 Flash.")
    return Outcome(table, [figure], {"prompts": str(prompts), "references": ref_name, "teacher temperature": pool.temperature,
                                     "candidates per prompt": k, "judge": judge_ep.name}, [r for _, r, _ in datasets])


def _analysis(s: Settings, folder: Path) -> tuple[Any, Path]:
    from fusion_dspy.analysis import analyze_records, write_report

    records = _synth_all(s)
    result = analyze_records(records, workers=1, progress=False)
    write_report(result, folder / "analysis")
    return result, records


def contributions(s: Settings, folder: Path) -> Outcome:
    """Fig. 6: how many of the fused characters come from each teacher (appendix F), beside Best-of-N's picks."""
    result, records = _analysis(s, folder)
    figure = folder / "fig6_contributions.png"
    shutil.copyfile(folder / "analysis" / "sources.png", figure)
    agg = result.aggregate
    bon = {r["name"]: r["share"] for r in agg.bon_source_rows()}
    table = Table(f"Fig. 6: share of fused characters by source ({agg.analysed} fused answers, {agg.fused_chars} characters)",
                  ["source", "fused characters (%)", "mean share per answer (%)", "Best-of-N selections (%)", "answers"])
    for r in agg.source_rows():
        table.add(**{"source": r["name"], "fused characters (%)": r["char_share"] * SCALE, "mean share per answer (%)": r["mean_share"] * SCALE,
                     "Best-of-N selections (%)": bon.get(r["name"], 0.0) * SCALE if r["name"] not in ("multiple", "unmatched") else None,
                     "answers": r["records"]})
    table.notes.append("Each fused character goes to the source with the longest matching block covering it (difflib); "
                       "'multiple': several tie, 'unmatched': written new.")
    return Outcome(table, [figure], {"records": str(records), "matcher": result.backend}, [records.parent])


def positions(s: Settings, folder: Path) -> Outcome:
    """Figs. 7, 11: position bias: the fused characters by the position a candidate was shown in."""
    result, records = _analysis(s, folder)
    figure = folder / "fig7_positions.png"
    shutil.copyfile(folder / "analysis" / "positions.png", figure)
    agg = result.aggregate
    bon = {r["position"]: r["share"] for r in agg.bon_position_rows()}
    table = Table(f"Figs. 7, 11: fused characters by shown position ({agg.positioned_records} fused answers with a shown order)",
                  ["shown position", "fused characters (%)", "mean share per answer (%)", "Best-of-N selections (%)", "answers"])
    for r in agg.position_rows():
        table.add(**{"shown position": r["position"], "fused characters (%)": r["char_share"] * SCALE,
                     "mean share per answer (%)": r["mean_share"] * SCALE, "Best-of-N selections (%)": bon.get(r["position"], 0.0) * SCALE,
                     "answers": r["records"]})
    table.notes.append("Candidates are shown to the fusor in a seeded shuffled order; position 1 is shown first. "
                       "Without a position bias every position gets an equal share.")
    return Outcome(table, [figure], {"records": str(records), "matcher": result.backend}, [records.parent])
