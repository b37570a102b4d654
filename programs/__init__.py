"""The tasks of the paper's experiments, each a loader, a DSPy program and a metric.

``TASKS`` is the registry ``fusion_dspy.task.load_task`` reads (``fusion_dspy.programs:TASKS``). Each module
exposes its task as ``TASK``, and ``make_task(...)`` where the task takes options (judge model,
COMET checkpoint, fuzzy-match threshold, loader flags).
"""

from __future__ import annotations

from fusion_dspy.task import Task

from . import arena, geofactx, mgsm, wmt

TASKS: dict[str, Task] = {
    "mgsm": mgsm.TASK,
    "wmt": wmt.TASK,
    "arena": arena.TASK,
    "geofactx": geofactx.TASK,
}

__all__ = ["TASKS", "arena", "geofactx", "mgsm", "wmt"]
