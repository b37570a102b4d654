"""Substance checks: framing, copied share, stubs, length ratio — what a user reads, not whether it parsed."""

from __future__ import annotations

import pytest

from fusion_dspy.fuse import cut_loop
from fusion_dspy.substance import assess, copied_share, framing_found, loop_start, repeated_sentences, summarize

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
        ("1. Output fields are: answer", "field list"),
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
        ("Your response contains a mix of structured instructions. Here's a revised version:", "review of the drafts"),
    ],
)
def test_prompt_framing_is_found(text, kind):
    assert kind in framing_found(text)


@pytest.mark.parametrize("text", ["Write short sentences and show an example.", "def f(x):\n    return {x: 1}", "Answer: 42", "## Tips\n- one",
                                  "Check your answer: it should be 42.",
                                  "The `useInputTypeField` hook sets the type of input field on the dropdown.",
                                  "The draft of the law was rejected.", "To fix your Makefile, add a rule."])
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


# the demo's fused answer on the embedded model (houseplants prompt): a passage said under three list items
_LOOPED_PASSAGE = (
    "You can buy a small amount of fuel that fits inside the engine of your car. "
    "However, make sure you're not using it in cooking - they have the perfect little digestive tract in their stomach!"
)
_LOOPED = "\n\n".join([
    "Here are some tips for staying healthy in the midst of travel:",
    "1. **Water well**: While you're away, make sure to only water them when they need it. Ask a neighbour to check the soil.",
    "2. **Fuel**: Don't forget to leave some extra fuel for your travels. " + _LOOPED_PASSAGE,
    "3. **Battery life**: As a traveler, it's essential to ensure that your devices are always charged. " + _LOOPED_PASSAGE,
    "4. **Fuel**: Group the pots together in a cool room away from the window. " + _LOOPED_PASSAGE,
    "5. **Wick watering**: Run a cotton string from a jar of water into each pot so the soil stays moist for two weeks.",
])


def test_a_passage_said_three_times_is_a_loop_that_4_gram_shares_miss():
    sub = assess(_LOOPED, CANDIDATES)
    assert sub.repetition < 0.5  # too little of a long answer repeats for the 4-gram share
    assert repeated_sentences(_LOOPED) == 2 and sub.degenerate
    said_twice = _LOOPED.replace("4. **Fuel**: Group the pots together in a cool room away from the window. " + _LOOPED_PASSAGE, "")
    assert repeated_sentences(said_twice) == 0 and not assess(said_twice, CANDIDATES).degenerate
    assert repeated_sentences("Yes.\nYes.\nYes.\nNo, water it weekly.") == 0  # short sentences may recur
    # the numbered loop of a Spanish-to-Japanese translation by the embedded fusor: the numbers differ, the line does not
    line = "バス胡とし、バジューンのおわくを変きに彼らは頂上るように進局する．"
    assert repeated_sentences("\n\n".join(f"{i}. {line}" for i in range(1, 5))) == 1
    assert repeated_sentences("\n".join(f"{i}. Step {i} of the recipe" for i in range(1, 5))) == 0
    handler = "    except requests.RequestException as exc:\n        log.warning(exc)\n"
    code = "```python\n" + "".join(f"try:\n    get(url{i})\n{handler}" for i in range(3)) + "```"
    assert repeated_sentences("Retry each call:\n" + code) == 0  # code repeats lines by nature; 4-grams judge its loops


def test_a_mangled_fence_tag_is_framing():
    assert "fence tag" in framing_found('The answer is:\n<candid id="1">')


def test_a_dict_in_an_answers_code_is_not_a_repr_of_the_inputs():
    code = "```python\nimages = {'name': 'image0', 'description': 'red'}\n```"
    assert framing_found(code) == []
    assert framing_found("{'prompt': 'Give two tips'}") == ["inputs repr"]


# what the embedded fusor wrote for a php-fpm question (shortened): two fair sentences, then one paragraph until max_tokens
_SAID = ("The function `create_backup` is used to create backups of the config files, which can be configured with "
         "custom options provided by the script. ")
_TAIL_LOOP = ("The script includes a function called `create_backup` that copies the settings before a change.\n"
              "It uses `optimize_php_version` to optimize a single PHP version.\n" + _SAID + "\n" + _SAID * 4 + "The function")


def test_the_loop_an_answer_ends_in_starts_at_its_second_saying():
    start = loop_start(_TAIL_LOOP)
    assert _TAIL_LOOP[start:].startswith(_SAID) and _TAIL_LOOP[:start].count("custom options") == 1
    assert loop_start(CANDIDATES[0]) is None and loop_start("") is None
    assert loop_start(_LOOPED) is None  # a passage looping mid-answer, with fresh text after it: no tail to cut
    assert loop_start("Yes. " * 8) is None  # too short a rest to call a loop


def test_cut_loop_keeps_the_text_before_the_loop_up_to_a_line_or_sentence_end():
    assert cut_loop(_TAIL_LOOP) == _TAIL_LOOP[: _TAIL_LOOP.index(_SAID) + len(_SAID)].rstrip()
    numbered = "Tips:\n1. Water them well before you leave.\n" + "".join(f"{i}. Ask a neighbour to water them twice a week.\n" for i in range(2, 12))
    assert cut_loop(numbered) == "Tips:\n1. Water them well before you leave.\n2. Ask a neighbour to water them twice a week."
    assert cut_loop(CANDIDATES[1]) is None
    assert cut_loop("Subject. " * 40) == "Subject."
