"""Sampling candidates: one n=N request, pools, separate calls, failures and duplicates."""

from __future__ import annotations

import json
import uuid

import dspy
import pytest

from fusion_dspy.errors import ConfigurationError, SamplingError
from fusion_dspy.lm.endpoints import Endpoint
from fusion_dspy.sampling import sample_candidates
from tests.fakes.openai_server import FakeOpenAIServer


def _lm(server, name="fake", **kw):
    return Endpoint(name, "openai/fake", api_base=server.api_base, api_key="x").lm(cache=False, **kw)


def _chat(body):
    return [r for r in body if r["_path"].endswith("/chat/completions")]


def test_one_lm_uses_a_single_n_request():
    with FakeOpenAIServer() as server:
        cset = sample_candidates(dspy.Predict("question -> answer"), {"question": "2+2?"}, lm=_lm(server), n=4)
        reqs = _chat(server.requests)
    assert len(reqs) == 1 and reqs[0]["n"] == 4
    assert reqs[0]["temperature"] == 0.7
    assert [c.index for c in cset.candidates] == [0, 1, 2, 3]
    assert [c.sample for c in cset.candidates] == [0, 1, 2, 3]
    assert {c.model for c in cset.candidates} == {"fake"}
    assert len({c.outputs["answer"] for c in cset.candidates}) == 4
    assert cset.usage.prompt_tokens > 0 and cset.usage.calls == 1
    assert all(c.usage.seconds >= 0 for c in cset.candidates)


class OneChoiceLM(dspy.BaseLM):
    """A backend that ignores n: always one choice; records the rollout ids it sees."""

    def __init__(self, **kw):
        super().__init__(model="one-choice", **kw)
        self.seen = []

    def forward(self, prompt=None, messages=None, **kwargs):
        from types import SimpleNamespace

        self.seen.append((kwargs.get("n"), kwargs.get("rollout_id", self.kwargs.get("rollout_id"))))
        text = f"[[ ## answer ## ]]\nA{len(self.seen)}\n\n[[ ## completed ## ]]"
        choice = SimpleNamespace(message=SimpleNamespace(content=text, tool_calls=None), finish_reason="stop", logprobs=None)
        return SimpleNamespace(choices=[choice], usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}, model="one-choice")


def test_backend_ignoring_n_gets_the_rest_as_separate_requests():
    lm = OneChoiceLM()
    cset = sample_candidates(dspy.Predict("question -> answer"), {"question": "q"}, lm=lm, n=3)
    assert len(cset.ok) == 3
    assert len({c.outputs["answer"] for c in cset.ok}) == 3


def test_pool_of_teachers_k_samples_each_at_pool_temperature():
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        pool = {"a": _lm(a, "a"), "b": _lm(b, "b")}
        cset = sample_candidates(dspy.Predict("question -> answer"), {"question": "hi"}, pool=pool, samples_per_model=2)
        ra, rb = _chat(a.requests), _chat(b.requests)
    assert [c.model for c in cset.candidates] == ["a", "a", "b", "b"]
    assert [c.sample for c in cset.candidates] == [0, 1, 0, 1]
    assert ra[0]["n"] == 2 and rb[0]["n"] == 2
    assert ra[0]["temperature"] == 0.3


class TwoStep(dspy.Module):
    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question -> draft")
        self.final = dspy.Predict("question, draft -> answer")

    def forward(self, question):
        d = self.draft(question=question).draft
        return self.final(question=question, draft=d)


def test_general_module_runs_n_times_with_distinct_rollouts():
    with FakeOpenAIServer() as server:
        lm = Endpoint("fake", "openai/fake", api_base=server.api_base, api_key="x").lm()  # cache on
        cset = sample_candidates(TwoStep(), {"question": f"why {uuid.uuid4()}?"}, lm=lm, n=3, strategy="parallel")
        reqs = _chat(server.requests)
    assert len(cset.ok) == 3
    assert len(reqs) == 6  # two predictors per run, no cache collision between runs
    assert cset.output_fields == ("answer",)


