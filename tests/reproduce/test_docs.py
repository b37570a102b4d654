"""The README's commands table and the paper-to-command map of docs/reproduce.md name the same experiments and figures."""

from __future__ import annotations

import re
from pathlib import Path

from fusion_dspy.reproduce import EXPERIMENTS

REPO = Path(__file__).resolve().parents[2]


def _map_rows() -> dict[str, str]:
    """``experiment -> the paper's figure`` from the map table of docs/reproduce.md."""
    text = (REPO / "docs" / "reproduce.md").read_text(encoding="utf-8")
    return {name: paper.strip() for paper, name in re.findall(r"^\| ([^|]+?) \| `([a-z-]+)` \|", text, flags=re.M)}


def _readme_row() -> dict[str, str]:
    """``experiment -> figure`` from the reproduce row of the README's commands table."""
    row = next(line for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines() if line.startswith("| `fusion-dspy reproduce"))
    return {name: paper for name, paper in re.findall(r"`([a-z-]+)` \(((?:Figs?\.|Table) [^)]*)\)", row)}


def test_the_map_in_docs_reproduce_lists_every_experiment_with_its_figure():
    assert _map_rows() == {name: e.mirrors for name, e in EXPERIMENTS.items()}


def test_the_readme_commands_table_agrees_with_the_map():
    readme = _readme_row()
    assert set(readme) == set(EXPERIMENTS)
    for name, paper in readme.items():
        assert paper.replace(", oracle", " (oracle)") == EXPERIMENTS[name].mirrors, name
