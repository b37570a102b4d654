"""The report of a contribution analysis: a table (CSV, Markdown), bar charts, one HTML example, a summary.

Written by ``fusion-dspy analyze`` and by ``fusion-dspy reproduce contributions|positions``: the
sources chart is the paper's Fig. 6 (fused characters by teacher beside Best-of-N's selections), the
positions chart its position-bias figures (Figs. 7, 11).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from fusion_dspy.analysis.html_view import colours_for, render_html
from fusion_dspy.analysis.shares import Analysis
from fusion_dspy.types import json_text

OUTPUT_FILES = ("contributions.csv", "contributions.md", "sources.png", "positions.png", "example.html", "summary.json")


def write_report(result: Analysis, out: str | Path) -> dict[str, Path]:
    """Write the table (CSV, Markdown), bar charts, example HTML and summary JSON; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    agg = result.aggregate
    paths = {name: out / name for name in OUTPUT_FILES}
    rows = _table_rows(result)
    with paths["contributions.csv"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["group", "name", "records", "mean_share", "char_share"])
        writer.writeheader()
        writer.writerows(rows)
    paths["contributions.md"].write_text(_markdown(result, rows), encoding="utf-8")
    _bar_charts(result, paths["sources.png"], paths["positions.png"])
    if result.example is not None:
        paths["example.html"].write_text(render_html(result.example), encoding="utf-8")
    else:
        paths["example.html"].write_text(
            "<!DOCTYPE html><html><body><p>No record had a fusion to show.</p></body></html>\n", encoding="utf-8"
        )
    summary = {
        "records_file": result.path,
        "field": result.field,
        "matcher": result.backend,
        "seconds": round(result.seconds, 3),
        "example_id": result.example.id if result.example else None,
        **agg.to_dict(),
    }
    paths["summary.json"].write_text(json_text(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return paths


def _table_rows(result: Analysis) -> list[dict[str, Any]]:
    """One flat table: group is source / position / bon_source / bon_position."""
    agg = result.aggregate
    rows: list[dict[str, Any]] = []
    for r in agg.source_rows():
        rows.append(
            {
                "group": "source",
                "name": r["name"],
                "records": r["records"],
                "mean_share": _r(r["mean_share"]),
                "char_share": _r(r["char_share"]),
            }
        )
    for r in agg.position_rows():
        rows.append(
            {
                "group": "position",
                "name": str(r["position"]),
                "records": r["records"],
                "mean_share": _r(r["mean_share"]),
                "char_share": _r(r["char_share"]),
            }
        )
    for r in agg.bon_source_rows():
        rows.append(
            {
                "group": "bon_source",
                "name": r["name"],
                "records": r["selected"],
                "mean_share": _r(r["share"]),
                "char_share": "",
            }
        )
    for r in agg.bon_position_rows():
        rows.append(
            {
                "group": "bon_position",
                "name": str(r["position"]),
                "records": r["selected"],
                "mean_share": _r(r["share"]),
                "char_share": "",
            }
        )
    return rows


def _r(x: float) -> float:
    return round(x, 6)


def _markdown(result: Analysis, rows: list[dict[str, Any]]) -> str:
    agg = result.aggregate
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(agg.skipped.items())) or "none"
    lines = [
        "# Contribution analysis",
        "",
        f"Records file `{result.path}`, field `{result.field}`: {agg.analysed} of {agg.records} records "
        f"analysed ({agg.fused_chars} fused characters); not analysed: {skipped}. Matching: {result.backend}.",
        "",
        "## Fused characters by source",
        "",
        "Mean share averages each record's share (0 where a source is absent); char share weighs records by length. "
        "Records: where the source was a candidate (for multiple and unmatched: where there are any).",
        "",
        "| source | records | mean share | char share |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {_md(r['name'])} | {r['records']} | {r['mean_share']:.1%} | {r['char_share']:.1%} |"
        for r in rows
        if r["group"] == "source"
    ]
    lines += [
        "",
        f"## Fused characters by shown position ({agg.positioned_records} records with a shown order)",
        "",
        "| position | records | mean share | char share |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['name']} | {r['records']} | {r['mean_share']:.1%} | {r['char_share']:.1%} |"
        for r in rows
        if r["group"] == "position"
    ]
    lines += [
        "",
        f"## Best-of-N selections ({agg.bon_records} records)",
        "",
        "| source | selected | share |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {_md(r['name'])} | {r['records']} | {r['mean_share']:.1%} |" for r in rows if r["group"] == "bon_source"
    ]
    lines += ["", "| shown position | selected | share |", "|---:|---:|---:|"]
    lines += [f"| {r['name']} | {r['records']} | {r['mean_share']:.1%} |" for r in rows if r["group"] == "bon_position"]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _bar_charts(result: Analysis, sources_png: Path, positions_png: Path) -> None:
    """Sources chart (fusion char share beside BoN selection share) and positions chart (same)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = result.aggregate
    src_rows = agg.source_rows()
    bon = {r["name"]: r["share"] for r in agg.bon_source_rows()}
    names = [r["name"] for r in src_rows] + [n for n in bon if n not in {r["name"] for r in src_rows}]
    fused = {r["name"]: r["char_share"] for r in src_rows}
    colours = colours_for([n for n in names if n not in ("multiple", "unmatched")])
    _grouped_bars(
        plt,
        sources_png,
        [str(n) for n in names],
        [fused.get(n, 0.0) for n in names],
        [bon.get(n, 0.0) for n in names],
        bar_colours=[colours.get(n, "#cccccc") for n in names],
        title="Fused characters by source vs Best-of-N selections",
        xlabel="source",
    )
    pos = {r["position"]: r["char_share"] for r in agg.position_rows()}
    bon_pos = {r["position"]: r["share"] for r in agg.bon_position_rows()}
    ps = sorted(set(pos) | set(bon_pos))
    _grouped_bars(
        plt,
        positions_png,
        [str(p) for p in ps],
        [pos.get(p, 0.0) for p in ps],
        [bon_pos.get(p, 0.0) for p in ps],
        bar_colours=None,
        title="Position bias: share by shown position",
        xlabel="shown position",
    )


def _grouped_bars(
    plt: Any,
    path: Path,
    labels: list[str],
    fused: list[float],
    bon: list[float],
    *,
    bar_colours: list[str] | None,
    title: str,
    xlabel: str,
) -> None:
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2), 4))
    x = range(len(labels))
    width = 0.4
    kw = {"color": bar_colours, "edgecolor": "black"} if bar_colours else {"edgecolor": "black"}
    ax.bar([i - width / 2 for i in x], fused, width, label="fusion: share of characters", **kw)
    if any(bon):
        ax.bar(
            [i + width / 2 for i in x],
            bon,
            width,
            label="Best-of-N: share of selections",
            color="#999999",
            edgecolor="black",
            hatch="//",
        )
    ax.set_xticks(list(x), labels, rotation=30 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
    ax.set_ylabel("share")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.set_ylim(0, max([*fused, *bon, 0.01]) * 1.15)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
