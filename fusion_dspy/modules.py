"""``FusionOfN`` and ``BestOfN``: sampling plus one aggregator, as drop-in DSPy modules.

Both wrap any DSPy program and return a ``dspy.Prediction`` with the program's own output fields,
so they nest in larger programs and work with ``dspy.Evaluate`` and optimizers. The wrapped
program is frozen (held outside DSPy's parameter tree): optimizers tune only the fusor.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import dspy

from fusion_dspy.errors import ConfigurationError
from fusion_dspy.fuse import ContextPolicy, Fusor, FusorFormat
from fusion_dspy.sampling import Strategy, normalize_pool, output_fields_of, sample_candidates, task_signature
from fusion_dspy.select.best_of_n import as_scorer, select_best
from fusion_dspy.types import CandidateSet, Usage

logger = logging.getLogger(__name__)


class _Frozen:
    """Holds the wrapped program out of sight of DSPy's parameter discovery (so it is not tuned)."""

    def __init__(self, program: Any):
        self.program = program


def _check_common(program: Any, n: int, pool: Any) -> None:
    if not isinstance(program, dspy.Module):
        raise ConfigurationError(f"program must be a dspy.Module (Predict, ChainOfThought, ...), got {type(program).__name__}")
    if not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"n must be an integer >= 1, got {n!r}")
    if pool is not None:
        normalize_pool(pool)


class _Sampled(dspy.Module):
    """Shared sampling settings of FusionOfN and BestOfN."""

    def __init__(self, program, n, lm, pool, samples_per_model, temperature, strategy, max_workers, dedupe):
        super().__init__()
        _check_common(program, n, pool)
        self._wrapped = _Frozen(program)
        self.n = n
        self.sampler_lm = lm
        self.pool = pool
        self.samples_per_model = samples_per_model
        self.temperature = temperature
        self.strategy = strategy
        self.max_workers = max_workers
        self.dedupe = dedupe
        self.output_fields = output_fields_of(program)

    @property
    def program(self) -> Any:
        return self._wrapped.program

    def sample(self, **inputs: Any) -> CandidateSet:
        """Sample the candidate set for ``inputs`` (what ``forward`` aggregates)."""
        return sample_candidates(
            self.program, inputs, lm=self.sampler_lm, n=self.n, pool=self.pool,
            samples_per_model=self.samples_per_model, temperature=self.temperature,
            strategy=self.strategy, max_workers=self.max_workers, dedupe=self.dedupe,
        )

    async def aforward(self, **inputs: Any) -> dspy.Prediction:
        # Candidates are sampled with threads; run the whole step off the event loop (context is copied).
        return await asyncio.to_thread(self.forward, **inputs)


