"""``synth --engine ray`` with the fusor run as a ``ray.data.llm`` vLLM engine inside the pipeline.

In-process (and in the HTTP ``aggregate`` stage) one call of :class:`~fusion_dspy.fuse.Fusor`
does it all: build the fusor's prompt, call, parse, check the answer with the guard
(:func:`~fusion_dspy.fuse.unusable_answer`), retry once with a fresh sample, fall back to a
candidate. With the fusor as an engine those steps become passes of the pipeline, each made of the
Fusor's own public pieces, so the prompt, the checks, the retry and the fallback reasons are the
in-process ones:

1. **prepare fusion** (an actor stage, :class:`PrepareFusion`): the candidate set in teacher
   order, the filters, and the fusor's request (:meth:`Fusor.request`: shuffled, budgeted,
   fitted to the context; :meth:`Fusor.messages`: the messages the fusor's adapter formats);
2. **fuse** (a :class:`~fusion_dspy.records.ray_processor.ProcessorStage`, hooks
   :class:`EngineFusor`): one engine request per row; its text is parsed and checked
   (:meth:`Fusor.parse`) where the regroup runs. An accepted answer is the row's fusion; an
   unusable one leaves the row pending, with the reason;
3. **fuse, retry** (one more processor pass per ``Fusor.retries``, in-process 1): only pending
   rows make a request, with the retry's sampling (temperature at least 0.3, the next seed) and the
   drafts rotated (:meth:`Fusor.attempt_request`);
   the other rows pass through untouched;
4. **finish** (an actor stage, :class:`FinishFusion`): the other methods (``bon``, whose scorer
   is called over HTTP as in-process; its scores pick the fallback), the fallback of a row whose
   answers were all unusable (:meth:`Fusor.fall_back`: the in-process reason), the row
   (:func:`~fusion_dspy.synth.steps.make_row`).

What differs from in-process, by necessity: the fusion's usage is the engine's token counts and
``time_taken_llm`` (summed over the attempts), and ``truncated`` means the engine generated
``max_tokens`` tokens (a ``ray.data.llm`` row has no finish reason). A request the engine fails
fails the row (as a dead fusor server does in-process: not a fallback); the next run retries it.
Only a plain fusor without ``compare`` runs as an engine (synth's always is).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from fusion_dspy.errors import ConfigurationError, first_line

logger = logging.getLogger(__name__)


def _fusion_from_dict(d: Mapping[str, Any]) -> Any:
    from fusion_dspy.types import Fusion, Usage

    return Fusion(dict(d["outputs"]), d["comparison"], tuple(d["order"]), Usage.from_dict(d["usage"]), d["fallback"], d["raw"],
                  d["trimmed"], bool(d["truncated"]), d["max_tokens"], d.get("cut"))


def check_fusor_engine(fusor: Any) -> None:
    """Raise ConfigurationError unless ``fusor`` (the setup's) can run as an engine: fusion runs, plain prompts, no compare."""
    if fusor is None:
        raise ConfigurationError("the fusor is given as an engine but fusion is not among the methods")
    if not fusor.plain or fusor.compare is not None:
        raise ConfigurationError(
            "the fusor runs as a vLLM engine only with plain prompts and without compare (one call whose completion is the "
            f"answer); this one is {'structured' if not fusor.plain else 'plain with compare=True'}: serve it and call it over HTTP"
        )


class PrepareFusion:
    """The stage before the fusor's engine: the candidate set, the filters, the fusor's request and messages."""

    def __init__(self, pool: Any, settings: Mapping[str, Any], config: Mapping[str, Any]):
        from fusion_dspy.synth.ray_setup import stage_setup

        self.setup = stage_setup(pool, settings, config)
        check_fusor_engine(self.setup.aggregators.fusor)

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        from fusion_dspy.synth.ray_setup import gather, row_prompt
        from fusion_dspy.synth.steps import filter_candidates
        from fusion_dspy.types import Usage

        started = time.perf_counter()
        cset = gather(self.setup, state)
        kept, report = filter_candidates(self.setup, row_prompt(state), cset)
        fusor = self.setup.aggregators.fusor
        request = fusor.request(kept)
        pending = request.overflow is None  # an overflow makes no call: the finish stage falls back
        fusion = {"request": request.to_dict(), "messages": fusor.messages(request) if pending else [], "pending": pending,
                  "attempt": 0, "error": None, "raw": None, "result": None, "usage": Usage().to_dict(),
                  "seconds": time.perf_counter() - started}
        rest = {k: v for k, v in state.items() if k != "samples"}
        return {**rest, "cset": cset.to_dict(), "filters": report, "fusor_pass": fusion}


class EngineFusor:
    """The fusor's engine requests and what its answers make (``EngineHooks``); one instance serves every fusion pass.

    Attempt ``a`` of a row's run attempt ``r`` has the seed ``seed + r * (1 + retries) + a`` (the
    configuration's seed): distinct per attempt and reproducible; a retried row gets fresh ones.
    """

    def __init__(self, pool: Any, settings: Mapping[str, Any], config: Mapping[str, Any]):
        self.pool, self.settings, self.config = pool, dict(settings), dict(config)

    def _fusor(self) -> Any:
        from fusion_dspy.synth.ray_setup import cached_setup

        return cached_setup(self.pool, self.settings, self.config).aggregators.fusor

    def requests(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        from fusion_dspy.fuse import FusionRequest

        fusion = state["fusor_pass"]
        if not fusion["pending"]:
            return []
        fusor = self._fusor()
        attempt = int(fusion["attempt"])
        seed = int(self.config["seed"]) + int(state["attempt"]) * (1 + fusor.retries) + attempt
        request = FusionRequest.from_dict(fusion["request"])
        messages = fusion["messages"] if attempt == 0 else fusor.messages(fusor.attempt_request(request, attempt))  # rotated drafts
        return [{"messages": messages, "sampling_params": fusor.sampling_params(request, attempt, seed=seed)}]

    def collect(self, state: dict[str, Any], outputs: list[dict[str, Any]]) -> dict[str, Any]:
        from fusion_dspy.errors import EndpointError
        from fusion_dspy.fuse import FusionRequest
        from fusion_dspy.types import Usage

        fusor = self._fusor()
        out = outputs[0]
        if out["error"]:  # the engine failed the request: the row fails (retried by the next run), as with a dead server
            raise EndpointError(f"fusor vLLM engine failed: {out['error']}"[:500], endpoint=str(self.config["fusor"]["name"]))
        fusion = dict(state["fusor_pass"])
        request = fusor.attempt_request(FusionRequest.from_dict(fusion["request"]), int(fusion["attempt"]))
        usage = Usage.from_dict(fusion["usage"]) + Usage(out["prompt_tokens"], out["completion_tokens"], out["seconds"], 1)
        fusion["usage"] = usage.to_dict()
        fusion["attempt"] = int(fusion["attempt"]) + 1
        try:
            answer = fusor.parse(request, out["text"])
        except Exception as exc:  # noqa: BLE001 - bad fusor output: the next pass retries it, the finish stage falls back
            fusion["error"] = first_line(exc)
            fusion["raw"] = out["text"] or fusion["raw"]
            fusion["pending"] = fusion["attempt"] < 1 + fusor.retries
            logger.info("fusion attempt %d failed: %s", fusion["attempt"], fusion["error"])
        else:
            truncated = out["completion_tokens"] >= request.max_tokens
            fusion["result"] = fusor.fused(request, answer.outputs, usage, raw=answer.raw, truncated=truncated, cut=answer.cut).to_dict()
            fusion["pending"] = False
        return {**state, "fusor_pass": fusion}


class FinishFusion:
    """The stage after the fusor's engine: the other methods, the fallback of an unusable fusion, the row."""

    def __init__(self, pool: Any, settings: Mapping[str, Any], config: Mapping[str, Any]):
        from fusion_dspy.synth.ray_setup import stage_setup

        self.setup = stage_setup(pool, settings, config)

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        from fusion_dspy.aggregate.registry import BON, FUSION, MethodResult
        from fusion_dspy.fuse import FusionRequest
        from fusion_dspy.synth.ray_setup import row_prompt
        from fusion_dspy.synth.steps import make_row
        from fusion_dspy.types import CandidateSet, Selection, Usage

        setup = self.setup
        started = time.perf_counter()
        cset = CandidateSet.from_dict(state["cset"])
        report = state["filters"]
        keep = set(report["kept"])
        kept = CandidateSet(cset.inputs, tuple(c for c in cset.candidates if c.index in keep), cset.output_fields, cset.usage)
        others = setup.aggregators.results(kept, [m for m in setup.methods if m != FUSION])
        fusion = state["fusor_pass"]
        if fusion["result"] is not None:
            outcome = _fusion_from_dict(fusion["result"])
        else:  # as FusionAggregator: Best-of-N's scores pick the fallback when it ran on the same set
            scores = others[BON].outcome.scores if BON in others and isinstance(others[BON].outcome, Selection) else None
            request = FusionRequest.from_dict(fusion["request"])
            outcome = setup.aggregators.fusor.fall_back(request, scores, error=fusion["error"], attempts=int(fusion["attempt"]),
                                                        usage=Usage.from_dict(fusion["usage"]), raw=fusion["raw"])
        seconds = float(fusion["seconds"]) + outcome.usage.seconds + time.perf_counter() - started
        fused = MethodResult(FUSION, outcome, Usage.breakdown(kept.usage, outcome.usage), seconds)
        results = {m: fused if m == FUSION else others[m] for m in setup.methods}
        return {"record": make_row(setup, row_prompt(state), cset, report, results, attempt=state["attempt"])}


def fusor_stages(pool: Any, settings: Mapping[str, Any], config: Mapping[str, Any], engine: Any, *, retries: int) -> list[Any]:
    """The stages that replace ``aggregate`` when the fusor runs as a vLLM engine (``engine``: its processor config).

    ``retries`` more passes follow the first (the Fusor's ``retries``); they run on a processor of
    one engine replica (``concurrency=1``): only the rows whose answer was unusable reach them.
    """
    from fusion_dspy.records.ray_processor import ProcessorStage
    from fusion_dspy.records.ray_runner import Stage

    common = {"pool": pool, "settings": dict(settings), "config": dict(config)}
    hooks = EngineFusor(pool, settings, config)
    name = config["fusor"]["name"]
    passes = [ProcessorStage(f"fuse {name} (vLLM engine)", engine, hooks)]
    for attempt in range(1, 1 + retries):
        retry_engine = engine.model_copy(update={"concurrency": 1})
        passes.append(ProcessorStage(f"fuse {name}, retry {attempt} (vLLM engine)", retry_engine, hooks))
    return [Stage("prepare fusion", PrepareFusion, common), *passes, Stage("finish", FinishFusion, common)]
