"""synth: prompts in every format, deterministic ids, resume, shared candidates, filters, Arrow-loadable rows."""

from __future__ import annotations

import json

import pytest

from fusion_dspy.data import BadRows
from fusion_dspy.errors import ConfigurationError, DataError
from fusion_dspy.lm.endpoints import Endpoint, Pool
from fusion_dspy.records import FORMAT_VERSION, iter_records
from fusion_dspy.synth import (
    Filters,
    Prompt,
    apply_filters,
    build_setup,
    check_synth_methods,
    export_to_parquet,
    load_records,
    prompt_id,
    read_prompts,
    synthesize,
)
from fusion_dspy.types import Candidate, CandidateSet
from tests.fakes.openai_server import FakeOpenAIServer, chat_adapter_reply

GERMAN = "Heize den Backofen auf zweihundert Grad vor und brate das Steak danach von beiden Seiten kräftig an."
ENGLISH = "Preheat the oven to two hundred degrees, then sear the steak on both sides until it is nicely browned."


def _is_sampling(body: dict) -> bool:
    """A teacher's request: the prompt asked plainly (not the fusor's drafts, not a rating)."""
    text = json.dumps(body.get("messages"))
    return bool(body.get("messages")) and not body.get("response_format") and "<candidate" not in text and "<response>" not in text


def scripted(texts: list[str]):
    """Teacher samples answer ``texts[choice]`` (plain text); the fusor and rater get the default."""

    def reply(body: dict, choice: int) -> str:
        if _is_sampling(body):
            return texts[choice % len(texts)]
        return chat_adapter_reply(body, choice)

    return reply


def make_pool(server: FakeOpenAIServer, *, k: int = 3, teachers: int = 1, reward_model: bool = False) -> Pool:
    endpoints = {}
    for i in range(teachers):
        name = f"teacher{i}"
        endpoints[name] = Endpoint(name, f"openai/{name}", api_base=server.api_base, defaults={"cache": False})
    rm = None
    if reward_model:
        endpoints["rm"] = Endpoint("rm", "hosted_vllm/rm", api_base=server.api_base)
        rm = "rm"
    return Pool(endpoints, tuple(n for n in endpoints if n != "rm"), samples_per_teacher=k, reward_model=rm)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


# ---------------------------------------------------------------------------------------------
# prompts


def test_jsonl_string_and_chat_prompts(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "how to cook t-bone in the oven", "chosen": "x"},
            {"prompt": [{"role": "user", "content": "Wie kocht man Steak?"}]},
            {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye?"}]},
        ],
    )
    prompts = list(read_prompts(path))
    assert [p.text for p in prompts[:2]] == ["how to cook t-bone in the oven", "Wie kocht man Steak?"]
    assert prompts[0].messages == ({"role": "user", "content": "how to cook t-bone in the oven"},)
    assert prompts[2].text == "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello\n\nUser: Bye?"
    assert len(prompts[2].messages) == 4 and prompts[2].where.endswith("p.jsonl:3")


def test_parquet_and_datasets_dir(tmp_path):
    import datasets

    rows = {"prompt": ["first prompt", "second prompt"], "other": [1, 2]}
    ds = datasets.Dataset.from_dict(rows)
    ds.to_parquet(str(tmp_path / "p.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved_dict"))
    for source in ("p.parquet", "saved", "saved_dict"):
        assert [p.text for p in read_prompts(tmp_path / source)] == rows["prompt"], source
    chat = datasets.Dataset.from_dict({"prompt": [[{"role": "user", "content": "chat prompt"}]]})
    chat.save_to_disk(str(tmp_path / "chat"))
    assert [p.text for p in read_prompts(tmp_path / "chat")] == ["chat prompt"]
    with pytest.raises(DataError, match="no column 'question'"):
        list(read_prompts(tmp_path / "p.parquet", field_name="question"))


