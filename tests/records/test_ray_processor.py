"""The steps around a ``ray.data.llm`` processor stage (explode, preprocess, postprocess, regroup), without Ray running."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from fusion_dspy.records.ray_processor import ERROR_COLUMN, _Explode, _postprocess, _Preprocess, _Regroup, pipeline_config


class Hooks:
    """k requests per row; collect records the outputs it was given, in order."""

    def __init__(self, k: int = 3, fail_on: str | None = None):
        self.k, self.fail_on = k, fail_on

    def requests(self, state):
        if state["q"] == self.fail_on:
            raise ValueError("cannot build the messages")
        return [{"messages": [{"role": "user", "content": state["q"]}], "sampling_params": {"seed": i}} for i in range(self.k)]

    def collect(self, state, outputs):
        return {**state, "texts": [o["text"] for o in outputs], "errors": [o["error"] for o in outputs],
                "tokens": sum(o["completion_tokens"] for o in outputs)}


def _row(rid: str, q: str, error: str = "") -> dict:
    return {"id": rid, "state": json.dumps({"q": q}), "error": error}


def _through_engine(rows: list[dict], fail: set[tuple[str, int]] = frozenset()) -> list[dict]:
    """What a processor gives back: postprocess of answered rows; failed ones (and rows marked before) whole, unprocessed."""
    out = []
    for row in rows:
        data = {**row, **_Preprocess()(row)}
        if data[ERROR_COLUMN]:
            out.append(data)
        elif (row["id"], row["i"]) in fail:
            out.append({**data, "generated_text": "", ERROR_COLUMN: "RuntimeError: engine down"})
        else:
            text = f"{json.loads(row['state'])['q']}#{row['i']}"
            out.append(_postprocess({**data, "generated_text": text, "num_input_tokens": 5, "num_generated_tokens": 2, "time_taken_llm": 0.1}))
    return out


def _regroup(rows: list[dict], hooks: Hooks) -> list[dict]:
    keys = sorted({k for r in rows for k in r})
    table = pa.table({k: [r.get(k) for r in rows] for k in keys})
    return _Regroup("sample t", hooks).__call__(table).to_pylist()


def test_a_row_becomes_k_requests_and_comes_back_as_one_row_with_the_outputs_in_order():
    hooks = Hooks(k=3)
    exploded = [r for row in (_row("a", "one"), _row("b", "two")) for r in _Explode("sample t", hooks)(row)]
    assert [(r["id"], r["i"], r["n"]) for r in exploded] == [("a", 0, 3), ("a", 1, 3), ("a", 2, 3), ("b", 0, 3), ("b", 1, 3), ("b", 2, 3)]
    assert json.loads(exploded[1]["request"])["sampling_params"] == {"seed": 1}
    assert _Preprocess()(exploded[1]) == {"messages": [{"role": "user", "content": "one"}], "sampling_params": {"seed": 1}, ERROR_COLUMN: ""}
    back = _through_engine(exploded, fail={("b", 1)})
    back = [back[i] for i in (2, 0, 4, 1, 3, 5)]  # an engine answers in any order within the batch
    rows = {r["id"]: r for r in _regroup(back, hooks)}
    assert rows["a"]["error"] == "" and json.loads(rows["a"]["state"]) == {
        "q": "one", "texts": ["one#0", "one#1", "one#2"], "errors": ["", "", ""], "tokens": 6}
    b = json.loads(rows["b"]["state"])  # a failed request is an output with its error; the row goes on
    assert b["texts"] == ["two#0", "", "two#2"] and b["errors"] == ["", "RuntimeError: engine down", ""] and b["tokens"] == 4


def test_failed_rows_pass_through_and_split_groups_fail_their_row():
    hooks = Hooks(k=2, fail_on="bad")
    before = _Explode("sample t", hooks)(_row("x", "q", error="sample s: EndpointError: down"))
    assert len(before) == 1 and _Preprocess()(before[0])[ERROR_COLUMN]  # marked: the processor's stages skip it
    broken = _Explode("sample t", hooks)(_row("y", "bad"))
    assert len(broken) == 1 and broken[0]["error"].startswith("sample t: ValueError: cannot build the messages")
    split = _Explode("sample t", hooks)(_row("z", "ok"))[:1]  # one of its two requests in this batch
    rows = {r["id"]: r for r in _regroup(_through_engine(before + broken + split), hooks)}
    assert rows["x"]["error"] == "sample s: EndpointError: down" and json.loads(rows["x"]["state"]) == {"q": "q"}
    assert rows["y"]["error"].startswith("sample t: ValueError")
    assert "1 of the row's 2 engine outputs reached one batch" in rows["z"]["error"]


class Done(Hooks):
    """No request for a row whose state says it is done (a fusion accepted in an earlier pass)."""

    def requests(self, state):
        return [] if state.get("done") else super().requests(state)


def test_a_row_with_no_request_passes_the_stage_unchanged():
    hooks = Done(k=1)
    done = {"id": "d", "state": json.dumps({"q": "x", "done": True}), "error": ""}
    exploded = [r for row in (done, _row("a", "one")) for r in _Explode("fuse", hooks)(row)]
    assert [(r["id"], r["n"]) for r in exploded] == [("d", 0), ("a", 1)]
    assert _Preprocess()(exploded[0])[ERROR_COLUMN] == "no request for this row"  # the processor's stages skip it
    rows = {r["id"]: r for r in _regroup(_through_engine(exploded), hooks)}
    assert rows["d"] == {"id": "d", "state": done["state"], "error": ""}  # not collected, not failed
    assert json.loads(rows["a"]["state"])["texts"] == ["one#0"]


def test_the_pipeline_config_keeps_failed_requests_and_batches_whole_groups():
    from ray.data.llm import vLLMEngineProcessorConfig

    config = vLLMEngineProcessorConfig(model_source="org/m", batch_size=32)
    assert (pipeline_config(config, 5).batch_size, pipeline_config(config, 4).batch_size, pipeline_config(config, 1).batch_size) == (35, 32, 32)
    assert pipeline_config(config, 5).should_continue_on_error and not config.should_continue_on_error  # the caller's is unchanged


@pytest.fixture(autouse=True)
def _no_ray_start(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("these steps run without Ray"))
