"""eval and the public FusionOfN / BestOfN aggregate one candidate set through the same registry method.

Candidates are sampled once by ``evaluate`` against the fake OpenAI server; the modules then
aggregate the recorded candidate sets, and every answer, shown order, score and pick must match.
"""

from __future__ import annotations

import json
import re

import dspy
import pytest

import fusion_dspy as fd
from fusion_dspy.aggregate import BON, FUSION, fusor_for
from fusion_dspy.eval import EvalRoles, evaluate
from fusion_dspy.lm.endpoints import Endpoint
from fusion_dspy.records import iter_records
from fusion_dspy.task import Task
from fusion_dspy.types import CandidateSet
from tests.fakes.openai_server import FakeOpenAIServer, chat_adapter_reply

_CANDIDATE = re.compile(r'<candidate id="1">\s*(.*?)\s*</candidate>', re.S)
_RESPONSE = re.compile(r"<response>\s*(.*?)\s*</response>", re.S)


def reply(body, i):
    """Sampling echoes the question (choices differ); the fusor answers from the first shown draft; the rater scores by suffix."""
    last = body["messages"][-1]["content"]
    if body.get("response_format"):  # the LLM rater (JSON schema): '#2' is the best draft, '#1' the worst
        text = _RESPONSE.search(last).group(1)
        score = 5 if text.endswith("#2") else 1 if text.endswith("#1") else 3
        return json.dumps({"analysis": f"rated {text}", "score": score})
    if "<candidate" in last:  # the fusor: its answer depends on the order it was shown the drafts
        return "fused from " + _CANDIDATE.search(last).group(1)
    return chat_adapter_reply(body, i)


QUESTIONS = ["alpha one", "beta two", "gamma three", "delta four"]


def _load(path, *, limit=None, skip_bad_rows=False, bad_rows=None):
    return [dspy.Example(id=f"q{i}", question=q, answer=q.split()[0]).with_inputs("question") for i, q in enumerate(QUESTIONS)]


TASK = Task("same-path", _load, lambda: dspy.Predict("question -> answer"), lambda ex, pred, trace=None: float(ex.answer in pred.answer), "answer")


@pytest.fixture()
def server():
    with FakeOpenAIServer(reply=reply) as s:
        yield s


def test_eval_and_the_public_modules_agree_on_the_same_candidates(server, tmp_path):
    def lm(**kw):
        return Endpoint("fake", "openai/fake", api_base=server.api_base, num_retries=0).lm(cache=False, max_tokens=128, **kw)

    sampler, fusor_lm, rater_lm = lm(), lm(temperature=0.0), lm(temperature=0.0)
    roles = EvalRoles(teachers={"fake": sampler}, fusor=fusor_lm, scorer=fd.LLMRater(rater_lm), greedy_lm=sampler)
    data = tmp_path / "data.txt"
    data.write_text("unused: the task's loader has the examples\n")
    evaluate(TASK, data, pool=roles, out_dir=tmp_path / "run", n=3, methods=f"{BON},{FUSION}", progress=False, cache=False)
    records = list(iter_records(tmp_path / "run" / "records.jsonl"))
    assert len(records) == len(QUESTIONS)

    program = TASK.program()
    fused = fd.FusionOfN(program, n=3, fusor=fusor_for(program, lm=fusor_lm, seed=0))
    best = fd.BestOfN(program, n=3, scorer=fd.LLMRater(rater_lm), seed=0)
    orders = set()
    for rec in records:
        cset = CandidateSet.from_dict(rec["candidates"])
        harness_bon, harness_fusion = rec["methods"][BON], rec["methods"][FUSION]

        picked = best.aggregate(cset)
        assert picked.answer == harness_bon["outputs"]["answer"]
        assert picked.selection.to_dict() | {"usage": None} == harness_bon["selection"] | {"usage": None}
        assert picked.selection.outputs["answer"].endswith("#2")  # the rater's favourite, whatever the shuffled order

        # eval falls back on Best-of-N's scores; a user who ran BestOfN first passes them the same way
        made = fused.aggregate(cset, fallback_scores=picked.selection.scores)
        assert made.answer == harness_fusion["outputs"]["answer"] and made.answer.startswith("fused from echo:")
        assert made.fusion.to_dict() | {"usage": None} == harness_fusion["fusion"] | {"usage": None}
        assert made.fallback is None and harness_fusion["fallback"] is None
        assert set(made.usage) == set(harness_fusion["usage"]) == {"sampling", "aggregation", "total"}
        orders.add(tuple(made.fusion.order))
    assert len(orders) > 1  # the shuffled order differs between examples, so agreeing is not a coincidence
