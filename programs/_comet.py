"""COMET-family translation scores (COMET-22, XCOMET-XL, ...) from a local checkpoint, on the chosen device.

``unbabel-comet`` (and torch) are imported only here and only when a score is asked for. The device
is chosen, not forced: ``auto`` runs on a GPU when torch sees one, else on the CPU; ``gpu`` insists on
one (an error without it); ``cpu`` stays on the CPU. Scores are cached per (source, translation,
reference), so the oracle's candidates and the methods' answers are each scored once per run.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusion_dspy.errors import ConfigurationError

logger = logging.getLogger(__name__)

COMET_MODEL_ENV = "FUSION_DSPY_COMET_MODEL"
DEVICES = ("auto", "cpu", "gpu")


def gpu_available() -> bool:
    """Whether torch sees a CUDA device (False when torch is not installed)."""
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    """``cpu`` or ``gpu`` for a requested ``auto`` / ``cpu`` / ``gpu`` (``cuda`` is read as ``gpu``)."""
    wanted = {"cuda": "gpu"}.get(str(device).lower(), str(device).lower())
    if wanted not in DEVICES:
        raise ConfigurationError(f"COMET device must be one of {', '.join(DEVICES)}, got {device!r}")
    if wanted == "auto":
        return "gpu" if gpu_available() else "cpu"
    if wanted == "gpu" and not gpu_available():
        raise ConfigurationError("COMET device 'gpu' was asked for, but torch sees no CUDA device; use --comet-device auto or cpu")
    return wanted


def model_path_or_env(model_path: str | None) -> str:
    """The checkpoint to use: ``model_path``, else ``FUSION_DSPY_COMET_MODEL``; it must exist."""
    path = model_path or os.environ.get(COMET_MODEL_ENV)
    if not path:
        raise ConfigurationError(f"no COMET model: give a local checkpoint (--comet-model, model_path=) or set {COMET_MODEL_ENV}")
    if not Path(path).exists():
        raise ConfigurationError(
            f"COMET model checkpoint {path!r} does not exist; give the path of a local .ckpt file "
            f"(e.g. XCOMET-XL's checkpoints/model.ckpt) with --comet-model or {COMET_MODEL_ENV}"
        )
    return str(path)


@functools.lru_cache(maxsize=2)
def _load(model_path: str) -> Any:
    try:
        from comet import load_from_checkpoint
    except ImportError:
        raise ConfigurationError(
            "COMET scoring needs the unbabel-comet package: pip install 'fusion-dspy[comet]' "
            f"(or unset {COMET_MODEL_ENV})"
        ) from None
    return load_from_checkpoint(model_path)


class CometScorer:
    """Segment scores of one COMET-family checkpoint on one device, cached.

    Args:
        model_path: the checkpoint (default ``FUSION_DSPY_COMET_MODEL``).
        device: ``auto`` (a GPU when present), ``cpu`` or ``gpu``.
        batch_size: segments per forward pass.
    """

    def __init__(self, model_path: str | None = None, *, device: str = "auto", batch_size: int = 8):
        self.model_path = model_path_or_env(model_path)
        self.requested_device = device
        resolve_device(device)  # a bad device name fails now; the device itself is settled at the first score
        self.batch_size = batch_size
        self._cache: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The checkpoint's model folder (``XCOMET-XL`` for ``.../XCOMET-XL/checkpoints/model.ckpt``)."""
        p = Path(self.model_path)
        return p.parent.parent.name if p.parent.name == "checkpoints" else p.stem

    def score(self, triples: Sequence[tuple[str, str, str]]) -> list[float]:
        """Scores of ``(source, translation, reference)`` triples; the ones seen before come from the cache."""
        with self._lock:  # one model, one forward pass at a time; the cache is shared by every thread
            todo = list(dict.fromkeys(t for t in triples if t not in self._cache))
            if todo:
                device = resolve_device(self.requested_device)
                model = _load(self.model_path)
                data = [{"src": s, "mt": m, "ref": r} for s, m, r in todo]
                output = model.predict(data, batch_size=self.batch_size, gpus=1 if device == "gpu" else 0,
                                       accelerator=device, progress_bar=False)
                for triple, value in zip(todo, output.scores, strict=True):
                    self._cache[triple] = float(value)
                logger.debug("COMET %s scored %d segments on %s", self.name, len(todo), device)
            return [self._cache[t] for t in triples]
