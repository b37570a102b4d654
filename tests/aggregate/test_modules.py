"""FusionOfN and BestOfN as DSPy modules: nesting, Evaluate, save/load, acall, frozen program."""

from __future__ import annotations

import asyncio
import json

import dspy
import pytest
from dspy.utils import DummyLM

import fusion_dspy as fd
from fusion_dspy.errors import ConfigurationError
from fusion_dspy.lm.endpoints import Endpoint
from tests.fakes.openai_server import FakeOpenAIServer, chat_adapter_reply


def fusion_reply(body, i):
    """Candidates echo the prompt; the plain fusor writes 'fused' (and 'Answer: fused'), the compare step 'cmp'."""
    if body.get("response_format"):
        props = body["response_format"]["json_schema"]["schema"]["properties"]
        return json.dumps({k: ("fused" if k != "comparison" else "cmp") for k in props})
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    if "Compare the drafts" in system:
        return "cmp"
    if "<candidate" in body["messages"][-1]["content"]:
        return "fused" + ("\n\nAnswer: fused" if '"Answer:"' in system else "")
    return chat_adapter_reply(body, i)


@pytest.fixture()
def server():
    with FakeOpenAIServer(reply=fusion_reply) as s:
        yield s


def _lm(server):
    return Endpoint("fake", "openai/fake", api_base=server.api_base, api_key="x").lm(cache=False, max_tokens=128)


def test_fusion_of_n_returns_the_wrapped_fields_and_details(server):
    lm = _lm(server)
    program = dspy.ChainOfThought("question -> answer")
    pred = fd.FusionOfN(program, n=3, fusor=lm, lm=lm, compare=True)(question="Why?")
    assert pred.answer == "fused" and pred.reasoning == "fused"
    assert pred.fallback is None and len(pred.candidates.candidates) == 3
    assert sorted(pred.fusion.order) == [0, 1, 2] and pred.fusion.comparison == "cmp"
    assert set(pred.usage) == {"sampling", "aggregation", "total"}
    assert pred.usage["total"]["calls"] == 3  # one n=3 request, the comparison, the fusion


def test_only_the_fusor_is_trainable_and_save_load_keeps_the_instruction(tmp_path, server):
    lm = _lm(server)
    program = dspy.ChainOfThought("question -> answer")
    module = fd.FusionOfN(program, n=2, fusor=lm)
    assert [name for name, _ in module.named_predictors()] == ["fusor.fuse"]
    module.fusor.fuse.signature = module.fusor.fuse.signature.with_instructions("TUNED: fuse carefully")
    path = tmp_path / "fusion.json"
    module.save(str(path))
    fresh = fd.FusionOfN(dspy.ChainOfThought("question -> answer"), n=2, fusor=lm)
    assert fresh.fusor.instruction != "TUNED: fuse carefully"
    fresh.load(str(path))
    assert fresh.fusor.instruction == "TUNED: fuse carefully"


def test_nested_in_a_larger_program_and_with_evaluate(server):
    lm = _lm(server)

    class Pipeline(dspy.Module):
        def __init__(self):
            super().__init__()
            self.fused = fd.FusionOfN(dspy.Predict("question -> answer"), n=2)
            self.polish = dspy.Predict("answer -> final")

        def forward(self, question):
            return self.polish(answer=self.fused(question=question).answer)

    dspy.configure(lm=lm)
    examples = [dspy.Example(question=f"q{i}", final="x").with_inputs("question") for i in range(3)]
    result = dspy.Evaluate(devset=examples, metric=lambda ex, pred, trace=None: float(bool(pred.final)), num_threads=2)(Pipeline())
    assert result.score == 100.0


def test_acall(server):
    lm = _lm(server)
    module = fd.FusionOfN(dspy.Predict("question -> answer"), n=2, fusor=lm, lm=lm)
    pred = asyncio.run(module.acall(question="hi"))
    assert pred.answer == "fused"


