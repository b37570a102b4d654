"""Contribution analysis: the attribution rule, cydifflib == difflib, record shapes, aggregation."""

from __future__ import annotations

import difflib
import itertools
import json
import random

import pytest

from fusion_dspy import analysis as an
from fusion_dspy.errors import DataError


def reference_contributions(fused: str, sources: dict[str, str]) -> dict[str, float]:
    """The procedure written out character by character with the standard library (independent)."""
    n = len(fused)
    best = [0] * n
    owners: list[set[str]] = [set() for _ in range(n)]
    for name, text in sources.items():
        for block in difflib.SequenceMatcher(None, fused, text, autojunk=False).get_matching_blocks():
            for k in range(block.a, block.a + block.size):
                if block.size > best[k]:
                    best[k] = block.size
                    owners[k] = {name}
                elif block.size == best[k]:
                    owners[k].add(name)
    counts = dict.fromkeys([*sources, "multiple", "unmatched"], 0)
    for own in owners:
        counts["unmatched" if not own else next(iter(own)) if len(own) == 1 else "multiple"] += 1
    return {k: v / n for k, v in counts.items()}


# ---------------------------------------------------------------- hand-computed cases


def test_two_disjoint_sources_split_evenly():
    assert an.contributions("abcxyz", {"a": "abc", "b": "xyz"}) == {
        "a": 0.5,
        "b": 0.5,
        "multiple": 0.0,
        "unmatched": 0.0,
    }


def test_tie_between_sources_is_multiple_and_novel_text_unmatched():
    got = an.contributions("abc!", {"a": "abc", "b": "--abc"})
    assert got == {"a": 0.0, "b": 0.0, "multiple": 0.75, "unmatched": 0.25}


def test_longest_covering_block_wins_overlap():
    # a covers "abcde" (5), b covers "cdef" (4): c, d, e go to a; only f to b
    assert an.contributions("abcdef", {"a": "abcde", "b": "cdef"}) == pytest.approx(
        {"a": 5 / 6, "b": 1 / 6, "multiple": 0.0, "unmatched": 0.0}
    )
    # equal lengths on the overlap: "cd" is multiple
    assert an.contributions("abcdef", {"a": "abcd", "b": "cdef"}) == pytest.approx(
        {"a": 2 / 6, "b": 2 / 6, "multiple": 2 / 6, "unmatched": 0.0}
    )


def test_several_blocks_of_one_source():
    # blocks (0,0,2) and (3,3,2): "-" is covered by none
    assert an.contributions("ab-cd", {"a": "abXcd"}) == pytest.approx({"a": 0.8, "multiple": 0.0, "unmatched": 0.2})


def test_no_match_and_no_sources_are_unmatched():
    assert an.contributions("qqq", {"a": "xyz", "b": ""}) == {"a": 0.0, "b": 0.0, "multiple": 0.0, "unmatched": 1.0}
    assert an.contributions("qqq", {}) == {"multiple": 0.0, "unmatched": 1.0}


def test_identical_sources_tie_everywhere():
    assert an.contributions("hello", {"m#0": "hello", "m#1": "hello"})["multiple"] == 1.0


def test_label_runs_tile_the_text_and_odd_names_work():
    fused = "xx abc yy abc zz"
    runs = an.label_runs(fused, {"": "abc zz", "b": "xx ab"})
    assert runs[0][0] == 0 and runs[-1][1] == len(fused)
    assert all(r[1] == s[0] and r[2] != s[2] for r, s in itertools.pairwise(runs))
    assert an.contributions(fused, {"": "abc zz"})[""] == pytest.approx(6 / len(fused))


def test_empty_fused_raises():
    with pytest.raises(ValueError, match="empty"):
        an.contributions("", {"a": "abc"})


@pytest.mark.parametrize("name", ["multiple", "unmatched"])
def test_reserved_source_names_raise(name):
    with pytest.raises(ValueError, match="reserved"):
        an.contributions("abc", {name: "abc"})


def test_non_string_inputs_raise():
    with pytest.raises(TypeError):
        an.contributions("abc", {"a": None})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        an.contributions(b"abc", {"a": "abc"})  # type: ignore[arg-type]


def test_attribute_labels_every_character_consistently():
    fused, sources = "abcdef and more", {"a": "abcde", "b": "cdef and"}
    labels = an.attribute(fused, sources)  # b's block "cdef and" (8) beats a's "abcde" (5) on "cde"
    assert labels == ["a"] * 2 + ["b"] * 8 + ["unmatched"] * 5
    assert len(labels) == len(fused)
    shares = an.contributions(fused, sources)
    for label, share in shares.items():
        assert labels.count(label) / len(fused) == pytest.approx(share)


# ---------------------------------------------------------------- against the reference


