"""Substance checks: framing, copied share, stubs, length ratio — what a user reads, not whether it parsed."""

from __future__ import annotations

import pytest

from fusion_dspy.substance import assess, copied_share, framing_found, summarize

CANDIDATES = [
    "Write short sentences. Use headings so readers can scan the page, and show one example per idea.",
    "Keep sentences short and concrete. Put an example after every rule so readers see it applied.",
]


@pytest.mark.parametrize(
    "text, kind",
    [
        ("{answer}", "placeholder"),
        ("[[ ## answer ## ]]\nfour", "DSPy field marker"),
        ("## answer ##", "DSPy field marker"),
        ("[## answer##]", "DSPy field marker"),
        ("Your input fields are: 1. `prompt` (str) 2. candidates", "field list"),
        ("The input fields should be formatted as follows", "field list"),
        ('<candidate id="1">copied</candidate>', "fence tag"),
        ("{'source_language': 'English', 'source': 'Hi'}", "inputs repr"),
        ("comparison: candidate 1 is better", "field label"),
        ("done [[ ## completed ## ]]", "DSPy field marker"),
        ("**Candidate 1:** Taco de la Familia", "draft reference"),
        ("As draft 2 says, bake it.", "draft reference"),
        ("Your answer meets all the requirements of the task.", "review of the drafts"),
        ("Your answer has been successfully added to the list of accepted answers.", "review of the drafts"),
        ("Both drafts are correct, but the second is clearer.", "review of the drafts"),
        ("The candidate answers agree that it is 42.", "review of the drafts"),
    ],
)
def test_prompt_framing_is_found(text, kind):
    assert kind in framing_found(text)


@pytest.mark.parametrize("text", ["Write short sentences and show an example.", "def f(x):\n    return {x: 1}", "Answer: 42", "## Tips\n- one",
                                  "Check your answer: it should be 42.", "The draft of the law was rejected.", "To fix your Makefile, add a rule."])
def test_plain_answers_have_no_framing(text):
    assert framing_found(text) == []


def test_copied_share_counts_reordered_passages_of_twelve_characters():
    fused = "Put an example after every rule. Use headings so readers can scan the page."
    assert copied_share(fused, CANDIDATES) > 0.9
    assert copied_share("Completely different words here entirely.", CANDIDATES) == 0.0
    assert copied_share("short", CANDIDATES) == 0.0


def test_assess_flags_stubs_fallbacks_and_framing():
    good = assess("Write short sentences. Put an example after every rule so readers see it applied.", CANDIDATES)
    assert good.substantive and good.framing_free and 0.7 < good.length_ratio < 1.2
    assert assess("{answer}", CANDIDATES).substantive is False
    stub = assess("No", CANDIDATES)
    assert stub.stub and not stub.substantive
    assert not assess(CANDIDATES[0], CANDIDATES, fallback=True).substantive
    summary = summarize([good, stub])
    assert summary["answers"] == 2 and summary["substantive"] == 0.5 and summary["stubs"] == 1


def test_a_decoding_loop_is_degenerate():
    loop = "1. Circuit: " + "400MA + 20A = " * 40
    sub = assess(loop, ["400MA + 20A = 420MA, so use a resistor of 10 ohms in series."])
    assert sub.degenerate and sub.repetition > 0.9
    assert not assess(CANDIDATES[0], CANDIDATES).degenerate


def test_a_mangled_fence_tag_is_framing():
    assert "fence tag" in framing_found('The answer is:\n<candid id="1">')


def test_a_dict_in_an_answers_code_is_not_a_repr_of_the_inputs():
    code = "```python\nimages = {'name': 'image0', 'description': 'red'}\n```"
    assert framing_found(code) == []
    assert framing_found("{'prompt': 'Give two tips'}") == ["inputs repr"]
