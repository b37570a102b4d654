"""Shards of the Ray engine: one record per id over all shards, half-written lines cut, merged into the records file."""

from __future__ import annotations

import json

from fusion_dspy.records import RecordStore, iter_records
from fusion_dspy.records.shards import ShardWriter, merge_shards, shard_folder, shard_ids, shard_paths


def _rec(i: int) -> dict:
    return {"id": f"id{i}", "format": 2, "kind": "synth", "value": i}


def test_a_writer_skips_ids_in_the_records_file_and_in_other_shards(tmp_path):
    store = tmp_path / "synth.jsonl"
    RecordStore(store).append(_rec(0))
    first = ShardWriter(store)
    assert first.write(_rec(1)) and not first.write(_rec(1)) and not first.write(_rec(0))
    second = ShardWriter(store)  # a writer restarted after the first died: its retried rows are not written twice
    assert not second.write(_rec(1)) and second.write(_rec(2))
    assert first.path != second.path and first.path.parent == shard_folder(store)
    assert shard_ids(store) == {"id1", "id2"}
    assert [r["id"] for r in iter_records(first.path)] == ["id1"]


def test_merge_moves_every_record_once_and_removes_the_shards(tmp_path):
    store = tmp_path / "synth.jsonl"
    RecordStore(store).append(_rec(0))
    a = ShardWriter(store)
    a.write(_rec(1))
    a.write(_rec(2))
    stray = shard_folder(store) / "synth-by-hand.jsonl"  # a shard holding an id the file has: merged once
    stray.write_text(json.dumps(_rec(0)) + "\n" + json.dumps(_rec(3)) + "\n")
    assert merge_shards(store) == 3
    assert sorted(r["id"] for r in iter_records(store)) == ["id0", "id1", "id2", "id3"]
    assert shard_paths(store) == []
    assert merge_shards(store) == 0  # nothing left: a second merge is a no-op


def test_merge_cuts_the_half_written_last_line_of_a_killed_writer(tmp_path):
    store = tmp_path / "synth.jsonl"
    w = ShardWriter(store)
    w.write(_rec(1))
    with w.path.open("a") as fh:
        fh.write('{"id": "id2", "format": 2, "ki')  # the process died inside write()
    assert shard_ids(store) == {"id1"}
    assert merge_shards(store) == 1
    lines = store.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["id"] == "id1"


def test_shards_of_another_records_file_and_failure_logs_are_not_merged(tmp_path):
    synth = tmp_path / "synth.jsonl"
    ShardWriter(tmp_path / "records.jsonl").write(_rec(9))
    (shard_folder(synth) / "synth-x.failed.jsonl").write_text('{"id": "id5", "error": "boom"}\n')
    assert shard_paths(synth) == []
    assert merge_shards(synth) == 0 and not synth.exists()
