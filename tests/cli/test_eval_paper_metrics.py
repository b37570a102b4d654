"""``eval`` measured as in the paper: Arena win rates against references (both orders, per language,
scripted judges), WMT's oracle by a chosen metric, fusion's paired gains per language."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dspy
import pytest
from typer.testing import CliRunner

from fusion_dspy.cli.main import app
from fusion_dspy.records import iter_records
from tests.fakes.openai_server import FakeOpenAIServer, chat_adapter_reply
from tests.fakes.scripted import FIXTURES, PAIRWISE, REASONING, arena_references, pair, reasoning_judge, reference_judge, scripted_translator, system

ARENA = FIXTURES / "arena"
WMT = FIXTURES / "wmt"
GEOFACTX = FIXTURES / "geofactx" / "geofact_x_test.jsonl"


@pytest.fixture(autouse=True)
def _no_response_cache():
    """Every judge call reaches the scripted server (DSPy's cache would answer repeats, across test runs too)."""
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    yield
    dspy.configure_cache()


def test_arena_win_rates_against_references_in_both_orders_per_language(tmp_path):
    data = tmp_path / "data"
    for lang in ("de", "th"):
        shutil.copytree(ARENA / f"m-arena-hard-{lang}", data / f"m-arena-hard-{lang}")
    refs = arena_references(tmp_path / "refs")
    out = tmp_path / "run"
    with FakeOpenAIServer(reply=reference_judge) as server:
        result = CliRunner().invoke(app, [
            "eval", "--task", "arena", "--data", str(data), "--references", str(refs), "--n", "2", "--methods", "greedy,bon,fusion",
            "--model", "openai/fake", "--api-base", server.api_base, "--out", str(out), "--no-progress", "--max-tokens", "64",
        ])
        judged = [pair(b) for b in server.requests if PAIRWISE in system(b)]
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    means = {(r["method"], r["language"]): r["mean"] for r in summary["rows"]}
    for method in ("greedy", "bon", "fusion"):
        assert (means[(method, "de")], means[(method, "th")], means[(method, "all")]) == (1.0, 0.0, 0.5), method
    # every answer met the reference in both positions
    assert judged and all((b, a) in judged for a, b in judged)
    assert {a for a, _ in judged if a.startswith("REF-")} == {f"REF-{r.language}-{r.uid}" for r in _examples(data)}
    rec = next(iter_records(out / "records.jsonl"))
    assert rec["config"]["judge"] == "fake"
    assert rec["config"]["task_options"] == {"references": str(refs), "reference_model": "gemini-2.5-pro"}
    assert rec["gold"]["reference"].startswith("REF-")
    assert summary["metric_label"].startswith("win rate vs gemini-2.5-pro")
    assert (out / "languages.png").stat().st_size > 0


def _examples(data: Path):
    from fusion_dspy.programs import arena

    return arena.load(data)


def test_a_judge_that_always_prefers_the_first_position_ties_everything(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(ARENA / "m-arena-hard-de", data / "m-arena-hard-de")
    refs = arena_references(tmp_path / "refs")

    def first_position(body: dict, index: int) -> str:
        if PAIRWISE in system(body):
            return json.dumps({"comparison": "A reads first", "verdict": "[[A>>B]]"})
        return chat_adapter_reply(body, index)

    with FakeOpenAIServer(reply=first_position) as server:
        result = CliRunner().invoke(app, [
            "eval", "--task", "arena", "--data", str(data), "--references", str(refs), "--n", "2", "--methods", "greedy,fusion",
            "--model", "openai/fake", "--api-base", server.api_base, "--out", str(tmp_path / "run"), "--no-progress",
        ])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert {r["mean"] for r in summary["rows"]} == {0.5}


def test_the_judge_is_a_pool_member_or_a_model_string_and_checked_before_any_server(tmp_path, monkeypatch):
    monkeypatch.setattr("fusion_dspy.cli.eval.open_pool", lambda *a, **k: (_ for _ in ()).throw(AssertionError("pool opened")))
    pool = tmp_path / "pool.yaml"
    pool.write_text("model_list:\n  - model_name: a\n    litellm_params: {model: openai/a, api_base: http://127.0.0.1:9/v1}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", "--task", "arena", "--data", str(ARENA / "m-arena-hard-de"), "--pool", str(pool),
                                      "--judge", "gpt4"])
    assert "neither a model of the pool (a) nor a LiteLLM model string" in str(result.exception)
    result = CliRunner().invoke(app, ["eval", "--task", "mgsm", "--data", str(ARENA / "m-arena-hard-de"), "--references", str(pool)])
    assert "task 'mgsm' has no option 'references'" in str(result.exception)


def test_judge_role_of_the_pool_and_the_judge_option(tmp_path):
    from fusion_dspy.eval import roles_from_pool
    from fusion_dspy.lm import load_pool

    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(
        "model_list:\n"
        "  - model_name: a\n    litellm_params: {model: openai/a, api_base: http://127.0.0.1:9/v1}\n"
        "  - model_name: j\n    litellm_params: {model: openai/j, api_base: http://127.0.0.1:9/v1}\n"
        "fusion_dspy: {judge: j}\n", encoding="utf-8")
    pool = load_pool(pool_file)
    assert pool.teachers == ("a",) and pool.judge_name == "j"  # a judge is no teacher
    assert roles_from_pool(pool, max_tokens=32).judge_lm.model == "openai/j"
    roles = roles_from_pool(pool, max_tokens=32, judge="hosted_vllm/big", judge_api_base="http://127.0.0.1:8/v1")
    assert (roles.judge_name, roles.judge_lm.model, roles.judge_lm.kwargs["temperature"]) == ("hosted_vllm/big", "hosted_vllm/big", 0.0)
    assert roles_from_pool(pool, max_tokens=32, judge="a").judge_name == "a"


def test_wmt_oracle_by_a_chosen_metric_and_fusions_paired_gains_per_language(tmp_path):
    data = tmp_path / "wmt"
    data.mkdir()
    for f in ("en-de_DE.jsonl", "en-ko_KR.jsonl"):
        shutil.copy(WMT / f, data / f)
    out = tmp_path / "run"
    with FakeOpenAIServer(reply=scripted_translator) as server:
        result = CliRunner().invoke(app, [
            "eval", "--task", "wmt", "--data", str(data), "--oracle-metric", "bleu", "--n", "2", "--methods", "greedy,bon,fusion,oracle",
            "--model", "openai/fake", "--api-base", server.api_base, "--out", str(out), "--no-progress", "--limit", "2",
        ])
    assert result.exit_code == 0, result.output
    records = list(iter_records(out / "records.jsonl"))
    assert len(records) == 4 and all(r["config"]["task_options"] == {"oracle_metric": "bleu"} for r in records)
    assert "judge" not in records[0]["config"]  # chrF++ and BLEU call no judge
    for rec in records:
        oracle = rec["methods"]["oracle"]
        assert oracle["selection"]["index"] == 1 and oracle["score"] == 1.0  # picked by BLEU, reported by chrF++
        assert rec["methods"]["fusion"]["score"] == 1.0 and rec["methods"]["greedy"]["score"] < 1.0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    gains = {(d["versus"], d["language"]): d for d in summary["deltas"]}
    assert set(gains) == {(m, lang) for m in ("greedy", "bon", "oracle") for lang in ("en-de_DE", "en-ko_KR", "all")}
    assert gains[("oracle", "all")]["mean"] == 0.0 and gains[("oracle", "all")]["count"] == 4
    for lang in ("en-de_DE", "en-ko_KR"):
        greedy = [r for r in records if r["language"] == lang]
        expected = sum(1.0 - r["methods"]["greedy"]["score"] for r in greedy) / len(greedy)
        assert abs(gains[("greedy", lang)]["mean"] - expected) < 1e-9 and gains[("greedy", lang)]["mean"] > 0
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "## Fusion's gain per language" in md and "| oracle | 2 | all | +0.000 |" in md
    assert summary["metric_label"] == "chrF++ (sentence, 0..1)"
    for png in ("deltas.png", "languages.png"):
        assert (out / png).stat().st_size > 0


def test_geofactx_reasoning_grades_are_parsed_recorded_and_averaged(tmp_path):
    rows = GEOFACTX.read_text(encoding="utf-8").splitlines()
    data = tmp_path / "geo.jsonl"
    data.write_text("\n".join(rows[:3]) + "\n", encoding="utf-8")  # English, Hindi, Japanese
    out = tmp_path / "run"
    with FakeOpenAIServer(reply=reasoning_judge) as server:
        result = CliRunner().invoke(app, [
            "eval", "--task", "geofactx", "--data", str(data), "--judge-reasoning", "--n", "2", "--methods", "greedy,fusion",
            "--model", "openai/fake", "--api-base", server.api_base, "--out", str(out), "--no-progress",
        ])
        graded = [b for b in server.requests if REASONING in system(b)]
    assert result.exit_code == 0, result.output
    records = {r["language"]: r for r in iter_records(out / "records.jsonl")}
    assert records["en"]["config"]["task_options"] == {"judge_reasoning": True} and records["en"]["config"]["judge"] == "fake"
    assert records["en"]["methods"]["fusion"]["metrics"] == {"reasoning": 1.0}
    assert records["hi"]["methods"]["greedy"]["metrics"] == {"reasoning": 0.25}
    assert records["ja"]["methods"]["fusion"]["metrics"] == {"reasoning": None}  # no readable grade: no score
    assert all(r["methods"]["fusion"]["status"] == "ok" for r in records.values())  # the accuracy metric stands
    # one grade per answer, and the unreadable one retried once
    assert len(graded) == 2 * 2 + 2 * 2
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    rows = {(r["method"], r["language"]): r for r in summary["rows"]}
    assert rows[("fusion", "en")]["metrics"]["reasoning"] == {"mean": 1.0, "count": 1}
    assert rows[("fusion", "all")]["metrics"]["reasoning"] == {"mean": 0.625, "count": 2}
    assert "metrics" not in rows[("fusion", "ja")]
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "| reasoning |" in md and "0.625 (2)" in md
