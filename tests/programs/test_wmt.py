"""WMT24++: loader (any pair, canary and bad sources), prompt fields, chrF++/BLEU, COMET's absence."""

from __future__ import annotations

import json
from pathlib import Path

import dspy
import pytest
from dspy.utils import DummyLM

from fusion_dspy.data import BadRows
from fusion_dspy.errors import ConfigurationError, DataError
from fusion_dspy.programs import wmt

FIXTURES = Path(__file__).parent / "fixtures" / "wmt"


def test_load_skips_canary_and_bad_source_by_default():
    examples = wmt.load(FIXTURES / "en-de_DE.jsonl")
    # fixture: canary, 3 good rows, 1 is_bad_source row
    assert [e.id for e in examples] == ["en-de_DE:1", "en-de_DE:2", "en-de_DE:3"]
    first = examples[0]
    assert first.language == "en-de_DE"
    assert first.inputs().toDict() == {
        "source_language": "English",
        "target_language": "German",
        "target_country": "Germany",
        "source": first.source,
    }
    assert first.target and first.domain == "news"


def test_options_keep_bad_source_and_canary():
    with_bad = wmt.load(FIXTURES / "en-de_DE.jsonl", include_bad_source=True)
    assert len(with_bad) == 4
    everything = wmt.load(FIXTURES / "en-de_DE.jsonl", include_bad_source=True, include_canary=True)
    assert everything[0].id == "en-de_DE:0" and everything[0].source.startswith("CANARY GUID")
    task = wmt.make_task(include_bad_source=True)
    assert len(task.load(FIXTURES / "en-de_DE.jsonl")) == 4


def test_unseen_pairs_from_a_folder():
    examples = wmt.load(FIXTURES, limit=1)
    by_lang = {e.language: e for e in examples}
    assert sorted(by_lang) == ["en-de_DE", "en-ko_KR", "en-sr_Latn_RS"]
    assert by_lang["en-ko_KR"].target_language == "Korean"
    assert by_lang["en-ko_KR"].target_country == "South Korea"
    assert by_lang["en-sr_Latn_RS"].target_language == "Serbian (Latin script)"
    assert by_lang["en-sr_Latn_RS"].target_country == "Serbia"


@pytest.mark.parametrize(
    ("lp", "source", "target", "country", "code"),
    [
        ("en-de_DE", "English", "German", "Germany", "de"),
        ("en-pt_BR", "English", "Portuguese", "Brazil", "pt"),
        ("en-zh_TW", "English", "Chinese (Traditional)", "Taiwan", "zh"),
        ("en-zh_CN", "English", "Chinese", "China", "zh"),
        ("en-sr_Cyrl_RS", "English", "Serbian (Cyrillic script)", "Serbia", "sr"),
        ("eng-deu", "English", "German", "any country where German is used", "de"),
        ("en-de-AT", "English", "German", "Austria", "de"),
        ("en-fil_PH", "English", "Filipino", "Philippines", "fil"),
        ("en-es_419", "English", "Spanish", "Latin America", "es"),
        ("en-xx_QQ", "English", "xx", "QQ", "xx"),  # unknown codes are kept, never refused
    ],
)
def test_parse_lp(lp, source, target, country, code):
    assert wmt.parse_lp(lp) == {"source_language": source, "target_language": target, "target_country": country, "target_code": code}


def test_parse_lp_rejects_no_pair():
    with pytest.raises(ValueError, match="SRC-TGT"):
        wmt.parse_lp("de_DE")


def test_sentence_metric_known_values():
    example = dspy.Example(target="The cat sat on the mat.", language="en-en", id="x")
    assert wmt.metric(example, dspy.Prediction(translation="The cat sat on the mat.")) == pytest.approx(1.0)
    assert wmt.metric(example, dspy.Prediction(translation="")) == 0.0
    assert wmt.metric(example, "Completely unrelated words here") < 0.2
    partial = wmt.metric(example, {"translation": "The cat sat on a mat."})
    assert 0.5 < partial < 1.0
    from sacrebleu.metrics import CHRF

    assert partial == pytest.approx(CHRF(word_order=2).sentence_score("The cat sat on a mat.", ["The cat sat on the mat."]).score / 100)


def test_corpus_metrics_known_values():
    examples = wmt.load(FIXTURES / "en-ko_KR.jsonl")
    perfect = wmt.corpus_metrics(examples, [e.target for e in examples])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf++"] == pytest.approx(100.0)
    assert "comet" not in perfect
    empty = wmt.corpus_metrics(examples, [dspy.Prediction(translation="") for _ in examples])
    assert empty["bleu"] == 0.0 and empty["chrf++"] == 0.0
    with pytest.raises(ConfigurationError, match="2 examples but 1 predictions"):
        wmt.corpus_metrics(examples, ["x"])