class FusionOfN(_Sampled):
    """Sample N candidates of ``program`` and fuse them into one new answer.

    Args:
        program: any DSPy program; its output fields are the fused prediction's fields.
        n: samples of one LM (ignored with ``pool``).
        fusor: the fusor LM (default: ``dspy.settings.lm`` at call time), or a configured
            :class:`~fusion_dspy.fuse.Fusor` (then the fusor keywords below are not used).
        pool: teachers (``{name: LM}``, list of LMs, or a Pool); each gives ``samples_per_model``.
        lm: the LM sampled ``n`` times (default: ``dspy.settings.lm``).
        instruction: replaces the default fusion instruction.
        seed: seeds the shuffling of candidates shown to the fusor.
        fenced: fence candidates as data (prompt-injection guard).
        format: the fusor's prompts: ``auto`` (plain for text and scalar outputs, else structured),
            ``plain`` or ``structured`` (see :class:`~fusion_dspy.fuse.Fusor`).
        compare: ask the fusor for a comparison of the candidates first (a separate call).
        language: the language of the answer, when the task does not state it.

    The prediction carries ``candidates`` (CandidateSet), ``fusion`` (Fusion: comparison, shown
    order, fallback), ``fallback`` (None when the fusor's own answer was used) and ``usage``.

    Example:
        >>> qa = dspy.ChainOfThought("question -> answer")
        >>> fused = FusionOfN(qa, n=4, fusor=big_lm)                   # doctest: +SKIP
        >>> fused(question="Why is the sky blue?").answer              # doctest: +SKIP
    """

    def __init__(
        self,
        program: Any,
        n: int = 4,
        fusor: Any = None,
        pool: Any = None,
        *,
        lm: Any = None,
        samples_per_model: int = 1,
        temperature: float | None = None,
        instruction: str | None = None,
        seed: int = 0,
        fenced: bool = True,
        format: FusorFormat = "auto",
        compare: bool = False,
        language: str | None = None,
        use_schema: bool = True,
        strategy: Strategy = "auto",
        max_workers: int = 4,
        dedupe: bool = False,
        context_window: int | None = None,
        context_policy: ContextPolicy = "trim",
    ):
        super().__init__(program, n, lm, pool, samples_per_model, temperature, strategy, max_workers, dedupe)
        if isinstance(fusor, Fusor):
            self.fusor = fusor
            return
        if fusor is not None and not isinstance(fusor, dspy.BaseLM):
            raise ConfigurationError(f"fusor must be a dspy LM or a Fusor, got {type(fusor).__name__}")
        self.fusor = Fusor(
            task_signature(program), lm=fusor, instruction=instruction, seed=seed, fenced=fenced, format=format,
            compare=compare, language=language, use_schema=use_schema, context_window=context_window,
            context_policy=context_policy,
        )

    def forward(self, **inputs: Any) -> dspy.Prediction:
        if self.fusor.lm is None and dspy.settings.lm is None:
            raise ConfigurationError("no fusor LM: pass fusor=... or dspy.configure(lm=...)")
        cset = self.sample(**inputs)
        return self.aggregate(cset)

    def aggregate(self, cset: CandidateSet, fallback_scores: dict[int, float | None] | None = None) -> dspy.Prediction:
        """Fuse an existing candidate set (so other methods can share it)."""
        fusion = self.fusor(candidates=cset, fallback_scores=fallback_scores)
        return dspy.Prediction(
            **fusion.outputs, candidates=cset, fusion=fusion, fallback=fusion.fallback,
            usage=Usage.breakdown(cset.usage, fusion.usage),
        )


class BestOfN(_Sampled):
    """Sample N candidates of ``program`` and return the one ``scorer`` rates highest.

    Args:
        scorer: an :class:`~fusion_dspy.select.LLMRater`, a
            :class:`~fusion_dspy.select.RewardModelScorer`, or any callable
            ``scorer(inputs: dict, prediction) -> float`` (DSPy's ``reward_fn`` convention).
        seed: seeds the scoring order and the draw that breaks ties (never the first candidate by default).
        Other arguments as in :class:`FusionOfN`.

    The prediction carries ``candidates``, ``selection`` (index, scores), ``fallback`` and ``usage``.
    """

    def __init__(
        self,
        program: Any,
        n: int = 4,
        scorer: Any = None,
        pool: Any = None,
        *,
        lm: Any = None,
        samples_per_model: int = 1,
        temperature: float | None = None,
        strategy: Strategy = "auto",
        max_workers: int = 4,
        dedupe: bool = False,
        seed: int = 0,
    ):
        super().__init__(program, n, lm, pool, samples_per_model, temperature, strategy, max_workers, dedupe)
        self.seed = seed
        if scorer is None:
            raise ConfigurationError("BestOfN needs a scorer: an LLMRater, a RewardModelScorer or a callable")
        self.scorer = as_scorer(scorer)

    def forward(self, **inputs: Any) -> dspy.Prediction:
        return self.aggregate(self.sample(**inputs))

    def aggregate(self, cset: CandidateSet) -> dspy.Prediction:
        """Select from an existing candidate set."""
        selection = select_best(cset, self.scorer, seed=self.seed)
        return dspy.Prediction(
            **selection.outputs, candidates=cset, selection=selection, fallback=selection.fallback,
            usage=Usage.breakdown(cset.usage, selection.usage),
        )
