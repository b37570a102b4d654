"""Synthetic training data: per prompt, sample a teacher pool, filter, fuse (or select), write one row.

The paper's second setting (Fusion-of-N as a teacher for SFT data). For every prompt the teachers of
a :class:`~fusion_dspy.lm.endpoints.Pool` answer it (``samples_per_teacher`` each, temperature 0.3 by
default), optional filters drop candidates (failed samples always, wrong language, too short), and
:class:`~fusion_dspy.aggregate.Aggregators` applies ``fusion`` (and ``bon`` on the same candidates
when asked). One JSON line per prompt goes to ``OUT/synth.jsonl``, a ``synth`` record of
``docs/records.md``.

The stage reads in the order of the data:

- :mod:`~fusion_dspy.synth.prompts`: prompts from JSONL, parquet or a ``datasets`` folder;
- :mod:`~fusion_dspy.synth.filters`: the candidate filters (language, minimum length);
- :mod:`~fusion_dspy.synth.rows`: the row written per prompt, in the datasets-safe encoding, and
  its export to parquet;
- :mod:`~fusion_dspy.synth.steps`: the setup (program, teachers, methods, the configuration in every
  id) and one prompt's work (sampling, then :func:`~fusion_dspy.synth.steps.finish_row`);
- :mod:`~fusion_dspy.synth.run`: :func:`synthesize`, the resumable loop over all prompts, in-process
  or (``engine="ray"``) as the Ray Data pipeline of :mod:`~fusion_dspy.synth.ray_engine`.
"""

from fusion_dspy.synth.filters import DEFAULT_LANGUAGE_UNIVERSE, Filters, apply_filters, check_filters, detect_language, language_detector
from fusion_dspy.synth.prompts import ROLES, Prompt, prompt_from_value, read_prompts
from fusion_dspy.synth.rows import PARQUET_NAME, RECORDS_NAME, RESPONSE_FIELD, export_to_parquet, load_records, sft_dataset
from fusion_dspy.synth.run import (
    CONFIG_NAME,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_TOKENS,
    DEFAULT_SAMPLES,
    SYNTH_INSTRUCTION,
    SYNTH_METHODS,
    SynthStats,
    build_setup,
    check_synth_methods,
    prompt_id,
    synth_program,
    synthesize,
    synthesize_one,
)

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_LANGUAGE_UNIVERSE",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_SAMPLES",
    "PARQUET_NAME",
    "RECORDS_NAME",
    "RESPONSE_FIELD",
    "ROLES",
    "SYNTH_INSTRUCTION",
    "SYNTH_METHODS",
    "Filters",
    "Prompt",
    "SynthStats",
    "apply_filters",
    "build_setup",
    "check_filters",
    "check_synth_methods",
    "detect_language",
    "export_to_parquet",
    "language_detector",
    "load_records",
    "prompt_from_value",
    "prompt_id",
    "read_prompts",
    "sft_dataset",
    "synth_program",
    "synthesize",
    "synthesize_one",
]