@pytest.mark.parametrize(
    "line,message",
    [
        ("{not json", "bad JSON"),
        ('{"text": "no prompt field"}', "missing field 'prompt'"),
        ('{"prompt": "   "}', "the prompt is empty"),
        ('{"prompt": 7}', "must be a string or a list of chat messages"),
        ('{"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}', "last message is from the assistant"),
        ('{"prompt": [{"role": "robot", "content": "q"}]}', "must be an object with a role"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        list(read_prompts(path))
    assert f"{path}:2:" in str(err.value)
    bad = BadRows()
    assert [p.text for p in read_prompts(path, skip_bad_rows=True, bad_rows=bad)] == ["fine"]
    assert bad.count == 1 and message.split("'")[0] in bad.examples[0]


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list(read_prompts(tmp_path / "nope.jsonl"))
    (tmp_path / "p.csv").write_text("prompt\nx\n")
    with pytest.raises(DataError, match="unknown prompts format"):
        list(read_prompts(tmp_path / "p.csv"))


# ---------------------------------------------------------------------------------------------
# ids and configuration


def test_ids_depend_on_prompt_and_configuration(server):
    pool = make_pool(server)
    base = build_setup(pool, methods=["fusion"]).config
    p = Prompt(({"role": "user", "content": "hello"},), "x:1")
    same = Prompt(({"role": "user", "content": "hello"},), "elsewhere:9")  # where it came from does not matter
    assert prompt_id(p, base) == prompt_id(same, build_setup(pool, methods=["fusion"]).config)
    assert prompt_id(p, base) != prompt_id(Prompt(({"role": "user", "content": "hello!"},), "x:1"), base)
    for changed in (
        build_setup(pool, methods=["fusion", "bon"]).config,
        build_setup(pool, methods=["fusion"], temperature=0.5).config,
        build_setup(pool, methods=["fusion"], max_tokens=256).config,
        build_setup(pool, methods=["fusion"], samples_per_teacher=2).config,
        build_setup(pool, methods=["fusion"], filters=Filters(min_length=10)).config,
        build_setup(pool, methods=["fusion"], fusion_instruction="Fuse them.").config,
    ):
        assert prompt_id(p, changed) != prompt_id(p, base)
    # the server address is not part of the id (the embedded server gets a new port each run)
    with FakeOpenAIServer() as other:
        assert prompt_id(p, build_setup(make_pool(other), methods=["fusion"]).config) == prompt_id(p, base)


def test_methods_validated_and_ordered():
    assert check_synth_methods(["fusion", "bon"]) == ("bon", "fusion")
    with pytest.raises(ConfigurationError, match="unknown synth method"):
        check_synth_methods(["majority"])
    with pytest.raises(ConfigurationError, match="no methods"):
        check_synth_methods([""])


# ---------------------------------------------------------------------------------------------
# runs


def test_synth_rows_resume_and_shared_candidates(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"question number {i}"} for i in range(3)] + [{"prompt": "question number 0"}])
    out = tmp_path / "out"
    pool = make_pool(server, k=3)
    stats = synthesize(prompts, out, pool=pool, methods=["fusion", "bon"], concurrency=2)
    assert (stats.done, stats.failed, stats.duplicates) == (3, 0, 1)
    rows = list(iter_records(out / "synth.jsonl"))
    assert len({r["id"] for r in rows}) == 3
    for r in rows:
        assert (r["format"], r["kind"]) == (FORMAT_VERSION, "synth") and r["answer_from"] == "fusion"
        assert r["messages"][0] == {"role": "user", "content": r["inputs"]["prompt"]}
        fused, best = r["methods"]["fusion"]["fusion"], r["methods"]["bon"]["selection"]
        assert r["messages"][1]["role"] == "assistant" and r["messages"][1]["content"] == fused["outputs"]["response"]
        cands = r["candidates"]["candidates"]
        assert r["candidates"]["output_fields"] == ["response"] and r["candidates"]["inputs"] == r["inputs"]
        indices = {c["index"] for c in cands}
        assert len(cands) == 3 and {c["model"] for c in cands} == {"teacher0"}
        # Best-of-N and fusion saw the identical candidates
        assert set(fused["order"]) == indices
        assert {int(i) for i in json.loads(best["scores"])} == indices
        assert best["index"] in indices
        chosen = next(c for c in cands if c["index"] == best["index"])
        assert chosen["outputs"] == best["outputs"] == r["methods"]["bon"]["outputs"]
        fusion_usage = r["methods"]["fusion"]["usage"]
        assert r["usage"]["sampling"]["completion_tokens"] > 0 and fusion_usage["aggregation"]["calls"] >= 1
        assert fusion_usage["sampling"] == r["usage"]["sampling"] == r["candidates"]["usage"]
        spent = r["usage"]["sampling"]["completion_tokens"] + sum(m["usage"]["aggregation"]["completion_tokens"] for m in r["methods"].values())
        assert r["usage"]["total"]["completion_tokens"] == spent
        assert r["config"]["methods"] == ["bon", "fusion"] and r["config"]["temperature"] == 0.3
    # one n=3 sampling request per prompt, not one per candidate
    sampling = [b for b in server.requests if b["_path"].endswith("chat/completions") and _is_sampling(b)]
    assert len(sampling) == 3 and all(b.get("n") == 3 for b in sampling)

    calls = server.calls
    again = synthesize(prompts, out, pool=pool, methods=["fusion", "bon"], concurrency=2)
    assert (again.done, again.skipped) == (0, 3) and server.calls == calls
    # another configuration belongs in another folder (the same prompt answered twice is a trap)
    with pytest.raises(ConfigurationError, match=r"another configuration \(methods: \["):
        synthesize(prompts, out, pool=pool, methods=["fusion"])
    assert json.loads((out / "synth.config.json").read_text())["methods"] == ["bon", "fusion"]


def test_bon_only_answer_and_teacher_pool(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "which teacher is best"}])
    stats = synthesize(prompts, tmp_path / "out", pool=make_pool(server, k=2, teachers=2), methods=["bon"])
    assert stats.done == 1
    (row,) = iter_records(tmp_path / "out" / "synth.jsonl")
    assert row["answer_from"] == "bon" and list(row["methods"]) == ["bon"]
    cands = row["candidates"]["candidates"]
    assert sorted((c["model"], c["sample"]) for c in cands) == [("teacher0", 0), ("teacher0", 1), ("teacher1", 0), ("teacher1", 1)]
    assert [c["index"] for c in cands] == [0, 1, 2, 3]
    assert row["messages"][-1]["content"] == row["methods"]["bon"]["selection"]["outputs"]["response"]


