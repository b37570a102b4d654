"""``eval`` with a judge: Arena win rates against reference answers (both orders, per language), scripted judges."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import dspy
import pytest
from typer.testing import CliRunner

from fusion_dspy.cli.main import app
from fusion_dspy.records import iter_records
from tests.fakes.openai_server import FakeOpenAIServer, chat_adapter_reply

ARENA = Path(__file__).resolve().parents[1] / "programs" / "fixtures" / "arena"
JUDGE = "Compare the two assistant responses"  # the pairwise judge's instruction (the rater's differs)
_FIELD = re.compile(r"\[\[ ## (response_a|response_b) ## \]\]\n(.*?)(?=\n\n\[\[ ## |\Z)", re.S)


@pytest.fixture(autouse=True)
def _no_response_cache():
    """Every judge call reaches the scripted server (DSPy's cache would answer repeats, across test runs too)."""
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    yield
    dspy.configure_cache()


def _system(body: dict) -> str:
    return next((str(m.get("content", "")) for m in body.get("messages") or [] if m.get("role") == "system"), "")


def _pair(body: dict) -> tuple[str, str]:
    text = str(body["messages"][-1]["content"]).split("\n\nRespond with")[0]
    fields = dict(_FIELD.findall(text))
    return fields["response_a"].strip(), fields["response_b"].strip()


def reference_judge(body: dict, index: int) -> str:
    """A scripted judge: on German prompts the method's answer beats the reference, on Thai prompts it
    loses, whichever position each response is shown in. Every other request gets the default reply."""
    if JUDGE not in _system(body):
        return chat_adapter_reply(body, index)
    a, b = _pair(body)
    ref_is_a = a.startswith("REF-")
    language = (a if ref_is_a else b).split("-")[1]
    method_wins = language == "de"
    a_wins = method_wins != ref_is_a
    return json.dumps({"comparison": "scripted", "verdict": "[[A>B]]" if a_wins else "[[B>A]]"})


def _references(root: Path) -> Path:
    """Reference answers in the model_answer layout, one folder per language (ids shared across languages)."""
    for lang in ("de", "th"):
        rows = [json.loads(line) for line in (ARENA / f"m-arena-hard-{lang}" / "question.jsonl").read_text(encoding="utf-8").splitlines()]
        out = root / f"m-arena-hard-{lang}" / "model_answer" / "gemini-2.5-pro.jsonl"
        out.parent.mkdir(parents=True)
        out.write_text("".join(json.dumps({"uid": r["question_id"], "model": "gemini-2.5-pro", "messages": [
            {"role": "user", "content": "q"}, {"role": "assistant", "content": {"answer": f"REF-{lang}-{r['question_id']}"}}]}) + "\n"
            for r in rows), encoding="utf-8")
    return root


def test_arena_win_rates_against_references_in_both_orders_per_language(tmp_path):
    data = tmp_path / "data"
    for lang in ("de", "th"):
        shutil.copytree(ARENA / f"m-arena-hard-{lang}", data / f"m-arena-hard-{lang}")
    refs = _references(tmp_path / "refs")
    out = tmp_path / "run"
    with FakeOpenAIServer(reply=reference_judge) as server:
        result = CliRunner().invoke(app, [
            "eval", "--task", "arena", "--data", str(data), "--references", str(refs), "--n", "2", "--methods", "greedy,bon,fusion",
            "--model", "openai/fake", "--api-base", server.api_base, "--out", str(out), "--no-progress", "--max-tokens", "64",
        ])
        judged = [_pair(b) for b in server.requests if JUDGE in _system(b)]
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
    refs = _references(tmp_path / "refs")

    def first_position(body: dict, index: int) -> str:
        if JUDGE in _system(body):
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
