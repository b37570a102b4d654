"""``reproduce``: every experiment writes its figure and its table from the stages' own runs (fake servers, scripted judges)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import dspy
import pytest
from typer.testing import CliRunner

from fusion_dspy.cli.main import app
from fusion_dspy.errors import ConfigurationError
from fusion_dspy.lm import Endpoint, Pool
from fusion_dspy.reproduce import EXPERIMENTS, Settings, run_experiment
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.scripted import FIXTURES, arena_references, fused_answers_win, reference_judge, scripted_translator

PROMPTS = [("How do I boil an egg?", "REF Put it in boiling water for 8 minutes."), ("Name three rivers in Africa.", "REF Nile, Congo, Niger.")]


@pytest.fixture(autouse=True)
def _no_response_cache():
    """Every call reaches the scripted server, except within a test (fusor-size relies on the cache for identical candidates)."""
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    yield
    dspy.configure_cache()


@pytest.fixture
def data_root(tmp_path) -> Path:
    """The shared data layout, with the test fixtures: two WMT pairs, two Arena languages, two prompts."""
    root = tmp_path / "data"
    (root / "wmt24pp").mkdir(parents=True)
    for f in ("en-de_DE.jsonl", "en-ko_KR.jsonl"):
        shutil.copy(FIXTURES / "wmt" / f, root / "wmt24pp" / f)
    for lang in ("de", "th"):
        shutil.copytree(FIXTURES / "arena" / f"m-arena-hard-{lang}", root / "m_arenahard_v0.1" / f"m-arena-hard-{lang}")
    (root / "ultrafeedback").mkdir()
    (root / "ultrafeedback" / "train_clean.jsonl").write_text(
        "".join(json.dumps({"prompt": p, "chosen": c}) + "\n" for p, c in PROMPTS), encoding="utf-8")
    return root


def _pool(*servers: FakeOpenAIServer, judge: str | None = None, samples: int = 1) -> Pool:
    eps = {s.model_name: Endpoint(s.model_name, f"openai/{s.model_name}", api_base=s.api_base, num_retries=0) for s in servers}
    names = tuple(eps)
    return Pool(eps, tuple(n for n in names if n != judge), samples_per_teacher=samples, fusor=names[0], rater=names[0], judge=judge)


def _table(folder: Path) -> list[dict[str, str]]:
    with (folder / "table.csv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _written(result: dict) -> None:
    for png in result["figures"]:
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = Path(result["table_md"]).read_text(encoding="utf-8")
    assert md.startswith("# ") and "Settings:" in md and "| " in md
    assert json.loads(Path(result["settings"]).read_text(encoding="utf-8"))["experiment"].startswith(result["experiment"])


def test_every_experiment_is_listed_with_the_figure_it_mirrors():
    result = CliRunner().invoke(app, ["reproduce", "--list"])
    assert result.exit_code == 0
    for name, e in EXPERIMENTS.items():
        assert name in result.output and e.mirrors in result.output
    assert {"Fig. 5", "Figs. 1, 16", "Fig. 2", "Fig. 4", "Table 2", "Fig. 6", "Figs. 7, 11"} <= {e.mirrors for e in EXPERIMENTS.values()}


def test_arena_languages_against_references_per_language(tmp_path, data_root):
    refs = arena_references(tmp_path / "refs")
    with FakeOpenAIServer(reply=reference_judge, model_name="m") as m:
        s = Settings(pool=_pool(m), out=tmp_path / "out", data_root=data_root, limit=2, max_tokens=64, references=refs)
        result = run_experiment("arena-languages", s)
    _written(result)
    rows = {r["language"]: r for r in _table(tmp_path / "out" / "arena-languages")}
    shown = (rows["de"]["Best-of-N"], rows["de"]["Fusion-of-N"], rows["th"]["Fusion-of-N"], rows["all"]["Fusion-of-N"])
    assert shown == ("100.0", "100.0", "0.0", "50.0")
    md = Path(result["table_md"]).read_text(encoding="utf-8")
    assert "win rate vs gemini-2.5-pro" in md and "No --references" not in md


def test_wmt_experiments_share_one_run_and_report_the_oracle_by_its_metric(tmp_path, data_root):
    with FakeOpenAIServer(reply=scripted_translator, model_name="m") as m:
        s = Settings(pool=_pool(m), out=tmp_path / "out", data_root=data_root, limit=2, max_tokens=64, oracle_metric="bleu")
        first = run_experiment("wmt-languages", s)
        calls = m.calls
        second = run_experiment("wmt-oracle", s)
        assert m.calls == calls  # the oracle experiment read the same run
    _written(first)
    _written(second)
    gains = {r["language pair"]: r for r in _table(tmp_path / "out" / "wmt-languages")}
    assert gains["all"]["Fusion-of-N"] == "100.0" and gains["all"]["fusion - oracle"] == "0.0" and gains["all"]["examples"] == "4"
    oracle = {r["language pair"]: r for r in _table(tmp_path / "out" / "wmt-oracle")}
    assert oracle["en-de_DE"]["Oracle"] == "100.0" and oracle["en-de_DE"]["fusion beats the oracle"] == "not resolved (CI spans 0)"
    assert "oracle selects by: bleu" in Path(second["table_md"]).read_text(encoding="utf-8")


def test_scaling_over_n_on_one_pool(tmp_path, data_root):
    with FakeOpenAIServer(reply=scripted_translator, model_name="m") as m:
        s = Settings(pool=_pool(m), out=tmp_path / "out", data_root=data_root, limit=1, max_tokens=64, n="1,2,4")
        _written(run_experiment("scaling", s))
    rows = _table(tmp_path / "out" / "scaling")
    fusion = {r["N"]: r["score"] for r in rows if r["method"] == "Fusion-of-N"}
    oracle = {r["N"]: r["score"] for r in rows if r["method"] == "Oracle"}
    assert set(fusion) == {"1", "2", "4"} and float(oracle["1"]) < float(oracle["2"]) == 100.0  # candidate 1 is the reference
    with pytest.raises(ConfigurationError, match="several pool sizes"):
        run_experiment("scaling", Settings(pool=s.pool, out=tmp_path / "o2", data_root=data_root, n="5"))


def test_fusor_size_compares_each_model_on_identical_candidates(tmp_path, data_root):
    with FakeOpenAIServer(reply=scripted_translator, model_name="small") as small, \
            FakeOpenAIServer(reply=scripted_translator, model_name="big") as big:
        s = Settings(pool=_pool(small, big), out=tmp_path / "out", data_root=data_root, limit=2, max_tokens=64, fusors=("small", "big"))
        _written(run_experiment("fusor-size", s))
    rows = _table(tmp_path / "out" / "fusor-size")
    assert [r["model"] for r in rows] == ["small", "big"] and all(r["Fusion-of-N (it fuses)"] == "100.0" for r in rows)
    assert "identical in 2 of 2 examples" in (tmp_path / "out" / "fusor-size" / "table.md").read_text(encoding="utf-8")


def test_synth_quality_judges_each_dataset_against_references(tmp_path, data_root):
    with FakeOpenAIServer(reply=fused_answers_win, model_name="a") as a, FakeOpenAIServer(reply=fused_answers_win, model_name="b") as b, \
            FakeOpenAIServer(reply=fused_answers_win, model_name="judge") as j:
        s = Settings(pool=_pool(a, b, j, judge="judge", samples=2), out=tmp_path / "out", data_root=data_root, limit=2, max_tokens=64)
        result = run_experiment("synth-quality", s)
        judged = sum(1 for body in j.requests if body.get("messages"))
    _written(result)
    rows = {(r["data"], r["method"]): r for r in _table(tmp_path / "out" / "synth-quality")}
    assert rows[("all teachers", "Fusion-of-N")]["win rate"] == "100.0" and rows[("all teachers", "Best-of-N")]["win rate"] == "0.0"
    assert rows[("a x4", "Fusion-of-N")]["win rate"] == "100.0" and rows[("fusor alone (a, 1 sample)", "the sample")]["win rate"] == "0.0"
    assert all(r["rows judged"] == "2" for r in rows.values())
    assert judged == 2 * 2 * 5  # 2 prompts x 5 answers, each judged in both orders, by the judge alone
    # the contribution analyses read the same synthetic data
    for name in ("contributions", "positions"):
        with FakeOpenAIServer(model_name="unused") as unused:
            again = Settings(pool=s.pool, out=s.out, data_root=data_root, limit=2, max_tokens=64)
            _written(run_experiment(name, again))
            assert unused.calls == 0
    sources = {r["source"] for r in _table(tmp_path / "out" / "contributions")}
    assert {"a#0", "a#1", "b#0", "b#1", "multiple", "unmatched"} <= sources


def test_the_cli_runs_an_experiment_on_a_model_string(tmp_path, data_root):
    with FakeOpenAIServer(reply=scripted_translator, model_name="m") as m:
        result = CliRunner().invoke(app, ["reproduce", "wmt-oracle", "--model", "openai/m", "--api-base", m.api_base, "--out", str(tmp_path / "o"),
                                          "--data-root", str(data_root), "--limit", "1", "--max-tokens", "64"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.output.strip().splitlines()[-1])
    assert written["figures"] == [str(tmp_path / "o" / "wmt-oracle" / "fig2_wmt_oracle.png")]
    result = CliRunner().invoke(app, ["reproduce", "fig9", "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "unknown experiment 'fig9'" in result.output


def test_data_is_found_under_the_root_or_named(tmp_path, data_root):
    s = Settings(pool=None, out=tmp_path, data_root=data_root)
    assert s.data_path("wmt") == data_root / "wmt24pp"
    with pytest.raises(ConfigurationError, match="no default data for 'my_tasks:summarise': give --data"):
        s.data_path("my_tasks:summarise-one")
    with pytest.raises(ConfigurationError, match="does not exist: give --data, or --data-root"):
        Settings(pool=None, out=tmp_path, data_root=tmp_path / "nowhere").data_path("prompts")
    assert Settings(pool=None, out=tmp_path, data=data_root / "ultrafeedback").data_path("my_tasks:summarise-one") == data_root / "ultrafeedback"


def test_an_experiment_whose_runs_finish_nothing_says_so(tmp_path, data_root):
    from fusion_dspy.errors import FusionError

    with FakeOpenAIServer(fail_rate=1.0, model_name="down") as down:
        s = Settings(pool=_pool(down), out=tmp_path / "out", data_root=data_root, limit=1, max_tokens=32)
        with pytest.raises(FusionError, match=r"no example of wmt finished \(2 failed\).*records.failed.jsonl"):
            run_experiment("wmt-oracle", s)
        with pytest.raises(FusionError, match=r"no prompt of synth-teachers finished"):
            run_experiment("contributions", s)
    assert not (tmp_path / "out" / "wmt-oracle" / "table.md").exists()


@pytest.mark.integration
def test_an_experiment_on_the_embedded_model(embedded_server, shared_data, tmp_path):
    """wmt-oracle at --limit 2 on SmolLM2: the eval run, the figure (a PNG) and the table, with real scores."""
    ep = embedded_server.endpoint
    pool = Pool({ep.name: ep}, (ep.name,), samples_per_teacher=5)
    s = Settings(pool=pool, out=tmp_path / "out", data_root=Path(shared_data), data=Path(shared_data) / "wmt24pp" / "en-de_DE.jsonl",
                 limit=2, max_tokens=48)
    result = run_experiment("wmt-oracle", s)
    _written(result)
    rows = {r["language pair"]: r for r in _table(tmp_path / "out" / "wmt-oracle")}
    assert set(rows) == {"en-de_DE"} and rows["en-de_DE"]["examples"] == "2"
    oracle, fusion = float(rows["en-de_DE"]["Oracle"]), float(rows["en-de_DE"]["Fusion-of-N"])
    assert 0.0 < oracle <= 100.0 and 0.0 <= fusion <= 100.0
    assert abs(float(rows["en-de_DE"]["fusion - oracle"]) - (fusion - oracle)) < 0.2  # the paired gain agrees with the means
