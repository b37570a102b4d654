"""WMT as in the paper: the metric and the oracle's metric chosen, COMET on the device chosen (fake comet and torch)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import dspy
import pytest

from fusion_dspy.aggregate import Aggregators
from fusion_dspy.errors import ConfigurationError
from fusion_dspy.programs import _comet, wmt
from fusion_dspy.types import Candidate, CandidateSet

FIXTURES = Path(__file__).parent / "fixtures" / "wmt"


class FakeCometModel:
    """``unbabel-comet``'s model surface: ``predict(data, batch_size, gpus, accelerator, ...)`` -> ``.scores``.

    Scores a translation by how many of the reference's words it has, over the reference's length, and
    records every call's keyword arguments.
    """

    def __init__(self):
        self.calls: list[dict] = []

    def predict(self, data, batch_size=16, gpus=1, accelerator="auto", progress_bar=True, **kwargs):
        self.calls.append({"n": len(data), "gpus": gpus, "accelerator": accelerator, "batch_size": batch_size})
        scores = [len(set(d["mt"].split()) & set(d["ref"].split())) / max(1, len(d["ref"].split())) for d in data]
        return types.SimpleNamespace(scores=scores, system_score=sum(scores) / max(1, len(scores)))


@pytest.fixture
def fake_comet(monkeypatch, tmp_path):
    """A fake ``comet`` package and a fake ``torch`` whose GPU is switched by ``state["gpu"]``; a checkpoint file."""
    model = FakeCometModel()
    comet = types.ModuleType("comet")
    comet.load_from_checkpoint = lambda path: model
    state = {"gpu": False}
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(is_available=lambda: state["gpu"])
    monkeypatch.setitem(sys.modules, "comet", comet)
    monkeypatch.setitem(sys.modules, "torch", torch)
    _comet._load.cache_clear()
    ckpt = tmp_path / "XCOMET-XL" / "checkpoints" / "model.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    yield types.SimpleNamespace(model=model, state=state, path=str(ckpt))
    _comet._load.cache_clear()


def _examples():
    return wmt.load(FIXTURES / "en-de_DE.jsonl")


def test_comet_runs_on_a_gpu_when_one_is_present(fake_comet):
    fake_comet.state["gpu"] = True
    ex = _examples()[0]
    scores = wmt.comet_scores([ex], [ex.target], model_path=fake_comet.path)
    assert scores == [1.0]
    assert fake_comet.model.calls[-1] == {"n": 1, "gpus": 1, "accelerator": "gpu", "batch_size": 8}


def test_comet_stays_on_the_cpu_without_a_gpu_and_refuses_a_forced_gpu(fake_comet):
    ex = _examples()[0]
    wmt.comet_scores([ex], [ex.target], model_path=fake_comet.path)
    assert fake_comet.model.calls[-1]["gpus"] == 0 and fake_comet.model.calls[-1]["accelerator"] == "cpu"
    with pytest.raises(ConfigurationError, match="torch sees no CUDA device"):
        wmt.comet_scores([ex], [ex.target], model_path=fake_comet.path, device="gpu")
    wmt.comet_scores([ex], ["anders"], model_path=fake_comet.path, device="cpu")
    assert fake_comet.model.calls[-1]["accelerator"] == "cpu"
    with pytest.raises(ConfigurationError, match="device must be one of auto, cpu, gpu"):
        wmt.make_task(metric="comet", comet_model=fake_comet.path, comet_device="tpu")


def test_per_example_comet_metric_scores_each_translation_once(fake_comet):
    fake_comet.state["gpu"] = True
    task = wmt.make_task(metric="comet", comet_model=fake_comet.path)
    ex = _examples()[0]
    first = task.metric(ex, dspy.Prediction(translation=ex.target))
    again = task.metric(ex, dspy.Prediction(translation=ex.target))
    assert first == again == 1.0 and len(fake_comet.model.calls) == 1
    assert task.metric_label == "COMET (XCOMET-XL)" and task.options["metric"] == "comet"
    assert task.options["comet_model"] == fake_comet.path and task.options["comet_device"] == "auto"
    # corpus COMET uses the same scorer (and its cache)
    corpus = task.corpus_metrics([ex], [dspy.Prediction(translation=ex.target)])
    assert corpus["comet"] == 1.0 and len(fake_comet.model.calls) == 1


def _cset(ex, texts):
    cands = tuple(Candidate(index=i, model="m", sample=i, outputs={"translation": t}) for i, t in enumerate(texts))
    return CandidateSet(dict(ex.inputs().toDict()), cands, ("translation",))


def test_the_oracle_selects_by_its_own_metric_and_is_reported_by_the_task_metric(fake_comet):
    ex = _examples()[0]
    words = ex.target.split()
    # candidate 0: close in characters (high chrF++) but few whole reference words; candidate 1: the reference's words shuffled
    by_chars = "".join(words)
    by_words = " ".join(reversed(words))
    texts = [by_chars, by_words]
    chrf = [wmt.sentence_chrf(t, ex.target) for t in texts]
    assert chrf[0] > chrf[1]  # the two metrics disagree, so the choice shows which one the oracle used
    plain = wmt.make_task()
    assert Aggregators(task=plain).run(_cset(ex, texts), ["oracle"], ex)["oracle"]["selection"]["index"] == 0
    by_comet = wmt.make_task(oracle_metric="comet", comet_model=fake_comet.path)
    picked = Aggregators(task=by_comet).run(_cset(ex, texts), ["oracle"], ex)["oracle"]
    assert picked["selection"]["index"] == 1 and picked["selection"]["scores"] == {"0": 0.0, "1": 1.0}
    assert by_comet.metric is wmt.metric  # reported by chrF++ still
    assert by_comet.options == {"oracle_metric": "comet", "comet_model": fake_comet.path, "comet_device": "auto"}
    bleu_oracle = wmt.TASK.configure(oracle_metric="bleu")
    assert bleu_oracle.oracle_metric(ex, dspy.Prediction(translation=ex.target)) == pytest.approx(1.0)


def test_metric_choices_are_checked_when_the_task_is_made(monkeypatch):
    monkeypatch.delenv(wmt.COMET_MODEL_ENV, raising=False)
    with pytest.raises(ConfigurationError, match="unknown WMT oracle_metric 'xcomet'; valid: chrf, bleu, comet"):
        wmt.make_task(oracle_metric="xcomet")
    with pytest.raises(ConfigurationError, match="no COMET model"):
        wmt.make_task(oracle_metric="comet")
    with pytest.raises(ConfigurationError, match="does not exist"):
        wmt.TASK.configure(metric="comet", comet_model="/nowhere/model.ckpt")
    assert wmt.TASK.options == {} and wmt.make_task(metric="bleu").metric_label == "BLEU (sentence, 0..1)"
