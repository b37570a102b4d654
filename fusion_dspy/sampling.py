"""Sampling N candidates of a DSPy program: one LM sampled N times, or a pool of teachers.

For a program that is one predictor (``Predict``, ``ChainOfThought``) the N samples of one LM are
drawn with a single ``n=N`` request, so the server computes the prompt once (llama.cpp, vLLM);
each completion is parsed on its own, so one malformed sample fails alone. If the server returns
fewer choices than asked, the rest are drawn with separate requests (distinct ``rollout_id``s,
so DSPy's cache never returns the same sample twice). Any other program runs N times with
``lm.copy(rollout_id=i, temperature=t)``. Teachers of a pool are sampled concurrently, bounded.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import dspy
from dspy.utils.exceptions import AdapterParseError

from fusion_dspy.errors import ConfigurationError, EndpointSamplingError, SamplingError, first_line, is_endpoint_failure
from fusion_dspy.lm.endpoints import lm_name
from fusion_dspy.lm.fanout import fan_out
from fusion_dspy.lm.parsing import lenient_parse
from fusion_dspy.lm.token_count import choice_token_counts
from fusion_dspy.plain_adapter import PlainAdapter
from fusion_dspy.types import Candidate, CandidateSet, Usage

logger = logging.getLogger(__name__)

Strategy = Literal["auto", "n", "parallel", "sequential"]
#: the paper's settings: N candidates of one model at 0.7 (test time), teachers at 0.3 (synthetic data)
DEFAULT_N = 5
SINGLE_TEMPERATURE = 0.7
POOL_TEMPERATURE = 0.3


# llama.cpp answers n above its parallel slots with "Field 'n': Value must be between 1 <= value <= 4"
_N_LIMIT = re.compile(r"""['"]?\bn\b['"]?\W[^\n]{0,40}?(?:<=\s*value\s*<=|at most|between 1 and)\s*(\d+)""", re.I)
_n_limits: dict[tuple[Any, Any], int] = {}  # (model, api_base) -> the largest n its server accepts, learnt from its refusal
_n_limits_lock = threading.Lock()


class _NLimit(Exception):
    """The server refused ``n`` above ``limit`` (an ``n``-request larger than its slots)."""

    def __init__(self, limit: int):
        super().__init__(f"n is limited to {limit}")
        self.limit = limit


def _server_key(lm: Any) -> tuple[Any, Any]:
    return getattr(lm, "model", None), (getattr(lm, "kwargs", None) or {}).get("api_base")


def n_limit_of(lm: Any) -> int | None:
    """The largest ``n`` per request ``lm``'s server was found to accept (None: no refusal seen yet)."""
    with _n_limits_lock:
        return _n_limits.get(_server_key(lm))


def learn_n_limit(lm: Any, exc: BaseException) -> int | None:
    """The largest ``n`` ``lm``'s server accepts, when ``exc`` is its refusal of a larger one (remembered for :func:`n_limit_of`)."""
    limit = _n_limit(exc)
    if limit is not None:
        with _n_limits_lock:
            _n_limits[_server_key(lm)] = limit
    return limit


@dataclass(frozen=True)
class _Draw:
    """k samples to draw from one LM."""

    name: str
    lm: Any
    k: int
    temperature: float


def normalize_pool(pool: Any) -> dict[str, Any]:
    """``{name: LM}`` from a mapping, a sequence of LMs, or a :class:`~fusion_dspy.lm.endpoints.Pool`."""
    from fusion_dspy.lm.endpoints import Pool

    if isinstance(pool, Pool):
        return pool.teacher_lms()
    if isinstance(pool, Mapping):
        out = dict(pool)
    elif isinstance(pool, Sequence) and not isinstance(pool, str):
        out = {}
        for lm in pool:
            name = lm_name(lm)
            if name in out:
                raise ConfigurationError(f"pool: two LMs share the name {name!r}; pass a dict {{name: lm}}")
            out[name] = lm
    else:
        raise ConfigurationError(f"pool must be a dict of name -> dspy.LM, a list of LMs or a Pool, got {type(pool).__name__}")
    if not out:
        raise ConfigurationError("pool is empty: give at least one LM")
    for name, lm in out.items():
        if not isinstance(lm, dspy.BaseLM):
            raise ConfigurationError(f"pool member {name!r} is not a dspy LM (got {type(lm).__name__})")
    return out


