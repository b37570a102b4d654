"""The aggregation registry: names, needs, validation, run order and the record form."""

from __future__ import annotations

import dspy
import pytest

from fusion_dspy.aggregate import (
    AGGREGATORS,
    ALL_METHODS,
    BON,
    FUSION,
    GREEDY,
    MAJORITY,
    ORACLE,
    Aggregators,
    available_methods,
    check_methods,
    example_language,
)
from fusion_dspy.errors import ConfigurationError
from fusion_dspy.task import Task
from fusion_dspy.types import Candidate, CandidateSet, Fusion, Usage


def _cset(answers):
    cands = tuple(Candidate(i, "m", i, {"answer": a}, usage=Usage(10, 5, 0.1, 1)) for i, a in enumerate(answers))
    return CandidateSet({"question": "q"}, cands, ("answer",), Usage(30, 15, 0.3, 1))


def _task(*, gold=True, normalize=True):
    return Task("t", lambda *a, **k: [], lambda: dspy.Predict("question -> answer"),
                lambda ex, pred, trace=None: float(ex.answer == pred.answer), "answer",
                normalize=(lambda a: str(a).strip().lower()) if normalize else None, has_gold=gold)


class RecordingFusor:
    """Stands in for a Fusor: answers with the first candidate and records what it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, *, candidates, fallback_scores=None, language=None):
        self.calls.append({"fallback_scores": fallback_scores, "language": language})
        first = candidates.ok[0]
        return Fusion({"answer": f"fused {first.outputs['answer']}"}, "", tuple(c.index for c in candidates.ok), Usage(7, 3, 0.1, 1))


def test_every_method_is_one_registered_object_with_its_name():
    assert ALL_METHODS == (GREEDY, BON, FUSION, ORACLE, MAJORITY)
    for name, cls in AGGREGATORS.items():
        assert cls.name == name and cls.summary and cls.needs
    assert not AGGREGATORS[ORACLE].deployable and all(AGGREGATORS[m].deployable for m in (BON, FUSION, MAJORITY))


def test_available_methods_follow_what_the_task_offers():
    assert available_methods(_task()) == ALL_METHODS
    assert available_methods(_task(gold=False, normalize=False)) == (GREEDY, BON, FUSION)
    assert available_methods(None, baselines=False) == (BON, FUSION)  # open-ended prompts: synth's methods
    assert ORACLE not in available_methods(_task(), deployable_only=True)


def test_check_methods_names_the_valid_ones_and_what_a_task_lacks():
    assert check_methods([" bon", "fusion "]) == (BON, FUSION)
    with pytest.raises(ConfigurationError, match="valid methods: greedy, bon, fusion, oracle, majority"):
        check_methods(["vote"])
    with pytest.raises(ConfigurationError, match="no methods given"):
        check_methods(["", " "])
    with pytest.raises(ConfigurationError, match="has no gold answers, so 'oracle'"):
        check_methods([ORACLE], _task(gold=False))
    with pytest.raises(ConfigurationError, match="has no answer normaliser, so 'majority'"):
        check_methods([MAJORITY], _task(normalize=False))
    with pytest.raises(ConfigurationError, match="unknown synth method"):
        check_methods([MAJORITY], allowed=(BON, FUSION), what="synth method")


def test_a_method_without_what_it_needs_is_a_clear_error():
    cset = _cset(["a", "b"])
    with pytest.raises(ConfigurationError, match="'fusion' needs a fusor"):
        Aggregators().run(cset, [FUSION])
    with pytest.raises(ConfigurationError, match="'bon' needs a scorer"):
        Aggregators().run(cset, [BON])
    with pytest.raises(ConfigurationError, match="'majority' needs a task with an answer normaliser"):
        Aggregators(task=_task(normalize=False)).run(cset, [MAJORITY])
    with pytest.raises(ConfigurationError, match="gold example"):
        Aggregators(task=_task()).run(cset, [ORACLE])


def test_best_of_n_runs_first_so_fusion_falls_back_on_its_scores_and_results_keep_the_asked_order():
    fusor = RecordingFusor()
    scorer = lambda inputs, pred: {"a": 1.0, "b": 3.0, "c": 2.0}[pred.answer]  # noqa: E731
    example = dspy.Example(question="q", answer="c", language="en-de_DE").with_inputs("question")
    results = Aggregators(fusor=fusor, scorer=scorer, task=_task()).run(_cset(["a", "b", "c"]), [FUSION, GREEDY, MAJORITY, BON, ORACLE], example)
    assert list(results) == [FUSION, MAJORITY, BON, ORACLE]  # the baseline is not an aggregation
    assert fusor.calls == [{"fallback_scores": {0: 1.0, 1: 3.0, 2: 2.0}, "language": "de_DE"}]
    assert results[BON]["selection"]["index"] == 1 and results[ORACLE]["selection"]["index"] == 2
    assert results[ORACLE]["selection"]["method"] == ORACLE and results[MAJORITY]["selection"]["method"] == MAJORITY
    fused = results[FUSION]
    assert fused["outputs"] == {"answer": "fused a"} and fused["fusion"]["order"] == [0, 1, 2]
    assert fused["usage"]["sampling"]["prompt_tokens"] == 30 and fused["usage"]["aggregation"]["prompt_tokens"] == 7
    assert fused["usage"]["total"]["prompt_tokens"] == 37 and fused["seconds"] >= 0


def test_example_language_gives_a_pair_s_target():
    assert example_language(dspy.Example(language="de")) == "de"
    assert example_language(dspy.Example(language="en-ko_KR")) == "ko_KR"
    assert example_language(dspy.Example(language="-")) is None and example_language(None) is None




def test_method_names_are_spelled_in_the_registry_only():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    quoted = [f'"{name}"' for name in ALL_METHODS] + [f"'{name}'" for name in ALL_METHODS]
    found = []
    for folder in ("fusion_dspy", "programs", "optimizers"):
        for path in (repo / folder).rglob("*.py"):
            rel = path.relative_to(repo).as_posix()
            if rel == "fusion_dspy/aggregate/registry.py":
                continue
            text = path.read_text(encoding="utf-8")
            found += [f"{rel}: {q}" for q in quoted if q in text]
    assert found == [], "use the constants of fusion_dspy.aggregate (BON, FUSION, ...) instead"
