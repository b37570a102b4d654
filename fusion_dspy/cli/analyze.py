"""``fusion-dspy analyze``: where fused answers come from (contribution analysis, appendix F).

Writes into ``--out``: ``contributions.csv`` and ``contributions.md`` (per source, per shown
position, Best-of-N selection shares), ``sources.png`` and ``positions.png`` (bar charts),
``example.html`` (one fused answer coloured by source) and ``summary.json``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from fusion_dspy.analysis import OUTPUT_FILES, analyze_records, write_report

__all__ = ["OUTPUT_FILES", "analyze", "register"]


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze)


def analyze(
    records: Path = typer.Argument(..., help="Records file (.jsonl) written by `synth` or `eval`."),
    out: Path = typer.Option(..., "--out", help="Folder for the table, charts, HTML example and summary."),
    field: str | None = typer.Option(
        None, "--field", help="Output field to analyse (default: the only one, else answer/response)."
    ),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Processes for matching (default: CPU count)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Analyse only the first K records."),
    example: str | None = typer.Option(
        None, "--example", help="Record id to show in example.html (default: the first)."
    ),
) -> None:
    """Attribute every fused character to a source; position bias; Best-of-N selection shares."""
    result = analyze_records(records, field_name=field, workers=workers, limit=limit, example_id=example)
    write_report(result, out)
    agg = result.aggregate
    if agg.analysed == 0:
        typer.echo(
            f"warning: no record of {records} had a fusion to analyse "
            f"(not analysed: {dict(agg.skipped) or 'no records'})",
            err=True,
        )
    typer.echo(
        f"{agg.analysed} of {agg.records} records analysed in {result.seconds:.1f} s "
        f"({result.backend}); report in {out}"
    )
    for row in agg.source_rows():
        typer.echo(f"  {row['name']:<30} {row['char_share']:7.1%}")


