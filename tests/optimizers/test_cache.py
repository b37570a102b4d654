"""The candidate cache: sampled once, reused for smaller n, grown (fresh samples only) for larger n."""

from __future__ import annotations

import dspy

from fusion_dspy.optimizers.cache import CandidateCache
from tests.optimizers.fakes import examples, teacher


def _answers(cset):
    return [c.outputs["answer"] for c in cset.candidates]


def test_smaller_n_reuses_and_larger_n_draws_only_the_missing_samples(tmp_path):
    program = dspy.Predict("question -> answer")
    good = teacher("good")
    ex = examples(1)[0]  # 3 + 10 = 13; samples 0..3 answer 14, 13, 13, 14
    cache = CandidateCache(tmp_path / "c.jsonl", task_name="sums")

    two = cache.teacher_set(program, ex, "good", good, n=2, temperature=0.5)
    assert _answers(two) == ["14", "13"] and good.calls == 1
    one = cache.teacher_set(program, ex, "good", good, n=1, temperature=0.5)
    assert _answers(one) == ["14"] and good.calls == 1  # reused, no call
    four = cache.teacher_set(program, ex, "good", good, n=4, temperature=0.5)
    assert _answers(four) == ["14", "13", "13", "14"] and good.calls == 2  # only samples 2 and 3 were drawn
    assert [c.sample for c in four.candidates] == [0, 1, 2, 3]
    assert four.usage.total_tokens == sum(c.usage.total_tokens for c in four.candidates) > two.usage.total_tokens

    # a new process reads the largest pool back; nothing is sampled again
    again = CandidateCache(tmp_path / "c.jsonl", task_name="sums")
    fresh = teacher("good")
    assert _answers(again.teacher_set(program, ex, "good", fresh, n=3, temperature=0.5)) == ["14", "13", "13"]
    assert fresh.calls == 0
    # another temperature or task is another pool
    again.teacher_set(program, ex, "good", fresh, n=1, temperature=0.9)
    assert fresh.calls == 1
    assert CandidateCache(tmp_path / "c.jsonl", task_name="other").cached_size("q0", fresh, 0.5) == 0


def test_a_pool_of_teachers_is_each_teachers_first_n(tmp_path):
    program = dspy.Predict("question -> answer")
    cache = CandidateCache(tmp_path / "c.jsonl", task_name="sums")
    ex = examples(1)[0]
    cset = cache.pool_set(program, ex, {"good": teacher("good"), "bad": teacher("bad")}, n=2, temperature=0.5)
    assert [(c.index, c.model, c.sample) for c in cset.candidates] == [(0, "good", 0), (1, "good", 1), (2, "bad", 0), (3, "bad", 1)]
    assert _answers(cset) == ["14", "13", "15", "15"]
