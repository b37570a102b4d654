"""eval summaries in tokens (issue 17): tokens per correct answer, the Pareto front, the scaling plot in tokens."""

from __future__ import annotations

import json

import pytest

from fusion_dspy.eval.report import write_summary
from fusion_dspy.eval.summary import pareto_front, summarize


def _usage(tokens: int) -> dict:
    return {"total": {"prompt_tokens": tokens // 2, "completion_tokens": tokens - tokens // 2}}


def _records(tmp_path, scores: dict[tuple[str, int], list[float]], tokens: dict[tuple[str, int], int]):
    """Two examples; methods at N=2 (by_n) and N=4 (methods) with the given scores and tokens."""
    lines = []
    for i in range(2):
        by_n = {"2": {m: {"outputs": {"answer": "a"}, "score": scores[(m, 2)][i], "usage": _usage(tokens[(m, 2)]), "status": "ok"}
                      for m in ("majority", "fusion", "oracle")}}
        methods = {m: {"outputs": {"answer": "a"}, "score": scores[(m, 4)][i], "usage": _usage(tokens[(m, 4)]), "status": "ok"}
                   for m in ("majority", "fusion", "oracle")}
        lines.append(json.dumps({"id": str(i), "example_id": str(i), "language": "en", "n_max": 4, "methods": methods, "by_n": by_n,
                                 "candidates": {"inputs": {"question": "q"}, "output_fields": ["answer"], "candidates": []}}))
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


SCORES = {("majority", 2): [1.0, 0.0], ("majority", 4): [1.0, 0.0], ("fusion", 2): [1.0, 0.0], ("fusion", 4): [1.0, 1.0],
          ("oracle", 2): [1.0, 1.0], ("oracle", 4): [1.0, 1.0]}
TOKENS = {("majority", 2): 200, ("majority", 4): 400, ("fusion", 2): 300, ("fusion", 4): 600, ("oracle", 2): 200, ("oracle", 4): 400}


def test_tokens_per_correct_answer_and_the_pareto_front(tmp_path):
    summary = summarize(_records(tmp_path, SCORES, TOKENS))
    rows = {(r["method"], r["n"]): r for r in summary["rows"] if r["language"] == "all"}
    assert rows[("fusion", 4)]["tokens_per_correct"] == pytest.approx(600.0)  # 1,200 tokens, 2 correct
    assert rows[("majority", 4)]["tokens_per_correct"] == pytest.approx(800.0)  # 800 tokens, 1 correct
    # majority@2 (0.5 at 200) and fusion@4 (1.0 at 600) are the front; majority@4 and fusion@2 are beaten; the oracle is a ceiling
    assert [(p["method"], p["n"]) for p in summary["pareto"]] == [("majority", 2), ("fusion", 4)]


def test_no_correct_answer_gives_no_tokens_per_correct():
    rows = [{"method": "fusion", "n": 2, "language": "all", "count": 1, "mean": 0.0, "tokens_total": 10.0},
            {"method": "bon", "n": 2, "language": "all", "count": 1, "mean": 0.0, "tokens_total": 10.0}]
    assert [p["method"] for p in pareto_front(rows)] == ["fusion", "bon"]  # equal points do not beat each other


def test_write_summary_draws_the_scaling_plot_in_tokens(tmp_path):
    summary = write_summary(_records(tmp_path, SCORES, TOKENS), None, tmp_path)
    png = tmp_path / "scaling_tokens.png"
    assert summary["files"]["scaling_tokens_png"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "tok/correct" in (tmp_path / "summary.md").read_text(encoding="utf-8")
