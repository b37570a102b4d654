"""PlainAdapter: the task as natural messages, the completion as the answer, labelled lines for more fields."""

from __future__ import annotations

import dspy
import pytest
from dspy.utils.exceptions import AdapterParseError

from fusion_dspy.plain_adapter import PlainAdapter, parse_plain, render_inputs, render_outputs, suits_plain


class Translate(dspy.Signature):
    """Translate the text. Output only the translation."""

    source_language: str = dspy.InputField()
    target_language: str = dspy.InputField()
    source: str = dspy.InputField()
    translation: str = dspy.OutputField()


def test_one_input_one_output_is_the_bare_prompt():
    messages = PlainAdapter().format(dspy.Signature("prompt -> response"), [], {"prompt": "Name three rivers."})
    assert messages == [{"role": "user", "content": "Name three rivers."}]  # no generated "Given the fields ..." line


def test_the_task_instruction_is_the_system_message_and_inputs_are_labelled():
    messages = PlainAdapter().format(Translate, [], {"source_language": "English", "target_language": "German", "source": "Hello"})
    assert messages[0] == {"role": "system", "content": "Translate the text. Output only the translation."}
    assert messages[1]["content"] == "Source language: English\n\nTarget language: German\n\nSource: Hello"
    text = "".join(m["content"] for m in messages)
    for framing in ("[[", "##", "{", "input fields", "output fields", "`"):
        assert framing not in text


def test_several_outputs_ask_for_labelled_lines_and_parse_back():
    sig = dspy.ChainOfThought("question -> answer").predict.signature
    system = PlainAdapter().format(sig, [], {"question": "2+2?"})[0]["content"]
    assert '"Answer:"' in system and "[[" not in system
    parsed = parse_plain(sig, "Two and two make four.\n\n**Answer:** 4")
    assert parsed == {"reasoning": "Two and two make four.", "answer": "4"}
    # the last "Answer:" line wins (a model may write "answer:" inside its reasoning)
    assert parse_plain(sig, "the answer: maybe 3\nno, 4\nAnswer: 4")["answer"] == "4"
    assert parse_plain(sig, render_outputs(sig, {"reasoning": "r", "answer": "a"})) == {"reasoning": "r", "answer": "a"}


def test_scalar_outputs_are_read_and_a_missing_line_is_a_parse_error():
    sig = dspy.Signature("question -> reasoning, answer: int")
    assert parse_plain(sig, "3 + 4 = 7\nAnswer: 7 apples")["answer"] == 7
    with pytest.raises(AdapterParseError, match="Answer"):
        parse_plain(sig, "I think it is 7")
    with pytest.raises(AdapterParseError):
        parse_plain(dspy.Signature("q -> n: int"), "no number here")


def test_structured_outputs_go_to_the_structured_adapter():
    sig = dspy.Signature("question -> items: list[str]")
    assert not suits_plain(sig)
    messages = PlainAdapter().format(sig, [], {"question": "q"})
    assert "[[ ## items ## ]]" in messages[0]["content"]  # DSPy's ChatAdapter took it
    assert suits_plain(dspy.Signature("question -> answer: int, sure: bool"))


def test_demos_are_user_and_assistant_turns():
    sig = dspy.Signature("question -> answer")
    messages = PlainAdapter().format(sig, [{"question": "1+1?", "answer": "2"}], {"question": "2+2?"})
    assert messages == [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "2+2?"},
    ]


class TextLM(dspy.BaseLM):
    """Answers every request with one fixed text (DSPy's DummyLM writes chat-adapter fields)."""

    def __init__(self, text: str):
        super().__init__(model="text-lm")
        self.text = text

    def forward(self, prompt=None, messages=None, **kwargs):
        from types import SimpleNamespace as NS

        choice = NS(message=NS(content=self.text, tool_calls=None), finish_reason="stop", logprobs=None)
        return NS(choices=[choice], usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}, model="text-lm")


def test_predict_runs_through_it():
    lm = TextLM("Paris is the capital.\nAnswer: Paris")
    with dspy.context(lm=lm, adapter=PlainAdapter()):
        pred = dspy.ChainOfThought("question -> answer")(question="Capital of France?")
    assert (pred.reasoning, pred.answer) == ("Paris is the capital.", "Paris")


def test_render_inputs_puts_long_values_below_their_label():
    sig = dspy.Signature("context, question -> answer")
    text = render_inputs(sig, {"context": "line one\nline two", "question": "why?"})
    assert text == "Context:\nline one\nline two\n\nQuestion: why?"