def test_reward_model_scores_bon(tmp_path):
    with FakeOpenAIServer(reward=lambda text: float(len(text))) as srv:
        prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "longest wins"}])
        synthesize(prompts, tmp_path / "out", pool=make_pool(srv, k=3, reward_model=True), methods=["bon"])
    (row,) = iter_records(tmp_path / "out" / "synth.jsonl")
    assert row["config"]["scorer"]["kind"] == "reward_model"
    best = row["methods"]["bon"]["selection"]
    scores = json.loads(best["scores"])
    assert len(scores) == 3 and all(v is not None for v in scores.values())
    top = max(scores.values())
    assert scores[str(best["index"])] == top  # ties between equal rewards are a seeded draw


# ---------------------------------------------------------------------------------------------
# filters


def _cset(texts):
    cands = tuple(
        Candidate(i, "m", i, {"response": t} if t is not None else {}, error=None if t is not None else "boom")
        for i, t in enumerate(texts)
    )
    return CandidateSet({"prompt": "p"}, cands, ("response",))


def test_filters_drop_failed_short_and_wrong_language():
    cset = _cset([GERMAN, ENGLISH, "kurz", None])
    kept, report = apply_filters(cset, "Wie brate ich ein Steak richtig im Ofen?", Filters(("auto",), min_length=10, universe=("en", "de", "fr")))
    assert [c.index for c in kept.candidates] == [0] and report["kept"] == [0]
    assert report["prompt_language"] == "de" and report["expected_languages"] == ["de"]
    reasons = {d["index"]: d["reason"] for d in report["dropped"]}
    assert reasons[1].startswith("language en") and reasons[2].startswith("too short") and reasons[3] == "failed: boom"
    kept, report = apply_filters(cset, "x", Filters(("en", "fr"), universe=("en", "de")))
    assert [c.index for c in kept.candidates] == [1, 2] or [c.index for c in kept.candidates] == [1]
    kept, report = apply_filters(cset, "x", Filters())
    assert [c.index for c in kept.candidates] == [0, 1, 2] and report["dropped"][0]["index"] == 3


def test_filter_settings_validated():
    with pytest.raises(ConfigurationError, match="unknown language code 'xx'"):
        build_setup(Pool({"a": Endpoint("a", "openai/a", api_base="http://127.0.0.1:1/v1")}, ("a",)), filters=Filters(("xx",)))
    with pytest.raises(ConfigurationError, match="cannot be combined"):
        Filters(("auto", "de"))
    with pytest.raises(ConfigurationError, match="min_length"):
        Filters(min_length=0)