def test_best_of_n_with_callable_scorer_and_seeded_ties(server):
    lm = _lm(server)
    module = fd.BestOfN(dspy.Predict("question -> answer"), n=3, scorer=lambda inputs, pred: float("#2" in pred.answer), lm=lm)
    pred = module(question="pick")
    assert pred.answer.endswith("#2") and pred.selection.index == 2
    winners = set()
    for seed in range(8):
        tie = fd.BestOfN(dspy.Predict("question -> answer"), n=3, scorer=lambda inputs, pred: 1.0, lm=lm, seed=seed)(question="tie")
        again = fd.BestOfN(dspy.Predict("question -> answer"), n=3, scorer=lambda inputs, pred: 1.0, lm=lm, seed=seed)(question="tie")
        assert tie.selection.index == again.selection.index  # seeded: reproducible
        assert tie.selection.details["tie"] == {"between": [0, 1, 2], "drawn": tie.selection.index}
        winners.add(tie.selection.index)
    assert len(winners) > 1  # not always the first candidate


def test_dspy_optimizer_tunes_only_the_fusor():
    lm = DummyLM([{"answer": "4"}] * 50 + [{"comparison": "c", "answer": "4"}] * 50)
    dspy.configure(lm=lm)
    program = dspy.Predict("question -> answer")
    module = fd.FusionOfN(program, n=2)
    trainset = [dspy.Example(question="2+2", answer="4").with_inputs("question")]
    compiled = dspy.LabeledFewShot(k=1).compile(module, trainset=trainset)
    assert len(compiled.fusor.fuse.demos) == 1
    assert program.demos == []


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: fd.FusionOfN(dspy.Predict("q -> a"), n=0), "n must be"),
        (lambda: fd.FusionOfN(dspy.Predict("q -> a"), pool={}), "empty"),
        (lambda: fd.FusionOfN("not a program"), "dspy.Module"),
        (lambda: fd.FusionOfN(dspy.Predict("q -> a"), fusor="gpt"), "fusor must be"),
        (lambda: fd.BestOfN(dspy.Predict("q -> a"), n=2), "needs a scorer"),
        (lambda: fd.FusionOfN(dspy.Predict("q -> a"), fusor=fd.fusor_for(dspy.Predict("q -> a")), compare=True), "configure the Fusor instead"),
        (lambda: fd.FusionOfN(dspy.Predict("q -> a"), fusor=fd.fusor_for(dspy.Predict("q -> b"))), "the program outputs a"),
    ],
)
def test_invalid_arguments_fail_at_once(make, message):
    with pytest.raises(ConfigurationError, match=message):
        make()


def test_a_configured_fusor_or_an_lm_with_the_fusor_s_options_make_the_same_fusor(server):
    lm = _lm(server)
    program = dspy.ChainOfThought("question -> answer")
    configured = fd.FusionOfN(program, n=2, fusor=fd.fusor_for(program, lm=lm, compare=True, seed=3, instruction="Fuse."))
    shorthand = fd.FusionOfN(program, n=2, fusor=lm, compare=True, seed=3, instruction="Fuse.")
    for module in (configured, shorthand):
        assert module.fusor.lm is lm and module.fusor.seed == 3 and module.fusor.compare is not None
        assert "Fuse." in module.fusor.instruction
    assert configured.fusor.fuse.signature.instructions == shorthand.fusor.fuse.signature.instructions
    with pytest.raises(TypeError, match="no_such_option"):
        fd.FusionOfN(program, n=2, fusor=lm, no_such_option=1)  # the Fusor's own keywords, checked by the Fusor


def test_no_fusor_lm_fails_before_any_call():
    module = fd.FusionOfN(dspy.Predict("q -> a"), n=2)
    with pytest.raises(ConfigurationError, match="no fusor LM"):
        module(q="x")


def test_one_failed_teacher_of_a_pool_is_skipped():
    with FakeOpenAIServer(reply=fusion_reply) as good, FakeOpenAIServer(fail_rate=1.0) as bad:
        g = Endpoint("good", "openai/fake", api_base=good.api_base, api_key="x").lm(cache=False)
        b = Endpoint("bad", "openai/fake", api_base=bad.api_base, api_key="x", num_retries=0).lm(cache=False)
        pred = fd.FusionOfN(dspy.Predict("question -> answer"), pool={"good": g, "bad": b}, fusor=g)(question="q")
    assert pred.answer == "fused"
    assert [c.ok for c in pred.candidates.candidates] == [True, False]
    assert pred.fusion.order == (0,)
