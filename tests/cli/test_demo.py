"""The main job: `fusion-dspy demo --json` on the embedded model and on a fake server."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fusion_dspy.cli.main import app
from tests.fakes.openai_server import FakeOpenAIServer


def _check_report(report, n):
    assert len(report["candidates"]) == n
    assert set(report["best_of_n"]) >= {"index", "answer", "scores"}
    assert set(report["fusion"]) >= {"answer", "comparison", "order"}
    assert sorted(report["fusion"]["order"]) == sorted(c["index"] for c in report["candidates"] if c["error"] is None)
    for stage in ("sampling", "best_of_n", "fusion"):
        assert report["usage"][stage]["seconds"] >= 0


def test_demo_json_against_a_fake_server():
    def reply(body, i):
        if body.get("response_format"):
            props = body["response_format"]["json_schema"]["schema"]["properties"]
            if "score" in props:
                return json.dumps({"analysis": "fine", "score": 3 + (i % 2)})
            raise AssertionError("the fusor of a text task is asked plainly, without a JSON schema")
        if "<candidate" in body["messages"][-1]["content"]:
            return "Say hi to everyone: the fused answer, long enough to count"
        return f"Say hi to everyone: candidate answer number {i}"

    with FakeOpenAIServer(reply=reply) as server:
        result = CliRunner().invoke(app, ["demo", "--json", "--n", "3", "--model", "openai/fake", "--api-base", server.api_base, "Say hi"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    _check_report(report, 3)
    fusion = report["fusion"]
    assert fusion["answer"] == "Say hi to everyone: the fused answer, long enough to count" and fusion["fallback"] is None
    assert set(fusion["copied_from"]) == {"0", "1", "2"} and fusion["new_text"] < 1.0
    assert fusion["substance"]["substantive"] and fusion["substance"]["framing"] == []
    assert [c["answer"] for c in report["candidates"]] == [f"Say hi to everyone: candidate answer number {i}" for i in range(3)]


def test_demo_rejects_bad_n():
    result = CliRunner().invoke(app, ["demo", "--n", "0"])
    assert result.exit_code != 0 and "n" in result.output.lower()


@pytest.mark.integration
def test_demo_json_on_the_embedded_model(embedded_server):
    args = ["demo", "--json", "--n", "2", "--max-tokens", "64", "--model", "openai/embedded", "--api-base", embedded_server.api_base]
    result = CliRunner().invoke(app, [*args, "Give two tips for writing clear emails."])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    _check_report(report, 2)
    assert report["usage"]["sampling"]["completion_tokens"] > 0
    # the fused answer is an answer: the fusor's own, with no prompt framing ({response}, field lists, tags)
    fusion = report["fusion"]
    assert fusion["fallback"] is None and fusion["substance"]["framing"] == [], fusion["answer"]
    assert len(fusion["answer"]) >= 40, fusion["answer"]
    for c in report["candidates"]:
        assert "{response}" not in (c["answer"] or "") and "[[ ##" not in (c["answer"] or "")