def test_failed_candidate_is_recorded_and_skipped():
    def reply(body, i):
        return "nonsense without digits" if i == 1 else f"{40 + i}"

    with FakeOpenAIServer(reply=reply) as server:
        cset = sample_candidates(dspy.Predict("question -> answer: int"), {"question": "q"}, lm=_lm(server), n=3)
    assert [c.ok for c in cset.candidates] == [True, False, True]
    assert [c.outputs.get("answer") for c in cset.candidates] == [40, None, 42]
    bad = cset.candidates[1]
    assert "unparseable" in bad.error and bad.raw == "nonsense without digits"
    assert len(cset.ok) == 2


def test_a_missing_answer_line_keeps_the_text_as_the_answer():
    def reply(body, i):
        return "some thinking" if i == 1 else f"thinking {i}\n\nAnswer: {i}"

    with FakeOpenAIServer(reply=reply) as server:
        cset = sample_candidates(dspy.Predict("question -> reasoning, answer"), {"question": "q"}, lm=_lm(server), n=3)
    assert [c.outputs for c in cset.candidates] == [
        {"reasoning": "thinking 0", "answer": "0"},
        {"reasoning": "", "answer": "some thinking"},
        {"reasoning": "thinking 2", "answer": "2"},
    ]
    assert [c.parse for c in cset.candidates] == ["adapter", "lenient", "adapter"]


def test_a_plain_completion_is_the_answer():
    with FakeOpenAIServer(reply="just a plain answer") as server:
        cset = sample_candidates(dspy.Predict("prompt -> response"), {"prompt": "q"}, lm=_lm(server), n=2)
        sent = server.requests[-1]["messages"]
    assert [c.parse for c in cset.candidates] == ["adapter", "adapter"]
    assert cset.candidates[0].outputs["response"] == "just a plain answer"
    assert sent == [{"role": "user", "content": "q"}]  # the user's prompt as the only message


def test_single_field_output_is_salvaged_leniently_under_a_configured_chat_adapter():
    dspy.configure(adapter=dspy.ChatAdapter())
    with FakeOpenAIServer(reply="just a plain answer") as server:
        cset = sample_candidates(dspy.Predict("prompt -> response"), {"prompt": "q"}, lm=_lm(server), n=2)
    assert [c.parse for c in cset.candidates] == ["lenient", "lenient"]
    assert cset.candidates[0].outputs["response"] == "just a plain answer"


def test_all_failed_raises_sampling_error():
    with FakeOpenAIServer(fail_rate=1.0) as server:
        lm = Endpoint("fake", "openai/fake", api_base=server.api_base, api_key="x", num_retries=0).lm(cache=False)
        with pytest.raises(SamplingError, match="all 2 samples failed"):
            sample_candidates(dspy.Predict("question -> answer"), {"question": "q"}, lm=lm, n=2)


def test_dedupe_drops_exact_duplicates():
    with FakeOpenAIServer(reply="[[ ## answer ## ]]\nsame\n\n[[ ## completed ## ]]") as server:
        cset = sample_candidates(dspy.Predict("question -> answer"), {"question": "q"}, lm=_lm(server), n=3, dedupe=True)
    assert len(cset.candidates) == 1


@pytest.mark.parametrize("kwargs, message", [({"n": 0}, "n must be"), ({"pool": {}}, "empty"), ({"pool": [object()]}, "not a dspy LM")])
def test_bad_arguments_fail_before_any_call(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        sample_candidates(dspy.Predict("q -> a"), {"q": "x"}, lm=dspy.utils.DummyLM([{"a": "1"}]), **kwargs)


def test_no_lm_configured_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="no LM"):
        sample_candidates(dspy.Predict("q -> a"), {"q": "x"}, n=2)


def test_candidate_set_round_trips_through_json():
    from fusion_dspy.types import CandidateSet

    with FakeOpenAIServer() as server:
        cset = sample_candidates(dspy.Predict("question -> answer"), {"question": "q"}, lm=_lm(server), n=2)
    again = CandidateSet.from_dict(json.loads(json.dumps(cset.to_dict())))
    assert again.to_dict() == cset.to_dict()  # seconds are kept to 0.1 ms
    assert again.first(1).to_dict()["candidates"] == cset.to_dict()["candidates"][:1]


