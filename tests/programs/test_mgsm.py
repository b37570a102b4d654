"""MGSM: loader (any language), integer extraction, metric, normalize, program with DummyLM."""

from __future__ import annotations

from pathlib import Path

import dspy
import pytest
from dspy.utils import DummyLM

from fusion_dspy.data import BadRows
from fusion_dspy.errors import ConfigurationError, DataError
from fusion_dspy.programs import mgsm
from fusion_dspy.programs.mgsm import extract_integer

FIXTURES = Path(__file__).parent / "fixtures" / "mgsm"


def test_load_real_rows_with_language_from_file_name():
    examples = mgsm.load(FIXTURES / "mgsm_de.tsv")
    assert [e.id for e in examples] == ["mgsm_de:1", "mgsm_de:2", "mgsm_de:3"]
    assert {e.language for e in examples} == {"de"}
    assert [e.answer for e in examples] == [18, 3, 70000]
    assert examples[0].inputs().toDict() == {"question": examples[0].question}
    assert examples[0].question.startswith("Janets Enten")


def test_unseen_language_and_thousands_in_gold():
    examples = mgsm.load(FIXTURES / "mgsm_sw.tsv")
    assert {e.language for e in examples} == {"sw"}
    assert [e.answer for e in examples] == [7, 2125]


def test_folder_reads_every_tsv_sorted_and_limit_is_per_language():
    examples = mgsm.load(FIXTURES, limit=2)
    assert [e.language for e in examples] == ["de", "de", "ja", "ja", "sw", "sw"]
    assert len({e.id for e in examples}) == 6


@pytest.mark.parametrize(
    ("name", "language"),
    [("mgsm_de.tsv", "de"), ("bn.tsv", "bn"), ("mgsm-zh_TW.tsv", "zh_TW"), ("mgsm_native_te.tsv", "native_te"), ("mgsm.tsv", "mgsm")],
)
def test_language_from_file_name(name, language):
    assert mgsm.language_from_filename(name) == language


def test_language_override(tmp_path):
    f = tmp_path / "problems.tsv"
    f.write_text("Q?\t4\n", encoding="utf-8")
    assert mgsm.load(f)[0].language == "problems"
    assert mgsm.load(f, language="yo")[0].language == "yo"


def test_byte_order_mark_is_dropped(tmp_path):
    f = tmp_path / "mgsm_en.tsv"
    f.write_text("\ufeffHow many?\t4\n", encoding="utf-8")
    assert mgsm.load(f)[0].question == "How many?"


def test_quotes_are_text_not_csv_quoting(tmp_path):
    f = tmp_path / "mgsm_en.tsv"
    f.write_text('He said "two\tthree" apples.\t5\n', encoding="utf-8")  # QUOTE_NONE: the tab splits
    with pytest.raises(DataError, match="expected 2 tab-separated fields"):
        mgsm.load(f)
    f.write_text('He said "hi.\t5\n', encoding="utf-8")
    assert mgsm.load(f)[0].question == 'He said "hi.'


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Answer: 18", 18),
        ("She makes 9 * 2 = 18 dollars.\nAnswer: 18", 18),
        ("Antwort: 1.234", 1234),
        ("Answer: $1,234", 1234),
        ("Réponse : 1 200 €", 1200),
        ("Réponse : 1\u202f200", 1200),
        ("Respuesta: 70.000 dólares", 70000),
        ("Answer: **18**", 18),
        ("答案：18", 18),
        ("答え：１８個", 18),
        ("答案是18个", 18),
        ("उत्तर: ४२", 42),
        ("الإجابة: ٤٢", 42),
        ("คำตอบ: ๑๘", 18),
        ("উত্তর: ৭", 7),
        ("Jibu: 7", 7),
        ("Ответ: -5", -5),
        ("Answer: \u22127", -7),
        ("16 - 3 - 4 = 9", 9),
        ("It costs 18.00 dollars", 18),
        ("Answer: 2.5", None),
        ("no number here", None),
        ("", None),
        (None, None),
        ("Answer: 18\nStep 2: 99", 18),
    ],
)
def test_extract_integer(text, value):
    assert extract_integer(text) == value