def test_filters_in_rows_and_all_dropped_fails_then_retries(tmp_path):
    with FakeOpenAIServer(reply=scripted([GERMAN, ENGLISH, ""])) as srv:
        prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Wie brate ich ein Steak im Ofen?"}])
        filters = Filters(("de",), min_length=20, universe=("en", "de"))
        stats = synthesize(prompts, tmp_path / "out", pool=make_pool(srv, k=3), filters=filters)
        assert stats.done == 1
        (row,) = iter_records(tmp_path / "out" / "synth.jsonl")
        assert row["filters"]["kept"] == [0] and row["methods"]["fusion"]["fusion"]["order"] == [0]
        dropped = json.loads(row["filters"]["dropped"])
        assert {d["index"]: d["reason"].split(":")[0].split(" ")[0] for d in dropped} == {1: "language", 2: "failed"}
        assert row["filters"]["languages"] == "de" and row["filters"]["min_length"] == 20
        assert row["candidates"]["candidates"][2]["error"] == "empty response"

        # nothing survives: the prompt fails with the reason and is retried (fresh samples) next run
        strict = Filters(("fr",), universe=("en", "de", "fr"))
        failed = synthesize(prompts, tmp_path / "strict", pool=make_pool(srv, k=3), filters=strict)
        assert (failed.done, failed.failed) == (0, 1) and "filters dropped all 3 candidates" in failed.failures[0]
        log = [json.loads(line) for line in (tmp_path / "strict" / "synth.failed.jsonl").read_text().splitlines()]
        assert len(log) == 1 and "filters dropped all" in log[0]["error"]
        srv.reply = scripted(["Faites chauffer le four à deux cents degrés puis saisissez la viande des deux côtés."])
        srv.reset()
        retried = synthesize(prompts, tmp_path / "strict", pool=make_pool(srv, k=3), filters=strict)
        assert retried.done == 1
        (row,) = iter_records(tmp_path / "strict" / "synth.jsonl")
        assert row["attempt"] == 1 and row["filters"]["expected_languages"] == "fr"


# ---------------------------------------------------------------------------------------------
# output formats


@pytest.mark.parametrize("methods", [["fusion"], ["bon"], ["fusion", "bon"]])
def test_rows_load_with_datasets_and_export_parquet(tmp_path, methods):
    """Rows with fallbacks, failed candidates and filters form one Arrow table, chunk after chunk."""

    def reply(body, choice):
        system = next((m["content"] for m in body.get("messages", []) if m.get("role") == "system"), "")
        text = json.dumps(body.get("messages"))
        if _is_sampling(body):
            return "" if "broken" in text and choice == 1 else f"{ENGLISH} {choice}"
        if "<candidate" in text and "fallback please" in text:
            return ""  # the fusor returns nothing usable: fallback to a candidate
        if "score" in system and "fallback please" in text:
            return ""  # the rater fails: no scores, Best-of-N falls back
        return chat_adapter_reply(body, choice)

    # the plain rows first, so that the first chunk has no error, no fallback, no dropped candidate
    texts = ["a normal prompt", "another normal one", "broken sample here", "fallback please"]
    with FakeOpenAIServer(reply=reply) as srv:
        prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": t} for t in texts])
        out = tmp_path / "out"
        stats = synthesize(prompts, out, pool=make_pool(srv, k=3), methods=methods, filters=Filters(min_length=5), export_parquet=True, concurrency=1)
    rows = list(iter_records(out / "synth.jsonl"))
    assert [r["inputs"]["prompt"] for r in rows] == texts
    assert any(c["error"] for c in rows[2]["candidates"]["candidates"]) and json.loads(rows[2]["filters"]["dropped"])
    last = rows[3]["methods"]["fusion" if "fusion" in methods else "bon"]
    assert last["fallback"], "a fallback row is part of the mix"
    import datasets

    # chunksize of ~one row: every difference between rows would surface as a cast error
    ds = datasets.load_dataset("json", data_files=str(out / "synth.jsonl"), split="train", chunksize=1024, cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 4 and ds[0]["messages"][0] == {"role": "user", "content": texts[0]}
    assert ds[3]["id"] == rows[3]["id"]
    assert len(load_records(out / "synth.jsonl", cache_dir=tmp_path / "hf2")) == 4
    import pyarrow.parquet as pq

    table = pq.read_table(stats.parquet_path)
    assert table.num_rows == 4 and table.column("id").to_pylist() == [r["id"] for r in rows]
    assert not list(out.glob(".hf-cache-*")) and not list(out.glob("*.part"))


def test_rows_readable_by_contribution_analysis(tmp_path, server):
    from fusion_dspy.analysis import record_view

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "analyse me"}])
    synthesize(prompts, tmp_path / "out", pool=make_pool(server, k=3), methods=["fusion", "bon"])
    (row,) = iter_records(tmp_path / "out" / "synth.jsonl")
    view = record_view(row)
    assert view.field == "response" and view.fused == row["methods"]["fusion"]["fusion"]["outputs"]["response"]
    assert len(view.sources) == 3 and sorted(view.positions.values()) == [1, 2, 3]


