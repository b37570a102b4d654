"""``FusionOfN`` and ``BestOfN``: sampling plus one method of the registry, as drop-in DSPy modules.

Both wrap any DSPy program and return a ``dspy.Prediction`` with the program's own output fields,
so they nest in larger programs and work with ``dspy.Evaluate`` and optimizers. The wrapped
program is frozen (held outside DSPy's parameter tree): optimizers tune only the fusor. Their
``aggregate`` runs the same :mod:`~fusion_dspy.aggregate.registry` method that ``eval`` and ``synth``
run, so a module and the harness give the same answer on the same candidate set.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import dspy

from fusion_dspy.adaptive import AdaptiveN, AdaptiveTrace, answer_key, sample_adaptive
from fusion_dspy.aggregate.adaptive import run_adaptive
from fusion_dspy.aggregate.registry import FUSION, Aggregator, BestOfNAggregator, FusionAggregator
from fusion_dspy.errors import ConfigurationError
from fusion_dspy.fuse import Fusor
from fusion_dspy.sampling import DEFAULT_N, Strategy, normalize_pool, output_fields_of, sample_candidates, task_signature
from fusion_dspy.select.scoring import as_scorer
from fusion_dspy.types import CandidateSet

logger = logging.getLogger(__name__)


def method_detail_key(method: Aggregator) -> str:
    """Where a method's outcome goes in a prediction: ``fusion`` or ``selection``."""
    return FUSION if isinstance(method, FusionAggregator) else "selection"


def fusor_for(program: Any, *, lm: Any = None, **options: Any) -> Fusor:
    """A :class:`~fusion_dspy.fuse.Fusor` for ``program``'s task (its first inputs, its last outputs).

    ``options`` are the Fusor's keywords (``instruction``, ``seed``, ``compare``, ``format``,
    ``language``, ``context_window``, ...).

    Example:
        >>> fusor = fusor_for(qa, lm=big_lm, compare=True)           # doctest: +SKIP
        >>> FusionOfN(qa, n=4, fusor=fusor)                           # doctest: +SKIP
    """
    return Fusor(task_signature(program), lm=lm, **options)


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

    def __init__(self, program, n, lm, pool, samples_per_model, temperature, strategy, max_workers, dedupe,
                 adaptive=None, normalize=None, answer_field=None):
        super().__init__()
        _check_common(program, n, pool)
        if adaptive is not None and not isinstance(adaptive, AdaptiveN):
            raise ConfigurationError(f"adaptive must be an AdaptiveN, got {type(adaptive).__name__}")
        if adaptive is not None and pool is not None:
            raise ConfigurationError("adaptive sampling draws rounds of one LM: give lm=..., not a pool")
        self.adaptive = adaptive
        self.normalize = normalize
        self.answer_field = answer_field
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

    def sample_in_rounds(self, **inputs: Any) -> tuple[CandidateSet, AdaptiveTrace]:
        """Sample ``inputs`` adaptively (``adaptive=``): the candidates drawn and what the rounds did."""
        key = answer_key(self.answer_field, self.normalize) if self.normalize is not None else None
        return sample_adaptive(self.program, inputs, self.adaptive, lm=self.sampler_lm, key=key,
                               field=self.answer_field, temperature=self.temperature)

    def _forward(self, method: Aggregator, **inputs: Any) -> dspy.Prediction:
        if self.adaptive is None:
            cset = self.sample(**inputs)
            return method.run(cset).to_prediction(cset)
        cset, trace = self.sample_in_rounds(**inputs)
        result = run_adaptive(method, cset, trace)
        pred = result.to_prediction(cset)
        if result.detail_key != method_detail_key(method):
            pred[method_detail_key(method)] = None  # e.g. no fusion happened: pred.fusion is None
        return pred

    async def aforward(self, **inputs: Any) -> dspy.Prediction:
        # Candidates are sampled with threads; run the whole step off the event loop (context is copied).
        return await asyncio.to_thread(self.forward, **inputs)


