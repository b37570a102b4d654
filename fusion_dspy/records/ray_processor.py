"""A model stage of the Ray pipeline run by a ``ray.data.llm`` processor (a vLLM engine) instead of HTTP actors.

A stage of :func:`~fusion_dspy.records.ray_runner.run_on_ray` takes rows ``{id, state, error}``
and gives one row per id back. A ``ray.data.llm`` processor instead takes one request per row
and returns one ``generated_text``: its vLLM engine stage keeps only the first output of a
request (``outputs[0]`` in ``ray/llm/_internal/batch/stages/vllm_engine_stage.py``, Ray 2.60),
so ``n > 1`` in ``sampling_params`` would lose the other samples. A :class:`ProcessorStage`
therefore runs in three steps:

1. **explode** (``flat_map``): a row whose state asks for ``k`` requests becomes ``k`` rows, one
   per request (``i`` = 0..k-1, each with its own sampling parameters, e.g. a seed per sample);
   a row that failed upstream, or that asks for no request (a fusion done in an earlier pass),
   becomes one row marked with ``__inference_error__``, which every stage of a processor passes
   through untouched (its own mechanism for failed rows), and leaves the stage as it came;
2. **the processor**: ``preprocess`` gives the engine the request's ``messages`` and
   ``sampling_params``; ``postprocess`` keeps the text and the token counts
   (``generated_text``, ``num_input_tokens``, ``num_generated_tokens``, ``time_taken_llm``);
   the processor runs with ``should_continue_on_error`` so a failed request comes back as a row
   with its error instead of failing the whole run;
3. **regroup** (``map_batches``): the ``k`` rows of one id are gathered and
   :meth:`EngineHooks.collect` turns the outputs into the row's next state.

The regroup needs no shuffle (a ``groupby`` would be a barrier: nothing would reach the writer
until every request of the stage was done, and a killed driver would lose it all) because the
``k`` rows of one id stay together. The exploded rows of an id are adjacent; Ray Data gives a
task whole blocks (it bundles blocks, it does not cut them, outside ``repartition``) and cuts a
task's rows into batches at multiples of the batch size from the task's first row; every stage
of a processor is one-to-one and keeps the order of its batch; and the processor's batch size,
which is also the regroup's, is made a multiple of ``k`` (:func:`pipeline_config`). So every
batch and block holds whole groups. Should a group still arrive split (a block cut by size, over
128 MiB), its row fails with that reason and the next run retries it: nothing is merged wrongly.

Ray and ``ray.data.llm`` are imported inside functions only; building a vLLM processor needs
transformers on the driver and vLLM on the GPU nodes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fusion_dspy.errors import ConfigurationError, FusionError, redact
from fusion_dspy.records.ray_runner import import_ray
from fusion_dspy.types import json_text

logger = logging.getLogger(__name__)

#: the column by which ``ray.data.llm`` marks a failed row (its stages pass such rows through)
ERROR_COLUMN = "__inference_error__"
_UPSTREAM = "failed before this stage"
_NO_REQUEST = "no request for this row"
_PASS_PARAMS = {"temperature": 0.0, "max_tokens": 1, "seed": 0}  # never sent: the row is marked


class EngineHooks(Protocol):
    """What a stage asks of the engine, and what it makes of the answers (picklable: it runs in Ray workers)."""

    def requests(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        """The row's engine requests: ``{"messages": [...], "sampling_params": {...}}`` each, in order; none: the row
        passes the stage unchanged (``collect`` is not called)."""

    def collect(self, state: dict[str, Any], outputs: list[dict[str, Any]]) -> dict[str, Any]:
        """The row's next state from its requests' outputs, in request order: each ``{"text", "prompt_tokens",
        "completion_tokens", "seconds", "error"}`` (``error`` is ``""`` when the engine answered)."""


@dataclass(frozen=True)
class ProcessorStage:
    """One model stage of the pipeline run by a ``ray.data.llm`` processor built from ``config``.

    Attributes:
        name: the stage's name (in failures and logs).
        config: a ``ray.data.llm`` processor configuration (e.g. a ``vLLMEngineProcessorConfig``).
        hooks: the requests of a row and what its outputs make of it (:class:`EngineHooks`).
        samples: requests per row (``k``): the processor's batch size is rounded up to a multiple of it.
    """

    name: str
    config: Any
    hooks: EngineHooks
    samples: int = 1

    def apply(self, ds: Any) -> Any:
        """The dataset through explode → processor → regroup (called on the driver inside the Ray session)."""
        config = pipeline_config(self.config, self.samples)
        processor = build_processor(config, _Preprocess(), _postprocess)
        ds = ds.flat_map(_Explode(self.name, self.hooks))
        ds = processor(ds)
        # batches of the processor's size (a multiple of k) cut a task's rows, whole groups in order, at group boundaries
        return ds.map_batches(_Regroup(self.name, self.hooks), batch_size=config.batch_size, batch_format="pyarrow")


def pipeline_config(config: Any, samples: int) -> Any:
    """``config`` as the pipeline runs it: failed requests kept as rows, the batch size a multiple of ``samples``."""
    batch = max(1, int(config.batch_size))
    batch = -(-batch // samples) * samples
    return config.model_copy(update={"batch_size": batch, "should_continue_on_error": True})


def build_processor(config: Any, preprocess: Any, postprocess: Any) -> Any:
    """``ray.data.llm.build_processor`` (looked up when called), with what a missing vLLM stack needs said plainly."""
    import_ray()
    from ray.data import llm as ray_llm

    try:
        return ray_llm.build_processor(config, preprocess=preprocess, postprocess=postprocess)
    except ImportError as exc:
        raise ConfigurationError(
            f"a vLLM engine processor needs transformers on the driver and vLLM on the GPU nodes ({exc}): "
            "pip install 'fusion-dspy[vllm]'"
        ) from None


def check_processor_config(name: str, config: Any) -> None:
    """Raise ConfigurationError unless ``config`` is a ``ray.data.llm`` processor configuration (checked before Ray starts)."""
    import_ray()
    from ray.data.llm import ProcessorConfig

    if not isinstance(config, ProcessorConfig):
        raise ConfigurationError(
            f"engine for {name!r}: expected a ray.data.llm processor configuration (fusion_dspy.serving.ray_llm.engines_for_pool), "
            f"got {type(config).__name__}"
        )


class _Explode:
    """One row per request of each row (a failed row: one row the processor passes through)."""

    def __init__(self, name: str, hooks: EngineHooks):
        self.name, self.hooks = name, hooks

    def __call__(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        base = {"id": row["id"], "state": row["state"], "error": row["error"]}
        if not row["error"]:
            try:
                requests = self.hooks.requests(json.loads(row["state"]))
                if not requests:  # nothing to ask the engine (e.g. a fusion already done): the row passes through unchanged
                    return [{**base, "i": 0, "n": 0, "request": ""}]
                return [{**base, "i": i, "n": len(requests), "request": json_text(r, ensure_ascii=False)} for i, r in enumerate(requests)]
            except Exception as exc:  # noqa: BLE001 - one row never stops the pipeline
                base["error"] = _describe(self.name, exc, row["id"])
        return [{**base, "i": 0, "n": 1, "request": ""}]


class _Preprocess:
    """The engine's input: the request's messages and sampling parameters (a failed row: marked, so every stage skips it)."""

    def __call__(self, row: Mapping[str, Any]) -> dict[str, Any]:
        if row["error"] or not int(row["n"]):  # the same field types as a request, so the processor's blocks keep one schema
            mark = _UPSTREAM if row["error"] else _NO_REQUEST
            # and the keys of the hooks' sampling parameters: a block whose rows lack ``seed`` turns the others' into floats
            return {"messages": [{"role": "user", "content": ""}], "sampling_params": dict(_PASS_PARAMS), ERROR_COLUMN: mark}
        request = json.loads(row["request"])  # the mark is set on every row: a missing field reads as None, which marks a failure
        return {"messages": request["messages"], "sampling_params": request["sampling_params"], ERROR_COLUMN: ""}


def _postprocess(row: Mapping[str, Any]) -> dict[str, Any]:
    """What is kept of an answered request (``ray.data.llm`` returns a failed one whole, without calling this)."""
    return {
        "id": row["id"], "state": row["state"], "error": row["error"], "i": row["i"], "n": row["n"],
        "text": row.get("generated_text") or "", "prompt_tokens": int(row.get("num_input_tokens") or 0),
        "completion_tokens": int(row.get("num_generated_tokens") or 0), "seconds": max(0.0, float(row.get("time_taken_llm") or 0.0)),
        ERROR_COLUMN: "",
    }


class _Regroup:
    """The ``k`` output rows of each id (one batch holds them all) back into one row ``{id, state, error}``."""

    def __init__(self, name: str, hooks: EngineHooks):
        self.name, self.hooks = name, hooks

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        groups: dict[str, list[dict[str, Any]]] = {}
        for row in batch.to_pylist():
            groups.setdefault(row["id"], []).append(row)
        out = {"id": [], "state": [], "error": []}
        for rid, rows in groups.items():
            state, error = self._row(rid, rows)
            out["id"].append(rid)
            out["state"].append(state)
            out["error"].append(error)
        return pa.table(out)

    def _row(self, rid: str, rows: list[dict[str, Any]]) -> tuple[str, str]:
        first = rows[0]
        if first["error"]:
            return first["state"], first["error"]
        n = int(first["n"])
        if n == 0:  # no request was made for this row: its state goes on as it was
            return first["state"], ""
        by_index = {int(r["i"]): r for r in rows}
        if len(rows) != n or sorted(by_index) != list(range(n)):
            error = (f"{self.name}: {len(rows)} of the row's {n} engine outputs reached one batch (Ray Data split them); "
                     "the next run retries the row")
            logger.warning("item %s failed: %s", rid, error)
            return first["state"], error
        outputs = [_output(by_index[i]) for i in range(n)]
        try:
            return json_text(self.hooks.collect(json.loads(first["state"]), outputs), ensure_ascii=False, default=str), ""
        except Exception as exc:  # noqa: BLE001 - one row never stops the pipeline: it is logged and retried next run
            return first["state"], _describe(self.name, exc, rid)


def _output(row: Mapping[str, Any]) -> dict[str, Any]:
    error = row.get(ERROR_COLUMN) or ""
    if error:
        return {"text": "", "prompt_tokens": 0, "completion_tokens": 0, "seconds": 0.0, "error": str(error)[:500]}
    return {"text": row.get("text") or "", "prompt_tokens": int(row.get("prompt_tokens") or 0),
            "completion_tokens": int(row.get("completion_tokens") or 0), "seconds": float(row.get("seconds") or 0.0), "error": ""}


def _describe(name: str, exc: BaseException, rid: str) -> str:
    error = f"{name}: " + redact(f"{type(exc).__name__}: {exc}")[:1000]
    logger.log(logging.WARNING if isinstance(exc, FusionError) else logging.ERROR, "item %s failed: %s", rid, error)
    return error
