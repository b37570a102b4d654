"""The Ray engine: addresses Ray can be told, sizes, a clear error without Ray, and a restarted writer."""

from __future__ import annotations

import json
import sys

import pytest

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.records.ray_runner import RayOptions, check_address, import_ray, run_on_ray
from fusion_dspy.records.shards import shard_ids


@pytest.mark.parametrize("address", [None, "local", "auto", "10.0.0.5:6379", "head-node:6379", "[::1]:6379"])
def test_addresses_ray_accepts(address):
    assert check_address(address) == address
    assert RayOptions(address=address).address == address


@pytest.mark.parametrize("address", ["", "10.0.0.5", "http://10.0.0.5:6379", "host:0", "host:70000", "auto ", "host:port"])
def test_bad_addresses_fail_with_what_is_accepted(address):
    with pytest.raises(ConfigurationError, match="--ray-address must be 'auto'.*HOST:PORT"):
        RayOptions(address=address)


def test_ray_client_addresses_are_refused_saying_where_records_would_go():
    with pytest.raises(ConfigurationError, match="head node.*--out.*ray job submit"):
        RayOptions(address="ray://10.0.0.5:10001")


@pytest.mark.parametrize("field", ["workers", "concurrency", "num_cpus"])
def test_sizes_below_one_fail(field):
    with pytest.raises(ConfigurationError, match=field):
        RayOptions(**{field: 0})


def test_without_ray_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when it is not installed
    with pytest.raises(ConfigurationError, match=r"--engine ray needs Ray Data.*pip install 'fusion-dspy\[ray\]'"):
        import_ray()


def test_no_items_starts_no_ray(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # would fail if Ray were started
    from fusion_dspy.records import RecordStore
    from fusion_dspy.records.ray_runner import Stage

    stats = run_on_ray([], [Stage("s", dict)], RecordStore(tmp_path / "synth.jsonl"), options=RayOptions())
    assert (stats.done, stats.failed, stats.skipped) == (0, 0, 0)


def test_importing_the_library_does_not_import_ray():
    import subprocess

    code = "import fusion_dspy, fusion_dspy.synth, fusion_dspy.eval, fusion_dspy.records, fusion_dspy.cli.main, sys; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_address_where_nothing_listens_fails_at_once():
    import socket
    import time

    from fusion_dspy.records.ray_runner import ray_session

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port}: nothing answers there.*ray start --head"):
        with ray_session(RayOptions(address=f"127.0.0.1:{port}")):
            pass
    assert time.monotonic() - started < 10


def test_a_restarted_writer_reports_its_dead_predecessors_records_as_written(tmp_path):
    """Ray retries the batch of a killed writer: the rows stay counted as this run's, with the record first stored."""
    pa = pytest.importorskip("pyarrow")
    from fusion_dspy.records.ray_runner import _Writer

    store = tmp_path / "synth.jsonl"

    def batch(value: int):
        states = [json.dumps({"record": {"kind": "synth", "value": value * 10 + i}}) for i in range(2)]
        return pa.table({"id": ["a", "b"], "state": states, "error": ["", ""]})

    first = _Writer(str(store))(batch(1)).to_pylist()
    retried = _Writer(str(store))(batch(2)).to_pylist()  # the same rows, sampled again after the restart
    assert [r["written"] for r in first] == [r["written"] for r in retried] == [True, True]
    assert [json.loads(r["state"])["value"] for r in retried] == [10, 11]  # what the shard holds, not the resample
    assert sorted(shard_ids(store)) == ["a", "b"]
