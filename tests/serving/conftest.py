"""Fixtures of the serving tests."""

from __future__ import annotations

import os

import pytest

from tests.fakes.fake_vllm import write_fake_vllm


@pytest.fixture()
def fake_vllm(tmp_path, monkeypatch):
    """The fake ``vllm`` first on PATH; returns the file where it records each start."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_fake_vllm(bin_dir)
    record = tmp_path / "vllm-starts.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    monkeypatch.setenv("FAKE_VLLM_CHILD", "1")  # each fake server starts a worker, like vLLM
    monkeypatch.delenv("FAKE_VLLM_FAIL", raising=False)
    monkeypatch.delenv("FAKE_VLLM_HANG", raising=False)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    return record
