"""The evaluation harness against the fake OpenAI server, on a tiny task defined here."""

from __future__ import annotations

import json
from pathlib import Path

import dspy
import pytest

from fusion_dspy.data import read_jsonl
from fusion_dspy.errors import ConfigurationError, DataError
from fusion_dspy.eval import EvalRoles, evaluate, parse_ns, prepare, roles_from_pool, run
from fusion_dspy.eval.summary import bootstrap_ci, summarize
from fusion_dspy.lm.endpoints import Endpoint, Pool
from fusion_dspy.records import iter_records
from fusion_dspy.task import Task
from tests.fakes.openai_server import FakeOpenAIServer, chat_adapter_reply


class QA(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


def _load(path, *, limit=None, skip_bad_rows=False, bad_rows=None):
    out = []
    for lineno, row in read_jsonl(path, required={"question": str, "answer": str}, skip_bad_rows=skip_bad_rows, bad_rows=bad_rows):
        ex = dspy.Example(id=f"q{lineno}", language=row.get("lang", "en"), question=row["question"], answer=row["answer"])
        out.append(ex.with_inputs("question"))
        if limit and len(out) >= limit:
            break
    return out


def _metric(example, prediction, trace=None):
    return float(str(example.answer) in str(prediction.answer))


TINY = Task("tiny", _load, lambda: dspy.Predict(QA), _metric, "answer", normalize=lambda a: str(a).strip().lower() or None)
ROWS = [
    {"question": "alpha one", "answer": "alpha"},
    {"question": "beta two", "answer": "nothing-matches"},
    {"question": "gamma three", "answer": "#1", "lang": "de"},
]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def _pool(srv) -> Pool:
    ep = Endpoint("fake", "openai/fake", api_base=srv.api_base, num_retries=0)
    return Pool({"fake": ep}, ("fake",))


def _sampling_requests(srv, n=None):
    """Chat requests that sample the task program (n>1 requests, or temperature 0.7)."""
    out = []
    for body in srv.requests:
        text = json.dumps(body.get("messages"))
        if "<candidate" in text or "<response>" in text or body.get("response_format") or not body.get("messages"):
            continue
        if body.get("temperature") == 0.7 and (n is None or int(body.get("n") or 1) == n):
            out.append(body)
    return out


def test_all_methods_share_one_pool(server, data, tmp_path):
    out = tmp_path / "run"
    summary = evaluate(TINY, data, pool=_pool(server), out_dir=out, n=3, progress=False, cache=False)
    records = list(iter_records(out / "records.jsonl"))
    assert len(records) == 3 and summary["counts"]["done"] == 3
    assert len(_sampling_requests(server, n=3)) == 3  # one n=3 request per example, shared by every method
    for rec in records:
        assert list(rec)[:3] == ["id", "format", "kind"] and (rec["format"], rec["kind"]) == (2, "eval")
        texts = [c["outputs"]["answer"] for c in rec["candidates"]["candidates"]]
        assert len(texts) == 3 and len(set(texts)) == 3
        m = rec["methods"]
        assert set(m) == {"greedy", "bon", "fusion", "oracle", "majority"}
        for name in ("bon", "oracle", "majority"):
            assert m[name]["outputs"]["answer"] == texts[m[name]["selection"]["index"]]
        assert sorted(m["fusion"]["fusion"]["order"]) == [0, 1, 2]
        assert all(m[k]["status"] == "ok" and isinstance(m[k]["score"], float) for k in m)
        assert rec["gold"] == {"answer": next(r["answer"] for r in ROWS if r["question"] == rec["inputs"]["question"])}
    # the fusor saw exactly the sampled candidates
    fusor_prompts = [json.dumps(b["messages"]) for b in server.requests if "candidate id=" in json.dumps(b.get("messages"))]
    assert len(fusor_prompts) == 3
    for rec in records:
        prompt = next(p for p in fusor_prompts if rec["inputs"]["question"] in p)
        for c in rec["candidates"]["candidates"]:
            assert json.dumps(c["outputs"]["answer"])[1:-1] in prompt
    # the oracle is the best any candidate reaches (here: "#1" is only in the second candidate)
    de = next(r for r in records if r["language"] == "de")
    assert de["methods"]["oracle"]["score"] == 1.0 and de["methods"]["oracle"]["selection"]["index"] == 1


def test_rerun_skips_finished_examples(server, data, tmp_path):
    out = tmp_path / "run"
    evaluate(TINY, data, pool=_pool(server), out_dir=out, n=2, methods="bon,fusion", progress=False, cache=False)
    calls = server.calls
    summary = evaluate(TINY, data, pool=_pool(server), out_dir=out, n=2, methods="bon,fusion", progress=False, cache=False)
    assert server.calls == calls  # nothing sent again
    ids = [r["id"] for r in iter_records(out / "records.jsonl")]
    assert len(ids) == 3 == len(set(ids))
    assert summary["run"]["skipped"] == 3 and summary["counts"]["done"] == 3


def test_summary_names_every_method_with_ci_and_tokens(server, data, tmp_path):
    out = tmp_path / "run"
    summary = evaluate(TINY, data, pool=_pool(server), out_dir=out, n=2, progress=False, cache=False)
    on_disk = json.loads((out / "summary.json").read_text())
    md = (out / "summary.md").read_text()
    for method in ("greedy", "bon", "fusion", "oracle", "majority"):
        rows = [r for r in on_disk["rows"] if r["method"] == method and r["language"] == "all"]
        assert rows, method
        r = rows[0]
        assert r["count"] == 3 and r["ci_low"] <= r["mean"] <= r["ci_high"]
        assert r["tokens_total"] > 0 and r["tokens_prompt"] > 0
        assert f"| {method} |" in md
    assert {r["language"] for r in on_disk["rows"]} == {"all", "en", "de"}
    assert summary["counts"]["failed"] == 0 and set(summary["counts"]["fallbacks"]) >= {"bon", "fusion"}
    # aggregation costs tokens on top of the shared sampling
    by = {r["method"]: r for r in on_disk["rows"] if r["language"] == "all"}
    assert by["bon"]["tokens_total"] > by["oracle"]["tokens_total"] and by["fusion"]["tokens_total"] > by["oracle"]["tokens_total"]


def test_scaling_evaluates_prefixes_of_one_pool(server, data, tmp_path):
    out = tmp_path / "run"
    summary = evaluate(TINY, data, pool=_pool(server), out_dir=out, n="1,2", methods="bon,fusion,oracle", progress=False, cache=False)
    assert len(_sampling_requests(server)) == 3  # sampled once per example, at N=2
    assert len(_sampling_requests(server, n=2)) == 3
    for rec in iter_records(out / "records.jsonl"):
        first = rec["candidates"]["candidates"][0]["outputs"]
        small = rec["by_n"]["1"]
        assert small["bon"]["selection"]["index"] == 0 and small["bon"]["outputs"] == first
        assert small["fusion"]["fusion"]["order"] == [0]
        assert set(rec["methods"]) == {"bon", "fusion", "oracle"}
    assert summary["ns"] == [1, 2]
    png = out / "scaling.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    oracle = {r["n"]: r["mean"] for r in summary["rows"] if r["method"] == "oracle" and r["language"] == "all"}
    assert oracle[2] >= oracle[1]


def test_one_failing_method_does_not_fail_the_example(server, data, tmp_path):
    class Broken:
        def score_candidates(self, cset):
            raise RuntimeError("rater exploded")

    plan = prepare(TINY, data, n=2, methods="greedy,bon,fusion,oracle")
    roles = roles_from_pool(_pool(server), max_tokens=64, cache=False)
    roles = EvalRoles(roles.teachers, roles.fusor, Broken(), roles.greedy_lm, describe=roles.describe)
    summary = run(plan, roles, tmp_path / "run", progress=False)
    rec = next(iter_records(tmp_path / "run" / "records.jsonl"))
    assert rec["methods"]["bon"]["status"] == "failed" and "rater exploded" in rec["methods"]["bon"]["error"]
    assert rec["methods"]["fusion"]["status"] == "ok" and rec["methods"]["oracle"]["status"] == "ok"
    assert summary["counts"]["done"] == 3 and summary["counts"]["method_failures"]["bon"] == 3


def test_example_whose_sampling_fails_is_retried_on_rerun(data, tmp_path):
    def reply(body, i):
        if "gamma" in json.dumps(body.get("messages")) and body.get("temperature") == 0.7:
            return ""  # every sample of this example is empty -> SamplingError
        return chat_adapter_reply(body, i)

    out = tmp_path / "run"
    with FakeOpenAIServer(reply=reply) as srv:
        summary = evaluate(TINY, data, pool=_pool(srv), out_dir=out, n=2, methods="bon", progress=False, cache=False)
    assert summary["counts"]["done"] == 2 and summary["counts"]["failed"] == 1
    assert "SamplingError" in (out / "records.failed.jsonl").read_text()
    with FakeOpenAIServer() as srv:
        summary = evaluate(TINY, data, pool=_pool(srv), out_dir=out, n=2, methods="bon", progress=False, cache=False)
        assert len(_sampling_requests(srv)) == 1  # only the failed example is run again
    assert summary["counts"]["done"] == 3 and summary["counts"]["failed"] == 0


def test_bad_rows_name_file_and_line_or_are_counted(tmp_path, server):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "alpha one", "answer": "alpha"}\n{"question": 3, "answer": "x"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: field 'question'"):
        prepare(TINY, path)
    plan = prepare(TINY, path, skip_bad_rows=True)
    assert len(plan.examples) == 1 and plan.bad_rows.count == 2
    summary = run(plan, roles_from_pool(_pool(server), max_tokens=64, cache=False), tmp_path / "run", progress=False)
    assert summary["counts"]["bad_rows_skipped"] == 2
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        prepare(TINY, empty)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"question": "caf\xe9", "answer": "x"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.jsonl:1: not valid UTF-8"):
        prepare(TINY, latin)
    with pytest.raises(DataError, match="does not exist"):
        prepare(TINY, tmp_path / "missing.jsonl")


def test_bad_settings_list_the_valid_choices(data):
    with pytest.raises(ConfigurationError, match="valid methods: greedy, bon, fusion, oracle, majority"):
        prepare(TINY, data, methods="bon,best")
    with pytest.raises(ConfigurationError, match="valid tasks"):
        prepare("no-such-task", data)
    with pytest.raises(ConfigurationError, match="n must be >= 1"):
        prepare(TINY, data, n="0,2")
    with pytest.raises(ConfigurationError, match="comma-separated"):
        parse_ns("two")
    with pytest.raises(ConfigurationError, match="concurrency"):
        prepare(TINY, data, concurrency=0)
    no_gold = Task("ng", _load, lambda: dspy.Predict(QA), _metric, "answer", has_gold=False)
    with pytest.raises(ConfigurationError, match="no gold"):
        prepare(no_gold, data, methods="oracle")
    assert parse_ns("8,1,2,2") == (1, 2, 8)


def test_several_teachers_fix_the_pool_size(data, tmp_path):
    with FakeOpenAIServer(model_name="a") as a, FakeOpenAIServer(model_name="b") as b:
        eps = {"a": Endpoint("a", "openai/a", api_base=a.api_base, num_retries=0), "b": Endpoint("b", "openai/b", api_base=b.api_base, num_retries=0)}
        pool = Pool(eps, ("a", "b"), fusor="a")
        with pytest.raises(ConfigurationError, match="exceeds the pool"):
            evaluate(TINY, data, pool=pool, out_dir=tmp_path / "x", n=3, methods="bon", progress=False, cache=False)
        summary = evaluate(TINY, data, pool=pool, out_dir=tmp_path / "y", n="1,2", methods="bon,fusion", progress=False, cache=False)
    rec = next(iter_records(tmp_path / "y" / "records.jsonl"))
    assert [c["model"] for c in rec["candidates"]["candidates"]] == ["a", "b"]
    assert summary["ns"] == [1, 2]


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = [0.0, 1.0] * 20
    low, high = bootstrap_ci(values, seed=3)
    assert (low, high) == bootstrap_ci(values, seed=3)
    assert low < 0.5 < high and high - low < 0.5
    assert bootstrap_ci([1.0]) == (1.0, 1.0)


def test_summary_of_a_missing_store_is_empty(tmp_path):
    s = summarize(tmp_path / "none.jsonl", TINY)
    assert s["counts"]["done"] == 0 and s["rows"] == []


@pytest.mark.integration
def test_mgsm_on_the_embedded_model(embedded_server, shared_data, tmp_path):
    """The CLI's path on 2 real MGSM examples: every method gets a record and a summary row."""
    pytest.importorskip("fusion_dspy.programs")
    ep = embedded_server.endpoint
    pool = Pool({ep.name: ep}, (ep.name,))
    plan = prepare("mgsm", f"{shared_data}/mgsm/mgsm_en.tsv", limit=2, n=2, methods="greedy,bon,fusion,oracle", max_tokens=48,
                   adaptive="start=1,step=1,threshold=0.7")
    summary = run(plan, roles_from_pool(pool, max_tokens=48, cache=False), tmp_path / "mgsm", progress=False)
    assert summary["counts"]["done"] == 2
    assert {r["method"] for r in summary["rows"]} == {"greedy", "bon", "fusion", "oracle"}
    # the adaptive replay: a row per aggregation, its samples within max N, and the curve in tokens drawn
    assert {r["method"] for r in summary["adaptive"]} == {"bon", "fusion", "oracle"}
    assert all(1 <= r["samples"] <= 2 for r in summary["adaptive"])
    assert (tmp_path / "mgsm" / "scaling_tokens.png").read_bytes()[:4] == b"\x89PNG"
    rec = next(iter_records(tmp_path / "mgsm" / "records.jsonl"))
    assert len(rec["candidates"]["candidates"]) == 2
    main_table = (tmp_path / "mgsm" / "summary.md").read_text().split("\n## ")[0]  # before the per-language gains
    assert main_table.count("| all |") == 4, main_table
    # what a user reads carries no prompt framing, whichever method wrote it
    assert all(r["framed"] == 0 for r in summary["rows"]), [(r["method"], r["framed"]) for r in summary["rows"]]


def test_several_teachers_default_to_the_whole_pool(data, tmp_path):
    with FakeOpenAIServer(model_name="a") as a, FakeOpenAIServer(model_name="b") as b:
        eps = {"a": Endpoint("a", "openai/a", api_base=a.api_base, num_retries=0), "b": Endpoint("b", "openai/b", api_base=b.api_base, num_retries=0)}
        summary = evaluate(TINY, data, pool=Pool(eps, ("a", "b"), samples_per_teacher=2), out_dir=tmp_path / "z",
                           methods="oracle", progress=False, cache=False)
    assert summary["ns"] == [4]
    rec = next(iter_records(tmp_path / "z" / "records.jsonl"))
    assert [c["model"] for c in rec["candidates"]["candidates"]] == ["a", "a", "b", "b"]


def test_interrupted_run_is_completed_by_a_rerun(server, data, tmp_path):
    import threading

    stop = threading.Event()
    plan = prepare(TINY, data, n=2, methods="bon", concurrency=1)
    roles = roles_from_pool(_pool(server), max_tokens=64, cache=False)
    first = run(plan, roles, tmp_path / "run", progress=False, stop=stop, on_record=lambda rec: stop.set())
    done = first["counts"]["done"]
    assert first["run"]["interrupted"] and 1 <= done < 3  # the runner may finish the item it had submitted
    second = run(plan, roles, tmp_path / "run", progress=False)
    assert second["run"]["skipped"] == done and second["run"]["done"] == 3 - done and second["counts"]["done"] == 3
    ids = [r["id"] for r in iter_records(tmp_path / "run" / "records.jsonl")]
    assert len(ids) == len(set(ids)) == 3


def _judge_prefers_longer(body, i):
    """The fake's reply, except that the Arena judge prefers the longer response (ties if equal)."""
    messages = body.get("messages") or []
    if "response_a ## ]]" not in json.dumps(messages):
        return chat_adapter_reply(body, i)
    user = str(messages[-1]["content"])
    a = user.split("[[ ## response_a ## ]]")[1].split("[[ ## response_b ## ]]")[0].strip()
    b = user.split("[[ ## response_b ## ]]")[1].split("Respond with")[0].strip()
    verdict = "[[A>B]]" if len(a) > len(b) else "[[B>A]]" if len(b) > len(a) else "[[A=B]]"
    return f"[[ ## comparison ## ]]\ncompared\n\n[[ ## verdict ## ]]\n{verdict}\n\n[[ ## completed ## ]]"


def test_arena_without_references_scores_win_rates_against_greedy(tmp_path):
    """Arena-Hard as shipped has no reference answers: each method is judged against greedy's answer."""
    from fusion_dspy.programs import arena

    data = Path(__file__).parent / "programs" / "fixtures" / "arena" / "arena_hard_v2" / "question.jsonl"
    out = tmp_path / "arena"
    with FakeOpenAIServer(reply=_judge_prefers_longer) as srv:
        summary = evaluate(arena.TASK, data, pool=_pool(srv), out_dir=out, n=3, methods="greedy,bon,fusion", progress=False, cache=False)
        judge_calls = [b for b in srv.requests if "response_a ## ]]" in json.dumps(b.get("messages"))]
    records = list(iter_records(out / "records.jsonl"))
    assert summary["counts"]["done"] == 2 and len(records) == 2
    for rec in records:
        m = rec["methods"]
        assert all(m[k]["status"] == "ok" for k in ("greedy", "bon", "fusion")), m
        assert m["greedy"]["score"] == 0.5  # greedy against itself: a tie, no judge call
        assert "baseline" not in rec["gold"]  # the stand-in reference is not a gold label
        greedy_text = m["greedy"]["outputs"]["response"]
        for k in ("bon", "fusion"):
            text = m[k]["outputs"]["response"]
            expected = 0.5 if len(text) == len(greedy_text) else 1.0 if len(text) > len(greedy_text) else 0.0
            assert m[k]["score"] == expected, (k, text, greedy_text)
    # the judge saw both orders of each non-identical comparison
    assert judge_calls and len(judge_calls) % 2 == 0


def test_arena_without_references_needs_greedy_among_the_methods(tmp_path):
    from fusion_dspy.programs import arena

    data = Path(__file__).parent / "programs" / "fixtures" / "arena" / "arena_hard_v2" / "question.jsonl"
    with pytest.raises(ConfigurationError, match="add 'greedy' to the methods"):
        prepare(arena.TASK, data, methods="bon,fusion")
    refs = tmp_path / "refs.jsonl"
    refs.write_text('{"uid": "807ddb4c42a7432b", "answer": "x"}\n{"uid": "74379ac8ceed44c0", "answer": "y"}\n', encoding="utf-8")
    assert prepare(arena.make_task(references=refs), data, methods="bon,fusion").methods == ("bon", "fusion")


def test_summary_reports_length_against_the_candidates_and_framing(tmp_path):
    """What a user reads: each method's answer length over its candidates', and answers with prompt framing."""
    cands = [{"index": i, "model": "m", "sample": i, "outputs": {"answer": "x" * 100}, "error": None} for i in range(3)]
    rec = {
        "id": "a", "example_id": "a", "language": "en", "n_max": 3,
        "candidates": {"inputs": {"question": "q"}, "output_fields": ["answer"], "candidates": cands},
        "methods": {
            "fusion": {"outputs": {"answer": "{answer}"}, "score": 0.0, "usage": {}},
            "bon": {"outputs": {"answer": "y" * 150}, "score": 1.0, "usage": {}},
        },
    }
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    rows = {r["method"]: r for r in summarize(path)["rows"] if r["language"] == "all"}
    assert rows["fusion"]["framed"] == 1 and rows["fusion"]["length_ratio"] == pytest.approx(0.08)
    assert rows["bon"]["framed"] == 0 and rows["bon"]["length_ratio"] == pytest.approx(1.5)