def test_metric_and_normalize():
    example = dspy.Example(question="q", answer=18, language="en", id="x").with_inputs("question")
    assert mgsm.metric(example, dspy.Prediction(reasoning="...", answer="18")) == 1.0
    assert mgsm.metric(example, dspy.Prediction(reasoning="...", answer="17")) == 0.0
    # answer field without a number: the end of the reasoning counts
    assert mgsm.metric(example, dspy.Prediction(reasoning="9*2=18\nAnswer: 18", answer="see above")) == 1.0
    assert mgsm.metric(example, dspy.Prediction(reasoning="", answer="")) == 0.0
    assert mgsm.metric(example, "Answer: 18") == 1.0  # a plain string (e.g. a fused answer)
    assert mgsm.normalize(dspy.Prediction(answer="$1,234")) == "1234"
    assert mgsm.normalize({"answer": "Answer: 1234"}) == "1234"
    assert mgsm.normalize(dspy.Prediction(answer="unknown", reasoning="")) is None


def test_program_runs_with_dummy_lm_and_metric_scores_it():
    example = mgsm.load(FIXTURES / "mgsm_sw.tsv")[0]
    lm = DummyLM([{"reasoning": "12 - 5 = 7", "answer": "Jibu: 7"}])
    with dspy.context(lm=lm):
        prediction = mgsm.TASK.program()(**example.inputs())
    assert mgsm.TASK.metric(example, prediction) == 1.0
    prompt = lm.history[-1]["messages"][0]["content"]
    assert "Answer:" in prompt and "step by step" in prompt


# --- bad input -------------------------------------------------------------------------------------


def test_bad_gold_names_file_and_line(tmp_path):
    f = tmp_path / "mgsm_xx.tsv"
    f.write_text("Q1?\t3\nQ2?\tthree\nQ3?\t4\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        mgsm.load(f)
    assert info.value.path == str(f) and info.value.line == 2
    assert "not an integer" in str(info.value)
    bad = BadRows()
    examples = mgsm.load(f, skip_bad_rows=True, bad_rows=bad)
    assert [e.answer for e in examples] == [3, 4]
    assert bad.count == 1


def test_missing_field_empty_and_non_utf8(tmp_path):
    f = tmp_path / "mgsm_xx.tsv"
    f.write_text("Q1?\t3\nno answer column\n", encoding="utf-8")
    with pytest.raises(DataError, match=r":2: expected 2 tab-separated fields"):
        mgsm.load(f)
    empty = tmp_path / "mgsm_yy.tsv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        mgsm.load(empty)
    latin1 = tmp_path / "mgsm_zz.tsv"
    latin1.write_bytes("Q1?\t3\nWie viel kostet das Gemüse?\t4\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        mgsm.load(latin1)
    assert info.value.path == str(latin1) and isinstance(info.value.line, int) and "UTF-8" in str(info.value)


def test_non_utf8_names_the_exact_line(tmp_path):
    latin1 = tmp_path / "mgsm_zz.tsv"
    latin1.write_bytes("Q1?\t3\nWie viel kostet das Gemüse?\t4\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        mgsm.load(latin1)
    assert info.value.line == 2


def test_skip_bad_rows_counts_whole_bad_files_in_a_folder(tmp_path):
    (tmp_path / "mgsm_aa.tsv").write_text("Q?\t1\n", encoding="utf-8")
    (tmp_path / "mgsm_bb.tsv").write_text("", encoding="utf-8")
    bad = BadRows()
    examples = mgsm.load(tmp_path, skip_bad_rows=True, bad_rows=bad)
    assert [e.language for e in examples] == ["aa"]
    assert bad.count == 1 and "empty" in bad.examples[0]


def test_missing_path_and_bad_limit(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        mgsm.load(tmp_path / "nope.tsv")
    with pytest.raises(DataError, match="no .tsv files"):
        mgsm.load(tmp_path)
    with pytest.raises(ConfigurationError, match="limit"):
        mgsm.load(FIXTURES, limit=0)