def test_export_without_records_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no records"):
        export_to_parquet(tmp_path / "synth.jsonl", tmp_path / "synth.parquet")


def test_bad_arguments(tmp_path, server):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}])
    pool = make_pool(server)
    with pytest.raises(ConfigurationError, match="limit"):
        synthesize(prompts, tmp_path / "o", pool=pool, limit=0)
    with pytest.raises(ConfigurationError, match="pool must be"):
        synthesize(prompts, tmp_path / "o", pool={"a": 1})
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError, match="not a folder"):
        synthesize(prompts, tmp_path / "file", pool=pool)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": 3}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        synthesize(bad, tmp_path / "o2", pool=pool)
    assert server.calls == 0  # every bad input is reported before any model call


@pytest.mark.integration
def test_synth_on_embedded_model(tmp_path, embedded_server):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Name a fruit."}, {"prompt": [{"role": "user", "content": "Say hello."}]}])
    ep = embedded_server.endpoint
    pool = Pool({ep.name: ep}, (ep.name,), samples_per_teacher=2)
    stats = synthesize(prompts, tmp_path / "out", pool=pool, methods=["fusion", "bon"], max_tokens=48, concurrency=2)
    assert (stats.done, stats.failed) == (2, 0), stats.failures
    rows = list(iter_records(tmp_path / "out" / "synth.jsonl"))
    assert len({r["id"] for r in rows}) == 2
    assert all(r["messages"][-1]["role"] == "assistant" and r["messages"][-1]["content"].strip() for r in rows)


def test_sft_dataset_is_a_chat_dataset_of_either_methods_answers(tmp_path):
    from fusion_dspy.synth import sft_dataset

    def reply(body, choice):
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
        return "FUSED answer" if "draft answers" in system else chat_adapter_reply(body, choice)

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "first prompt"}, {"prompt": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "second prompt"}]}])
    with FakeOpenAIServer(reply=reply) as srv:
        synthesize(prompts, tmp_path / "out", pool=make_pool(srv, k=3), methods=["fusion", "bon"])
    rows = {r["inputs"]["prompt"]: r for r in iter_records(tmp_path / "out" / "synth.jsonl")}
    fused = sft_dataset(tmp_path / "out" / "synth.jsonl", cache_dir=tmp_path / "hf")
    assert fused.column_names == ["messages"] and len(fused) == 2
    by_last_user = {ex["messages"][-2]["content"]: ex["messages"] for ex in fused}
    assert by_last_user["first prompt"] == [{"role": "user", "content": "first prompt"}, {"role": "assistant", "content": "FUSED answer"}]
    assert [m["role"] for m in by_last_user["second prompt"]] == ["system", "user", "assistant"]
    selected = sft_dataset(tmp_path / "out" / "synth.jsonl", method="bon", cache_dir=tmp_path / "hf")
    bon_answers = {r["methods"]["bon"]["outputs"]["response"] for r in rows.values()}
    assert {ex["messages"][-1]["content"] for ex in selected} == bon_answers and "FUSED answer" not in bon_answers
    with pytest.raises(DataError, match="no 'majority' answers"):
        sft_dataset(tmp_path / "out" / "synth.jsonl", method="majority", cache_dir=tmp_path / "hf")