def _random_text(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _random_case(rng: random.Random) -> tuple[str, dict[str, str]]:
    alphabet = rng.choice(["ab", "abc ", "abcdefgh ", "the quick brown fox"])
    k = rng.randint(0, 5)
    sources = {f"s{i}": _random_text(rng, alphabet, rng.randint(0, 80)) for i in range(k)}
    pieces = []
    for _ in range(rng.randint(1, 6)):
        if sources and rng.random() < 0.7:
            src = sources[rng.choice(list(sources))]
            lo = rng.randint(0, len(src))
            pieces.append(src[lo : lo + rng.randint(1, 30)])
        else:
            pieces.append(_random_text(rng, alphabet + "XYZ", rng.randint(1, 15)))
    fused = "".join(pieces) or "X"
    if sources and rng.random() < 0.2:  # an exact duplicate source forces ties
        sources["dup"] = sources["s0"]
    return fused, sources


def test_equals_reference_on_seeded_random_cases():
    rng = random.Random(1234)
    for _ in range(400):
        fused, sources = _random_case(rng)
        got = an.contributions(fused, sources)
        want = reference_contributions(fused, sources)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-6), (fused, sources, key)
        assert sum(got.values()) == pytest.approx(1.0)


def test_fast_matcher_gives_difflib_identical_blocks_and_labels():
    rng = random.Random(99)
    for _ in range(200):
        fused, sources = _random_case(rng)
        for text in sources.values():
            assert [tuple(b) for b in an.matching_blocks(fused, text)] == [
                tuple(b) for b in an.stdlib_matching_blocks(fused, text)
            ]
        assert an.label_runs(fused, sources) == an.label_runs(fused, sources, blocks=an.stdlib_matching_blocks)


def test_fast_matcher_identical_on_real_texts(shared_data):
    path = f"{shared_data}/ultrafeedback/train_clean.jsonl"
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line, _ in zip(fh, range(7), strict=False)]
    for row, other in itertools.pairwise(rows):
        fused = row["chosen"][:1500]
        sources = {"rejected": row["rejected"][:1500], "part": row["chosen"][200:900], "other": other["chosen"][:1500]}
        assert an.label_runs(fused, sources) == an.label_runs(fused, sources, blocks=an.stdlib_matching_blocks)
        assert an.contributions(fused, sources) == pytest.approx(reference_contributions(fused, sources), abs=1e-6)


# ---------------------------------------------------------------- records


def _cand(index, model, sample, answer, error=None):
    return {
        "index": index,
        "model": model,
        "sample": sample,
        "outputs": {} if error else {"answer": answer},
        "error": error,
    }


def synth_record(rid="r1", *, order=(1, 0, 2), fused="abcxyz", bon_index=2, fallback=None, kind="synth"):
    """A record in the current format (docs/records.md) with three candidates, a fusion and a Best-of-N pick."""
    cands = [_cand(0, "m1", 0, "abc"), _cand(1, "m2", 0, "xyz"), _cand(2, "m2", 1, "qqq")]
    fusion = {"outputs": {"answer": fused}, "comparison": "...", "order": list(order), "fallback": fallback}
    selection = {"index": bon_index, "scores": {"0": 1.0, "1": 2.0, "2": 3.0}, "method": "best_of_n", "fallback": None}
    return {
        "id": rid, "format": 2, "kind": kind, "config": {}, "inputs": {"question": "q"},
        "candidates": {"inputs": {"question": "q"}, "candidates": cands, "output_fields": ["answer"], "usage": {}},
        "methods": {
            "fusion": {"outputs": fusion["outputs"], "fallback": fallback, "fusion": fusion},
            "bon": {"outputs": cands[bon_index]["outputs"], "fallback": None, "selection": selection},
        },
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": fused}],
    }


def eval_record(rid="e1", status="ok"):
    rec = synth_record(rid, kind="eval")
    del rec["messages"]
    for result in rec["methods"].values():
        result.update({"status": status, "score": 1.0})
    return rec


def fusion(rec):
    return rec["methods"]["fusion"]["fusion"]


def cands(rec):
    return rec["candidates"]["candidates"]


def test_record_view_of_synth_record_names_samples_and_positions():
    view = an.record_view(synth_record())
    assert view.field == "answer"
    assert view.fused == "abcxyz"
    assert view.sources == {"m1": "abc", "m2#0": "xyz", "m2#1": "qqq"}
    assert view.positions == {"m2#0": 1, "m1": 2, "m2#1": 3}
    assert view.selected == "m2#1" and view.selected_position == 3


def test_eval_shape_gives_the_same_view_and_failed_records_are_skipped():
    assert an.record_view(eval_record()) == an.record_view(synth_record("e1"))
    failed = an.record_view(eval_record(status="failed"))  # a failed method is not analysed
    assert failed.fused is None and failed.skip == "no fusion" and failed.selected is None
    assert an.record_view({"id": "x", "status": "failed"}) is None