def test_usage_split_corrects_servers_that_count_one_choice():
    from fusion_dspy.sampling import split_usage
    from fusion_dspy.types import Usage

    texts = ["a" * 200, "b" * 200, "c" * 100, "d" * 300]
    # llama.cpp style: 50 completion tokens reported for four choices -> scaled by length
    under = split_usage(Usage(40, 50, 2.0, 1), texts)
    assert sum(u.completion_tokens for u in under) == 200 and under[3].completion_tokens == 75
    assert sum(u.prompt_tokens for u in under) == 40 and sum(u.calls for u in under) == 1
    # a server that counts every choice (vLLM) is left alone
    full = split_usage(Usage(40, 200, 2.0, 1), texts)
    assert sum(u.completion_tokens for u in full) == 200


def test_one_sample_without_its_answer_line_is_salvaged_as_with_n():
    """n=1 (greedy) runs the program itself: the same lenient reading as an n-request's choices."""
    with FakeOpenAIServer(reply="some thinking without the label") as server:
        cset = sample_candidates(dspy.Predict("question -> reasoning, answer"), {"question": "q"}, lm=_lm(server), n=1, temperature=0.0)
    (only,) = cset.candidates
    assert only.ok and only.parse == "lenient" and only.outputs == {"reasoning": "", "answer": "some thinking without the label"}


class SlotLimitedLM(dspy.BaseLM):
    """llama.cpp's refusal of n above its parallel slots, then n choices; records each request's n and rollout id."""

    def __init__(self, slots: int = 4, **kw):
        super().__init__(model="slots", **kw)
        self.slots = slots
        self.seen = []

    def forward(self, prompt=None, messages=None, **kwargs):
        from types import SimpleNamespace

        n = kwargs.get("n") or 1
        self.seen.append((n, kwargs.get("rollout_id", self.kwargs.get("rollout_id"))))
        if n > self.slots:
            raise ValueError(f"litellm.BadRequestError: OpenAIException - Field 'n': Value must be between 1 <= value <= {self.slots}, but got {n}")
        choices = [SimpleNamespace(message=SimpleNamespace(content=f"[[ ## answer ## ]]\nA{len(self.seen)}.{i}\n\n[[ ## completed ## ]]",
                                                           tool_calls=None), finish_reason="stop", logprobs=None) for i in range(n)]
        return SimpleNamespace(choices=choices, usage={"prompt_tokens": 3, "completion_tokens": 2 * n, "total_tokens": 3 + 2 * n}, model="slots")


def test_n_above_the_servers_slots_is_drawn_in_requests_of_its_limit():
    lm = SlotLimitedLM(slots=4, cache=False)
    cset = sample_candidates(dspy.Predict("question -> answer"), {"question": "q"}, lm=lm, n=10)
    assert [c.index for c in cset.ok] == list(range(10)) and [c.sample for c in cset.ok] == list(range(10))
    assert len({c.outputs["answer"] for c in cset.ok}) == 10
    assert [n for n, _ in lm.seen] == [10, 4, 4, 2]  # refused once, then chunks of the limit
    assert len({rollout for _, rollout in lm.seen[1:]}) == 3  # each chunk its own rollout id: fresh samples
    lm.seen.clear()
    again = sample_candidates(dspy.Predict("question -> answer"), {"question": "q2"}, lm=lm, n=5)
    assert len(again.ok) == 5 and [n for n, _ in lm.seen] == [4, 1]  # the limit is remembered: no second refusal


def test_choices_of_a_server_that_counts_one_choice_are_counted_by_its_tokenizer():
    """llama.cpp reports the first choice's completion tokens for n=4; /tokenize gives each choice its own count."""
    texts = ["a" * 400, "b" * 40, "c" * 4, "d" * 120]  # 5.6 characters per reported token: no length heuristic sees it
    with FakeOpenAIServer(reply=lambda body, i: texts[i], usage_first_choice=True, tokenize_chars=4) as server:
        cset = sample_candidates(dspy.Predict("question -> answer"), {"question": "q"}, lm=_lm(server), n=4)
        assert server.requests[-1]["n"] == 4  # one request; the fake reported 100 completion tokens for all of it
    assert [c.outputs["answer"] for c in cset.candidates] == texts
    assert [c.usage.completion_tokens for c in cset.candidates] == [100, 10, 1, 30]
    assert cset.usage.completion_tokens == 141
