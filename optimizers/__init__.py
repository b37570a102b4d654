"""Optimizers for Fusion-of-N: tune the fusor's instruction (DSPy) and N, temperature, pool (Optuna).

They use fusion_dspy's public API only; fusion_dspy never imports them. Optuna loads only when a
search runs.

- :mod:`fusion_dspy.optimizers.cache`: candidate pools sampled once, cached on disk, grown on demand.
- :mod:`fusion_dspy.optimizers.instruction`: GEPA, MIPROv2 (instructions only) and COPRO on the fusor.
- :mod:`fusion_dspy.optimizers.search`: an Optuna study over n, temperature, teachers, fusor and method.
"""

from .cache import CandidateCache

__all__ = ["CandidateCache"]
