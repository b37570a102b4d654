"""An experiment's table, written as Markdown (with its settings) and CSV (the same columns, for plots elsewhere)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Table:
    """Rows under named columns; a value is a number (shown with ``digits``), a string, or None (``-``).

    Attributes:
        title: the heading (which figure or table of the paper it mirrors).
        columns: the column names, in order.
        rows: one mapping per row, keyed by column name.
        notes: sentences printed under the table (what the numbers are, what is missing and why).
    """

    title: str
    columns: Sequence[str]
    rows: list[Mapping[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    digits: int = 1

    def add(self, **values: Any) -> None:
        unknown = set(values) - set(self.columns)
        if unknown:
            raise ValueError(f"unknown columns {sorted(unknown)}; the table has {list(self.columns)}")
        self.rows.append(values)

    def cell(self, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if isinstance(value, float):
            return f"{value:.{self.digits}f}"
        return str(value).replace("|", "\\|")

    def markdown(self, settings: Mapping[str, Any]) -> str:
        lines = [f"# {self.title}", "", "Settings:", ""]
        lines += [f"- {k}: {_setting(v)}" for k, v in settings.items()]
        lines += ["", "| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(self.cell(row.get(c)) for c in self.columns) + " |" for row in self.rows]
        if self.notes:
            lines += [""] + [f"{note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def write(self, folder: Path, settings: Mapping[str, Any], stem: str = "table") -> tuple[Path, Path]:
        """Write ``<stem>.md`` and ``<stem>.csv`` into ``folder``; return their paths."""
        md, csv_path = folder / f"{stem}.md", folder / f"{stem}.csv"
        md.write_text(self.markdown(settings), encoding="utf-8")
        with csv_path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(self.columns))
            writer.writeheader()
            for row in self.rows:
                writer.writerow({c: _csv_value(row.get(c)) for c in self.columns})
        return md, csv_path


def _setting(value: Any) -> str:
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_setting(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "-"
    return "-" if value is None else str(value)


def _csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return round(value, 6) if isinstance(value, float) else value
