"""Fixtures of the optimizer tests."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest


@pytest.fixture
def db_dir(tmp_path):
    """A folder for SQLite studies: in memory-backed /dev/shm when there is one (each commit fsyncs)."""
    if not os.path.isdir("/dev/shm"):
        yield tmp_path
        return
    path = tempfile.mkdtemp(prefix="fusion-dspy-optuna-", dir="/dev/shm")
    yield path
    shutil.rmtree(path, ignore_errors=True)
