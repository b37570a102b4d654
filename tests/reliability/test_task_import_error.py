"""Issue 15, item 6: a task registry that cannot be imported (a broken install) shows the import error."""

from __future__ import annotations

import sys

import pytest

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.task import load_task


def test_a_broken_registry_import_is_shown_not_reported_as_an_unknown_task(monkeypatch):
    monkeypatch.delitem(sys.modules, "fusion_dspy.programs", raising=False)
    monkeypatch.setitem(sys.modules, "fusion_dspy.programs.mgsm", None)  # as if a dependency of mgsm.py were missing
    with pytest.raises(ConfigurationError) as caught:
        load_task("mgsm")
    message = str(caught.value)
    assert "fusion_dspy.programs.mgsm" in message and "cannot be imported" in message, message
    assert "valid tasks: " not in message or not message.rstrip().endswith("valid tasks:"), message


def test_an_unknown_task_still_lists_the_valid_ones():
    with pytest.raises(ConfigurationError, match="valid tasks: .*mgsm"):
        load_task("nope")