def single_predictor(program: Any) -> dspy.Predict | None:
    """The predictor to call directly when ``program`` is just one predictor (Predict/ChainOfThought)."""
    if type(program) is dspy.Predict:
        return program
    if type(program) is dspy.ChainOfThought:
        return program.predict
    return None


def task_signature(program: Any) -> type[dspy.Signature]:
    """The task a program does: its own signature, or its first predictor's inputs and last one's outputs."""
    sig = getattr(program, "signature", None)
    if sig is not None:
        return sig
    predictors = program.predictors() if hasattr(program, "predictors") else []
    if not predictors:
        raise ConfigurationError(f"cannot tell the task of {type(program).__name__}: it has no predictors")
    first, last = predictors[0].signature, predictors[-1].signature
    if first is last:
        return first
    fields = {n: (f.annotation, f) for n, f in first.input_fields.items()}
    fields.update({n: (f.annotation, f) for n, f in last.output_fields.items()})
    return dspy.make_signature(fields, last.instructions)


def output_fields_of(program: Any) -> tuple[str, ...]:
    """The output fields of a program (those of :func:`task_signature`)."""
    return tuple(task_signature(program).output_fields)


def sample_candidates(
    program: Any,
    inputs: Mapping[str, Any],
    *,
    lm: Any = None,
    n: int = DEFAULT_N,
    pool: Any = None,
    samples_per_model: int = 1,
    temperature: float | None = None,
    strategy: Strategy = "auto",
    max_workers: int = 4,
    dedupe: bool = False,
    rollout_offset: int = 0,
) -> CandidateSet:
    """Sample candidates of ``program`` for ``inputs``.

    Args:
        program: any DSPy program.
        inputs: the program's input fields.
        lm: the LM sampled ``n`` times (default ``dspy.settings.lm``); ignored when ``pool`` is given.
        n: samples of ``lm``.
        pool: teachers (``{name: LM}``, a list of LMs, or a Pool); each gives ``samples_per_model``.
        temperature: sampling temperature (default 0.7 for one LM, 0.3 for a pool).
        strategy: ``auto`` (one ``n``-request when possible, else sequential calls), ``n``,
            ``parallel`` (separate concurrent requests) or ``sequential``.
        max_workers: bound on concurrent requests.
        dedupe: drop candidates whose outputs exactly repeat an earlier one.
        rollout_offset: shifts rollout ids, to draw fresh samples for the same inputs.

    Returns:
        A :class:`CandidateSet`; failed samples are kept (with their error) but not counted as ok.

    Raises:
        SamplingError: every sample failed.
    """
    if n < 1:
        raise ConfigurationError(f"n must be >= 1, got {n}")
    if samples_per_model < 1:
        raise ConfigurationError(f"samples_per_model must be >= 1, got {samples_per_model}")
    if max_workers < 1:
        raise ConfigurationError(f"max_workers must be >= 1, got {max_workers}")
    if pool is not None:
        lms = normalize_pool(pool)
        t = POOL_TEMPERATURE if temperature is None else temperature
        draws = [_Draw(name, member, samples_per_model, t) for name, member in lms.items()]
    else:
        lm = lm or dspy.settings.lm
        if lm is None:
            raise ConfigurationError("no LM to sample from: pass lm=..., pool=..., or dspy.configure(lm=...)")
        t = SINGLE_TEMPERATURE if temperature is None else temperature
        draws = [_Draw(lm_name(lm), lm, n, t)]

    fields = output_fields_of(program)
    started = time.perf_counter()
    jobs = [(d, rollout_offset) for d in draws]
    if len(jobs) == 1 or max_workers == 1:
        results = [_draw(program, dict(inputs), d, strategy, max_workers, off) for d, off in jobs]
    else:
        inner = max(1, max_workers // len(jobs))
        results = fan_out(lambda job: _draw(program, dict(inputs), job[0], strategy, inner, job[1]), jobs, max_workers=max_workers)
    return gather_candidates(inputs, fields, results, time.perf_counter() - started, dedupe=dedupe)


def sample_teacher(
    program: Any,
    inputs: Mapping[str, Any],
    name: str,
    lm: Any,
    k: int,
    *,
    temperature: float,
    strategy: Strategy = "auto",
    max_workers: int = 4,
    rollout_offset: int = 0,
) -> list[Candidate]:
    """The ``k`` samples of one teacher, failed ones kept with their error (never raises for a failed request).

    :func:`sample_candidates` is this for every teacher of a pool, then :func:`gather_candidates`;
    a pipeline with one stage per teacher (the Ray engine) calls the two steps itself, so its
    candidate sets are the same.
    """
    if k < 1:
        raise ConfigurationError(f"samples per teacher must be >= 1, got {k}")
    return _draw(program, dict(inputs), _Draw(name, lm, k, temperature), strategy, max_workers, rollout_offset)


def gather_candidates(
    inputs: Mapping[str, Any],
    fields: Sequence[str],
    per_teacher: Sequence[Sequence[Candidate]],
    seconds: float,
    *,
    dedupe: bool = False,
) -> CandidateSet:
    """One :class:`CandidateSet` from each teacher's samples, in teacher order, indexed in that order.

    Raises:
        SamplingError: every sample failed (:class:`EndpointSamplingError` when no server answered).
    """
    candidates: list[Candidate] = []
    seen: set[str] = set()
    for per_draw in per_teacher:
        for c in per_draw:
            if dedupe and c.ok:
                key = repr(sorted(c.outputs.items()))
                if key in seen:
                    logger.debug("dropping duplicate candidate from %s", c.model)
                    continue
                seen.add(key)
            candidates.append(Candidate(len(candidates), c.model, c.sample, c.outputs, c.usage, c.error, c.raw, c.parse))
    usage = sum((c.usage for c in candidates), Usage())
    cset = CandidateSet(dict(inputs), tuple(candidates), tuple(fields), Usage(usage.prompt_tokens, usage.completion_tokens, seconds, usage.calls))
    if not cset.ok:
        errors = "; ".join(f"{c.model}#{c.sample}: {c.error}" for c in candidates[:4])
        if candidates and all((c.error or "").startswith(ENDPOINT_FAILURE_MARK) for c in candidates):
            names = sorted({c.model for c in candidates})
            raise EndpointSamplingError(f"all {len(candidates)} samples failed: no endpoint answered ({errors})", endpoint=", ".join(names))
        raise SamplingError(f"all {len(candidates)} samples failed ({errors})")
    if cset.failed:
        logger.warning("%d of %d samples failed and are skipped", len(cset.failed), len(candidates))
    return cset


def engine_request(program: Any, inputs: Mapping[str, Any], *, sample: int, temperature: float, max_tokens: int,
                   seed: int = 0) -> dict[str, Any]:
    """One sample as a request to an engine that runs elsewhere (a ``ray.data.llm`` vLLM processor): messages and sampling.

    The messages are those of this module's ``n``-request (``default_adapter().format``); one
    request per sample (``seed + sample`` keeps samples distinct and reproducible), since an engine
    processor returns one ``generated_text`` per row. Used by the engine stages of ``synth`` and
    ``eval`` (``--engine ray --ray-engines``).

    Raises:
        ConfigurationError: ``program`` is not one predictor (its calls could not be made as one request).
    """
    predictor = single_predictor(program)
    if predictor is None:
        raise ConfigurationError("a vLLM engine stage samples one predictor (dspy.Predict / ChainOfThought); this program has several")
    messages = default_adapter().format(predictor.signature, predictor.demos, dict(inputs))
    return {"messages": messages, "sampling_params": {"temperature": temperature, "max_tokens": max_tokens, "seed": seed + sample}}


def parse_choice(program: Any, text: str | None, *, teacher: str, sample: int, usage: Usage | None = None) -> Candidate:
    """An engine's ``generated_text`` as a :class:`~fusion_dspy.types.Candidate`, parsed as an ``n``-request's choice is."""
    predictor = single_predictor(program)
    return _parse_candidate(default_adapter(), predictor.signature, text, teacher, sample, usage or Usage(calls=1))


def engine_candidates(program: Any, teacher: str, outputs: Sequence[Mapping[str, Any]]) -> list[Candidate]:
    """The candidates of one teacher's engine requests, in request order (sample ``i`` is output ``i``).

    Each output is ``{"text", "prompt_tokens", "completion_tokens", "seconds", "error"}`` (as
    :class:`~fusion_dspy.records.ray_processor.EngineHooks` gets them); the engine's token counts are
    the candidate's usage, and a request the engine failed is a failed candidate, as a failed HTTP sample is.
    """
    candidates = []
    for i, out in enumerate(outputs):
        usage = Usage(out["prompt_tokens"], out["completion_tokens"], out["seconds"], 1)
        if out["error"]:
            candidates.append(Candidate(i, teacher, i, {}, usage, error=f"vLLM engine: {out['error']}"[:500], parse="failed"))
        else:
            candidates.append(parse_choice(program, out["text"], teacher=teacher, sample=i, usage=usage))
    return candidates


def default_adapter(*, lenient: bool = False) -> Any:
    """The adapter candidates are sampled with: the one configured in DSPy, else :class:`PlainAdapter`.

    Plain prompts (the task's instruction and inputs as natural messages, the completion as the
    answer) are what chat models are trained on; small models copy DSPy's field framing into their
    answers. Signatures with structured outputs fall through to DSPy's ``ChatAdapter``.
    """
    return dspy.settings.adapter or PlainAdapter(lenient=lenient)


def _draw(program: Any, inputs: dict[str, Any], d: _Draw, strategy: Strategy, max_workers: int, offset: int) -> list[Candidate]:
    predictor = single_predictor(program)
    if predictor is not None and strategy in ("auto", "n") and d.k > 1:
        got = _draw_in_chunks(predictor, inputs, d, offset)
        if len(got) >= d.k:
            return got[: d.k]
        logger.info("%s returned %d of %d choices; drawing the rest separately", d.name, len(got), d.k)
        rest = _draw_separately(program, inputs, d, range(len(got), d.k), strategy, max_workers, offset)
        return got + rest
    return _draw_separately(program, inputs, d, range(d.k), strategy, max_workers, offset)


def _draw_in_chunks(predictor: dspy.Predict, inputs: dict[str, Any], d: _Draw, offset: int) -> list[Candidate]:
    """``n=k`` in one request, or in requests of at most the server's limit when it has one (llama.cpp:
    its parallel slots), each with its own rollout id; the limit is learnt from the first refusal."""
    key = _server_key(d.lm)
    with _n_limits_lock:
        cap = _n_limits.get(key)
    if cap is None or cap >= d.k:
        try:
            return _draw_with_n(predictor, inputs, d, offset)
        except _NLimit as refused:
            cap = refused.limit
            with _n_limits_lock:
                _n_limits[key] = cap
            logger.info("%s takes at most n=%d per request; drawing %d candidates in requests of %d", d.name, cap, d.k, cap)
    got: list[Candidate] = []
    for start in range(0, d.k, cap):
        part = _draw_with_n(predictor, inputs, replace(d, k=min(cap, d.k - start)), offset + start)
        got += [replace(c, index=start + c.index, sample=start + c.sample) for c in part]
    return got


def _draw_with_n(predictor: dspy.Predict, inputs: dict[str, Any], d: _Draw, offset: int) -> list[Candidate]:
    """One request with ``n=k``; each choice parsed on its own.

    Raises:
        _NLimit: the server refused ``n=k`` as above its limit (the caller splits the request).
    """
    adapter = default_adapter()
    signature = predictor.signature
    lm = d.lm.copy(rollout_id=offset, temperature=d.temperature) if offset else d.lm
    started = time.perf_counter()
    with dspy.track_usage() as tracker:
        try:
            messages = adapter.format(signature, predictor.demos, inputs)
            outputs = lm(messages=messages, n=d.k, temperature=d.temperature, **predictor.config)
        except Exception as exc:  # noqa: BLE001 - a failed request is recorded, not raised
            limit = _n_limit(exc)
            if limit is not None and limit < d.k:
                raise _NLimit(limit) from exc
            seconds = time.perf_counter() - started
            logger.warning("sampling %s failed: %s", d.name, exc)
            return [Candidate(i, d.name, i, {}, Usage(seconds=seconds / d.k), error=_describe(exc)) for i in range(d.k)]
    seconds = time.perf_counter() - started
    total = Usage.from_lm_usage(tracker.get_total_tokens(), seconds=seconds, calls=1)
    texts = [(output.get("text") if isinstance(output, dict) else output) or "" for output in outputs]
    shares = split_usage(total, texts, choice_token_counts(lm, texts, total.completion_tokens))
    return [_parse_candidate(adapter, signature, text, d.name, i, shares[i]) for i, text in enumerate(texts)]


def _parse_candidate(adapter: Any, signature: Any, text: str | None, name: str, i: int, usage: Usage) -> Candidate:
    if not text:
        return Candidate(i, name, i, {}, usage, error="empty response", raw=text, parse="failed")
    try:
        values = adapter.parse(signature, text)
        return Candidate(i, name, i, _only(values, signature), usage, parse="adapter")
    except (AdapterParseError, ValueError) as strict:
        try:
            values = lenient_parse(signature, text, optional=("reasoning",))
        except ValueError as exc:
            return Candidate(i, name, i, {}, usage, error=f"unparseable output: {exc}", raw=text, parse="failed")
        logger.debug("candidate %s#%d parsed leniently after: %s", name, i, strict)
        return Candidate(i, name, i, _only(values, signature), usage, raw=text, parse="lenient")


def _draw_separately(program, inputs, d: _Draw, indices, strategy: Strategy, max_workers: int, offset: int) -> list[Candidate]:
    """Separate calls of the whole program, each with its own rollout id."""

    def one(i: int) -> Candidate:
        lm = d.lm.copy(rollout_id=offset + i, temperature=d.temperature)
        # the whole program runs here, so a missing "Answer:" line is salvaged inside the adapter (as
        # _parse_candidate salvages it for n-requests); its own adapter per call, so last_parse is this call's
        adapter = default_adapter(lenient=True)
        started = time.perf_counter()
        with dspy.track_usage() as tracker, dspy.context(lm=lm, adapter=adapter):
            try:
                pred = program(**inputs)
            except Exception as exc:  # noqa: BLE001 - recorded per candidate
                seconds = time.perf_counter() - started
                logger.warning("sample %d of %s failed: %s", i, d.name, exc)
                return Candidate(i, d.name, i, {}, Usage(seconds=seconds, calls=1), error=_describe(exc), parse="failed")
        usage = Usage.from_lm_usage(tracker.get_total_tokens(), seconds=time.perf_counter() - started, calls=1)
        parse = "lenient" if getattr(adapter, "last_parse", "adapter") == "lenient" else "adapter"
        return Candidate(i, d.name, i, dict(pred.items()), usage, parse=parse)

    indices = list(indices)
    if strategy == "parallel" and max_workers > 1 and len(indices) > 1:
        return fan_out(one, indices, max_workers=max_workers)  # each in a copy of the caller's DSPy settings
    return [one(i) for i in indices]


def _n_limit(exc: BaseException) -> int | None:
    """The largest ``n`` a server says it accepts, when its refusal says so."""
    if is_endpoint_failure(exc):
        return None
    match = _N_LIMIT.search(str(exc))
    return int(match.group(1)) if match and int(match.group(1)) >= 1 else None


def _only(values: Mapping[str, Any], signature: Any) -> dict[str, Any]:
    return {k: values.get(k) for k in signature.output_fields}


def split_usage(total: Usage, texts: list[str], counts: list[int] | None = None) -> list[Usage]:
    """Share one ``n``-request's usage between its choices; the first carries the call.

    The prompt is shared evenly. ``counts`` are the choices' completion tokens where they were
    counted (:func:`~fusion_dspy.lm.token_count.choice_token_counts`); otherwise completion
    tokens go to each choice in proportion to its length. Some servers (llama.cpp) report the
    completion tokens of *one* choice for an ``n > 1`` request; without counts that is recognised
    by an implausible ratio (fewer than one token per 7 characters over all choices) and corrected
    by scaling the first choice's count by length.
    """
    parts = max(1, len(texts))
    lengths = [max(1, len(t)) for t in texts] or [1]
    completion = total.completion_tokens
    if counts is not None and len(counts) == parts:
        shares = list(counts)
    else:
        if parts > 1 and completion and completion * 7 < sum(lengths):
            completion = round(completion * sum(lengths) / lengths[0])
            logger.debug("server reported one choice's completion tokens for n=%d; estimated %d for all", parts, completion)
        shares = [round(completion * n / sum(lengths)) for n in lengths]
    prompt_each = total.prompt_tokens // parts
    usages = [Usage(prompt_each, shares[i], total.seconds / parts, 0) for i in range(parts)]
    first = usages[0]
    usages[0] = Usage(total.prompt_tokens - prompt_each * (parts - 1), first.completion_tokens, first.seconds, total.calls)
    return usages


ENDPOINT_FAILURE_MARK = "endpoint failure: "  # prefixes the error of a sample whose server did not answer


def _describe(exc: BaseException) -> str:
    mark = ENDPOINT_FAILURE_MARK if is_endpoint_failure(exc) else ""
    return f"{mark}{first_line(exc, 500)}"[:500]
