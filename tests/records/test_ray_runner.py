"""The Ray engine's options: addresses Ray can be told, sizes, and a clear error without Ray."""

from __future__ import annotations

import sys

import pytest

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.records.ray_runner import RayOptions, check_address, import_ray, run_on_ray


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