def test_failed_and_unshown_candidates_are_not_sources():
    rec = synth_record(order=(0, 1))
    cands(rec)[1] = _cand(1, "m2", 0, None, error="timeout")
    view = an.record_view(rec)
    assert view.sources == {"m1": "abc"}  # m2#0 failed, m2#1 not shown


def test_fallback_fusion_is_not_analysed_but_bon_still_counts():
    view = an.record_view(synth_record(fallback="fusor output unparseable"))
    assert view.fused is None and view.skip == "fallback"
    assert view.selected == "m2#1"


def test_field_choice():
    rec = synth_record()
    fusion(rec)["outputs"] = {"reasoning": "r", "answer": "abcxyz"}
    assert an.record_view(rec).field == "answer"
    fusion(rec)["outputs"] = {"reasoning": "r", "response": "abcxyz"}
    for c in cands(rec):
        c["outputs"] = {"response": c["outputs"]["answer"]}
    assert an.record_view(rec).field == "response"
    fusion(rec)["outputs"] = {"summary": "abc", "text": "xyz"}
    with pytest.raises(DataError, match="--field"):
        an.record_view(rec)
    for c in cands(rec):
        c["outputs"] = {"summary": c["outputs"]["response"], "text": "-"}
    view = an.record_view(rec, field_name="summary")
    assert view.fused == "abc" and view.sources["m1"] == "abc"
    fusion(rec)["outputs"] = {"translation": "abcxyz"}
    for c in cands(rec):
        c["outputs"] = {"translation": c["outputs"]["summary"]}
    assert an.record_view(rec).field == "translation"  # the single output field


def test_malformed_records_raise_data_error():
    with pytest.raises(DataError, match="candidates"):
        an.record_view({"id": "x", "fusion": {}})
    rec = synth_record()
    fusion(rec)["order"] = "1,0,2"
    with pytest.raises(DataError, match="order"):
        an.record_view(rec)


def test_aggregates_positions_and_selection_shares():
    records = [
        synth_record("a", order=(1, 0, 2), fused="abcxyz", bon_index=2),  # m1 3/6 (pos 2), m2#0 3/6 (pos 1)
        synth_record("b", order=(0, 1, 2), fused="abc", bon_index=0),  # m1 all (pos 1)
    ]
    agg = an.aggregate_contributions(records)
    rows = {r["name"]: r for r in agg.source_rows()}
    assert rows["m1"]["char_share"] == pytest.approx(6 / 9)
    assert rows["m1"]["mean_share"] == pytest.approx((0.5 + 1.0) / 2)
    assert rows["m2#0"]["char_share"] == pytest.approx(3 / 9)
    assert rows["unmatched"]["char_share"] == 0.0 and "multiple" in rows
    assert sum(r["mean_share"] for r in rows.values()) == pytest.approx(1.0)
    assert an.position_shares(records) == pytest.approx({1: 6 / 9, 2: 3 / 9, 3: 0.0})
    assert an.selection_shares(records) == {"sources": {"m1": 0.5, "m2#1": 0.5}, "positions": {1: 0.5, 3: 0.5}}


def test_analyze_records_streams_file_and_reports_bad_line(tmp_path):
    path = tmp_path / "records.jsonl"
    lines = [json.dumps(synth_record(f"r{i}")) for i in range(3)]
    path.write_text("\n".join(lines[:2]) + "\n{not json\n" + lines[2] + "\n")
    with pytest.raises(DataError) as err:
        an.analyze_records(path, workers=1, progress=False)
    assert f"{path}:3" in str(err.value) and err.value.line == 3
    path.write_text("\n".join(lines) + "\n")
    result = an.analyze_records(path, workers=1, progress=False, limit=2)
    assert result.aggregate.records == 2 and result.example.id == "r0"
    with pytest.raises(DataError, match="not found"):
        an.analyze_records(tmp_path / "missing.jsonl", workers=1, progress=False)


def test_parallel_equals_serial(tmp_path):
    rng = random.Random(5)
    path = tmp_path / "records.jsonl"
    with path.open("w") as fh:
        for i in range(40):
            texts = [_random_text(rng, "abcd efg", 60) for _ in range(3)]
            rec = synth_record(f"r{i}", fused=texts[0][:20] + texts[1][10:40] + "ZZ" + texts[2][:15])
            for c, t in zip(cands(rec), texts, strict=True):
                c["outputs"]["answer"] = t
            fh.write(json.dumps(rec) + "\n")
    serial = an.analyze_records(path, workers=1, progress=False).aggregate.to_dict()
    parallel = an.analyze_records(path, workers=2, chunksize=3, progress=False).aggregate.to_dict()
    assert parallel == serial


def test_render_html_escapes_and_colours():
    view = an.record_view(synth_record(fused="<b>abc</b>&xyz"))
    page = an.render_html(view)
    assert "&lt;b&gt;" in page and "<b>abc" not in page
    assert "m2#0" in page and "multiple" in page and "unmatched" in page