class FusionOfN(_Sampled):
    """Sample N candidates of ``program`` and fuse them into one new answer.

    Args:
        program: any DSPy program; its output fields are the fused prediction's fields.
        n: samples of one LM (ignored with ``pool``); default 5, the paper's, at temperature 0.7.
        fusor: the fusor LM (default: ``dspy.settings.lm`` at call time), or a configured
            :class:`~fusion_dspy.fuse.Fusor` (see :func:`fusor_for`).
        pool: teachers (``{name: LM}``, list of LMs, or a Pool); each gives ``samples_per_model``.
        lm: the LM sampled ``n`` times (default: ``dspy.settings.lm``).
        adaptive: an :class:`~fusion_dspy.adaptive.AdaptiveN` to sample in rounds of ``lm`` instead of
            ``n`` at once (``n`` is then ignored: ``adaptive.max_n`` bounds it); on agreement the
            agreed candidate is returned without a fusor call (``pred.selection.method ==
            "agreement"``, ``pred.fusion`` None). ``pred.adaptive`` records rounds, samples, the stop
            reason and tokens saved against fixed ``max_n``.
        normalize: with ``adaptive``, a closed-form answer's normaliser (MGSM's number reader): the
            Beta rule on ``answer_field``; without it the free-form near-duplicate rule.
        answer_field: the field compared (default: the last output field).
        fusor_options: with an LM (or none) as ``fusor``, the :class:`~fusion_dspy.fuse.Fusor`'s
            keywords (``compare``, ``format``, ``instruction``, ``seed``, ``language``, ...), as
            ``dspy.ChainOfThought`` passes its ``config`` on to ``Predict``.

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
        n: int = DEFAULT_N,
        fusor: Any = None,
        pool: Any = None,
        *,
        lm: Any = None,
        samples_per_model: int = 1,
        temperature: float | None = None,
        strategy: Strategy = "auto",
        max_workers: int = 4,
        dedupe: bool = False,
        adaptive: AdaptiveN | None = None,
        normalize: Any = None,
        answer_field: str | None = None,
        **fusor_options: Any,
    ):
        super().__init__(program, n, lm, pool, samples_per_model, temperature, strategy, max_workers, dedupe,
                         adaptive, normalize, answer_field)
        if isinstance(fusor, Fusor):
            if fusor_options:
                raise ConfigurationError(
                    f"fusor is a configured Fusor, so {', '.join(sorted(fusor_options))} cannot be applied: configure the Fusor instead"
                )
            theirs = tuple(fusor.task_signature.output_fields)
            if theirs != self.output_fields:
                raise ConfigurationError(
                    f"the Fusor writes {', '.join(theirs)} but the program outputs {', '.join(self.output_fields)}: "
                    "build it for this program (fusor_for(program, lm=...))"
                )
            self.fusor = fusor
            return
        if fusor is not None and not isinstance(fusor, dspy.BaseLM):
            raise ConfigurationError(f"fusor must be a dspy LM or a Fusor, got {type(fusor).__name__}")
        self.fusor = fusor_for(program, lm=fusor, **fusor_options)

    def forward(self, **inputs: Any) -> dspy.Prediction:
        if self.fusor.lm is None and dspy.settings.lm is None:
            raise ConfigurationError("no fusor LM: pass fusor=... or dspy.configure(lm=...)")
        if self.adaptive is not None:
            return self._forward(FusionAggregator(self.fusor), **inputs)
        cset = self.sample(**inputs)
        return self.aggregate(cset)

    def aggregate(self, cset: CandidateSet, fallback_scores: dict[int, float | None] | None = None) -> dspy.Prediction:
        """Fuse an existing candidate set (so other methods can share it); ``fallback_scores`` pick a fallback."""
        result = FusionAggregator(self.fusor).run(cset, fallback_scores=fallback_scores)
        return result.to_prediction(cset)


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
        n: int = DEFAULT_N,
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
        adaptive: AdaptiveN | None = None,
        normalize: Any = None,
        answer_field: str | None = None,
    ):
        super().__init__(program, n, lm, pool, samples_per_model, temperature, strategy, max_workers, dedupe,
                         adaptive, normalize, answer_field)
        self.seed = seed
        if scorer is None:
            raise ConfigurationError("BestOfN needs a scorer: an LLMRater, a RewardModelScorer or a callable")
        self.scorer = as_scorer(scorer)

    def forward(self, **inputs: Any) -> dspy.Prediction:
        if self.adaptive is not None:
            return self._forward(BestOfNAggregator(self.scorer, seed=self.seed), **inputs)
        return self.aggregate(self.sample(**inputs))

    def aggregate(self, cset: CandidateSet) -> dspy.Prediction:
        """Select from an existing candidate set."""
        return BestOfNAggregator(self.scorer, seed=self.seed).run(cset).to_prediction(cset)