def test_bleu_tokenizer_by_target_language():
    assert wmt.bleu_tokenizer("zh") == "zh"
    assert wmt.bleu_tokenizer("ja") in {"ja-mecab", "char"}
    assert wmt.bleu_tokenizer("th") == "char"
    assert wmt.bleu_tokenizer("de") == "13a"
    assert wmt.bleu_tokenizer("deu") == "13a"


def test_japanese_corpus_bleu_is_not_zero_for_a_close_unspaced_hypothesis():
    example = dspy.Example(target="東京は日本の首都です。", target_code="ja", language="en-ja_JP", id="x")
    scores = wmt.corpus_metrics([example], ["東京は日本の首都だ。"])
    assert 20 < scores["bleu"] < 100  # with whitespace tokenisation it would be 0


def test_comet_not_installed_gives_a_clear_error(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_comet(name, *args, **kwargs):
        if name == "comet" or name.startswith("comet."):
            raise ImportError("No module named 'comet'")
        return real_import(name, *args, **kwargs)

    from fusion_dspy.programs import _comet

    monkeypatch.setattr(builtins, "__import__", no_comet)
    _comet._load.cache_clear()
    (tmp_path / "model.ckpt").write_bytes(b"")
    examples = wmt.load(FIXTURES / "en-ko_KR.jsonl")
    with pytest.raises(ConfigurationError, match="unbabel-comet"):
        wmt.comet_scores(examples, [e.target for e in examples], model_path=str(tmp_path / "model.ckpt"))
    monkeypatch.setenv(wmt.COMET_MODEL_ENV, str(tmp_path / "model.ckpt"))
    with pytest.raises(ConfigurationError, match="unbabel-comet"):
        wmt.TASK.corpus_metrics(examples, [e.target for e in examples])


def test_comet_without_model_path(monkeypatch):
    monkeypatch.delenv(wmt.COMET_MODEL_ENV, raising=False)
    with pytest.raises(ConfigurationError, match=wmt.COMET_MODEL_ENV):
        wmt.comet_scores([], [])


def test_program_runs_with_dummy_lm_and_metric_scores_it():
    example = wmt.load(FIXTURES / "en-ko_KR.jsonl")[0]
    lm = DummyLM([{"translation": example.target}])
    with dspy.context(lm=lm):
        prediction = wmt.TASK.program()(**example.inputs())
    assert wmt.TASK.metric(example, prediction) == pytest.approx(1.0)
    prompt = lm.history[-1]["messages"]
    text = "\n".join(m["content"] for m in prompt)
    assert "professional translator" in text and "Korean" in text and "South Korea" in text


# --- bad input -------------------------------------------------------------------------------------


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = json.dumps({"lp": "en-ko_KR", "segment_id": 1, "source": "Hi", "target": "안녕", "is_bad_source": False})


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"lp": "en-ko_KR", "source": "Hi", ', "bad JSON"),
        (json.dumps({"lp": "en-ko_KR", "segment_id": 2, "target": "x"}), "missing field 'source'"),
        (json.dumps({"lp": "en-ko_KR", "segment_id": 2, "source": 5, "target": "x"}), "field 'source' should be str"),
        (json.dumps({"lp": "en-ko_KR", "segment_id": 2, "source": "a", "target": "x", "is_bad_source": "no"}), "is_bad_source"),
        (json.dumps({"lp": "ko_KR", "segment_id": 2, "source": "a", "target": "x"}), "SRC-TGT"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_rows_name_file_and_line_or_are_counted(tmp_path, bad_line, message):
    f = _write(tmp_path / "en-ko_KR.jsonl", [GOOD, bad_line])
    with pytest.raises(DataError, match=message) as info:
        wmt.load(f)
    assert info.value.path == str(f) and info.value.line == 2
    bad = BadRows()
    assert [e.id for e in wmt.load(f, skip_bad_rows=True, bad_rows=bad)] == ["en-ko_KR:1"]
    assert bad.count == 1


def test_empty_and_non_utf8_files(tmp_path):
    empty = tmp_path / "en-ko_KR.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        wmt.load(empty)
    latin1 = tmp_path / "en-fr_FR.jsonl"
    latin1.write_bytes(json.dumps({"lp": "en-fr_FR", "source": "é", "target": "é"}, ensure_ascii=False).encode("latin-1") + b"\n")
    with pytest.raises(DataError, match="UTF-8") as info:
        wmt.load(latin1)
    assert info.value.path == str(latin1) and info.value.line == 1


def test_only_canary_is_an_error_naming_what_was_skipped(tmp_path):
    f = _write(tmp_path / "en-ko_KR.jsonl", [(FIXTURES / "en-ko_KR.jsonl").read_text(encoding="utf-8").splitlines()[0]])
    with pytest.raises(DataError, match="skipped 1 canary"):
        wmt.load(f)
