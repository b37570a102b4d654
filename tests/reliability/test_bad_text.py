"""Issue 15, item 8: text that is not valid Unicode (a lone surrogate) is bad data, never a run that stops for good.

``"\\ud800"`` passes ``json.loads`` but cannot be encoded as UTF-8: it used to crash ``record_id``
and the store's append outside any handler, with no ``failed.jsonl``, at the same row on every rerun.
"""

from __future__ import annotations

import json

import pytest

from fusion_dspy.errors import DataError
from fusion_dspy.eval import evaluate
from fusion_dspy.lm.endpoints import Endpoint, Pool
from fusion_dspy.records import RecordStore, iter_records, record_id, run_items
from tests.fakes.openai_server import FakeOpenAIServer
from tests.reliability._tiny_task import TASK

LONE = "\ud800"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")  # ensure_ascii: "\ud800" as an escape
    return path


def _pool(server) -> Pool:
    return Pool({"m": Endpoint("m", "openai/m", api_base=server.api_base, api_key="x", num_retries=0, timeout=5)}, ("m",))


def test_eval_data_with_a_lone_surrogate_is_a_data_error_naming_file_and_line(tmp_path):
    rows = [{"question": f"word{i} is the answer {i}", "answer": f"word{i}"} for i in range(3)]
    rows[1]["question"] = f"broken {LONE} text"
    data = _jsonl(tmp_path / "d.jsonl", rows)
    with FakeOpenAIServer() as server:
        with pytest.raises(DataError, match=r"d\.jsonl:2: .*(Unicode|surrogate)"):
            evaluate(TASK, data, pool=_pool(server), out_dir=tmp_path / "out", n=1, methods="greedy", progress=False, cache=False)
        summary = evaluate(TASK, data, pool=_pool(server), out_dir=tmp_path / "out", n=1, methods="greedy", progress=False,
                           cache=False, skip_bad_rows=True)
    assert summary["run"]["done"] == 2 and summary["run"]["failed"] == 0


def test_synth_prompts_with_a_lone_surrogate_are_a_data_error_or_skipped(tmp_path):
    from fusion_dspy.synth import synthesize

    prompts = _jsonl(tmp_path / "p.jsonl", [{"prompt": "question one"}, {"prompt": f"bad {LONE}"}, {"prompt": "question three"}])
    with FakeOpenAIServer() as server:
        with pytest.raises(DataError, match=r"p\.jsonl:2: "):
            list(__import__("fusion_dspy.synth.prompts", fromlist=["read_prompts"]).read_prompts(prompts))
        stats = synthesize(prompts, tmp_path / "out", pool=_pool(server), skip_bad_rows=True, max_tokens=32)
    assert stats.done == 2 and stats.failed == 0


def test_a_record_that_cannot_be_written_fails_its_example_and_the_run_goes_on(tmp_path):
    store = RecordStore(tmp_path / "records.jsonl")

    def work(i: int) -> dict:
        return {"answer": f"model output {LONE}" if i == 1 else f"answer {i}"}  # a model may return a lone surrogate

    stats = run_items(((record_id("item", i), i) for i in range(3)), work, store)
    assert (stats.done, stats.failed) == (2, 1)
    failed = [json.loads(line) for line in (tmp_path / "records.failed.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(failed) == 1 and failed[0]["id"] == record_id("item", 1)
    assert len(list(iter_records(store.path))) == 2
    (tmp_path / "records.jsonl").read_text(encoding="utf-8")  # still valid UTF-8 throughout


def test_record_ids_of_any_text_are_computed():
    assert record_id("x", LONE) != record_id("x", "\ud801")
