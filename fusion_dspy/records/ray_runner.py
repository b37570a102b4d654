"""The Ray engine: the loop of :func:`~fusion_dspy.records.run_items` as a Ray Data pipeline.

Beyond one machine the examples of a run go through a Ray Data dataset whose stages are the
method's steps (for ``synth``: one stage per teacher that samples it, one that aggregates), each a
``map_batches`` pool of actors on the cluster, and a last stage that writes the records as shards
in the record format (:mod:`fusion_dspy.records.shards`). The caller gives the ``(id, payload)``
items not yet recorded, so a rerun skips what is written; an actor that dies is restarted by Ray
Data and its rows retried, and the writer skips ids already in a shard, so a killed worker neither
loses nor duplicates a row. The driver merges the shards into the records file when the run ends
(or, after the driver itself was killed, when the next run starts).

Each actor runs ``concurrency`` rows at once in threads (Ray Data's multi-threaded actors), as
the in-process runner runs that many items in its thread pool: the model stages wait on HTTP
servers, so rows in flight, not CPUs, set the rate. Ray is imported here only, inside functions:
``import fusion_dspy`` never needs it (``pip install 'fusion-dspy[ray]'``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion_dspy.errors import ConfigurationError, FusionError, redact
from fusion_dspy.records.runner import RunStats, _append_failure, _BoundedMemory
from fusion_dspy.records.shards import ShardWriter, merge_shards
from fusion_dspy.records.store import RecordStore
from fusion_dspy.types import json_text

logger = logging.getLogger(__name__)

ENGINES = ("inprocess", "ray")
INSTALL_HINT = "pip install 'fusion-dspy[ray]' (or: pip install 'ray[data]>=2.40')"
#: CPUs Ray reserves for one actor of a model stage: it waits on HTTP, so many fit on one core
STAGE_CPUS = 0.1
_ADDRESS = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9._-]+):(?P<port>\d{1,5})$")
#: environment variables the driver passes on to the workers (DSPy's cache folder, LiteLLM's offline cost map)
PASSED_ENV = ("DSPY_CACHEDIR", "LITELLM_LOCAL_MODEL_COST_MAP", "FUSION_DSPY_CACHE")


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a run goes on Ray.

    Attributes:
        address: ``None`` or ``"local"`` starts a Ray instance on this machine for the run
            (127.0.0.1, no dashboard) and stops it after; ``"auto"`` joins the cluster this
            machine belongs to (``ray start``); ``HOST:PORT`` the cluster whose head (GCS) is there.
        workers: actors per model stage (each stage its own pool).
        concurrency: rows each actor has in flight at once.
        num_cpus: CPUs of a local instance (default: this machine's).
        batch: rows per Ray Data block and actor call (default: ``concurrency``, one call in flight
            per actor, its rows in threads). Each block costs the driver's scheduler and the object
            store about the same whatever its size, so rows travel in blocks; 1 makes every row its
            own call (``concurrency`` calls per actor), which never waits for a slow row of a block.
    """

    address: str | None = None
    workers: int = 1
    concurrency: int = 4
    num_cpus: int | None = None
    batch: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", check_address(self.address))
        if self.workers < 1:
            raise ConfigurationError(f"Ray workers must be >= 1, got {self.workers}")
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigurationError(f"num_cpus must be >= 1, got {self.num_cpus}")
        if self.batch is not None and not 1 <= self.batch <= self.concurrency:
            raise ConfigurationError(f"batch must be between 1 and concurrency ({self.concurrency}), got {self.batch}")

    @property
    def rows_per_batch(self) -> int:
        return self.batch or self.concurrency


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: ``factory(**kwargs)`` is built once per actor and called on each row's state.

    The callable takes the row's state (a JSON-able dict) and returns the next state; the last
    stage returns ``{"record": {...}}``. An exception fails that row only (its reason is logged
    beside the records and the next run retries it). ``factory`` must be importable by the
    workers (a module-level class or function).
    """

    name: str
    factory: Callable[..., Callable[[dict[str, Any]], dict[str, Any]]]
    kwargs: Mapping[str, Any] = field(default_factory=dict)


def check_address(address: str | None) -> str | None:
    """``address`` if Ray can be told it (None, ``local``, ``auto``, ``HOST:PORT``).

    Ray Client addresses (``ray://``) are refused: their driver runs on the cluster's head, so the
    records would be written on the head node's disk, not beside the command that asked for them.
    """
    if address is None or address in ("local", "auto"):
        return address
    if isinstance(address, str) and address.startswith("ray://"):
        raise ConfigurationError(
            f"--ray-address {address}: Ray Client runs the run's driver on the cluster's head node, which would write --out there; "
            "run the command on a node of the cluster with --ray-address auto (or HEAD:6379), or submit it with `ray job submit`"
        )
    match = _ADDRESS.match(address) if isinstance(address, str) else None
    if not match or not 0 < int(match.group("port")) < 65536:
        raise ConfigurationError(
            f"--ray-address must be 'auto' (the cluster this machine joined), 'local' or HOST:PORT (the head's GCS), got {address!r}"
        )
    return address


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or a ConfigurationError saying what to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is a separate extra of Ray
    except ImportError as exc:
        raise ConfigurationError(f"--engine ray needs Ray Data ({exc}); install it: {INSTALL_HINT}") from None
    return ray


@contextlib.contextmanager
def ray_session(options: RayOptions) -> Iterator[Any]:
    """Connect to (or start) Ray for the ``with`` block; a Ray started here is stopped after it."""
    ray = import_ray()
    if ray.is_initialized():  # the caller's own session (a notebook, a test): use it, leave it running
        yield ray
        return
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    runtime_env = {"env_vars": env} if env else None
    try:
        if options.address in (None, "local"):
            ray.init(
                address="local", num_cpus=options.num_cpus or os.cpu_count() or 1, include_dashboard=False,
                _node_ip_address="127.0.0.1", object_store_memory=256 * 1024**2, runtime_env=runtime_env,
                logging_level=logging.WARNING, log_to_driver=True,
            )
        else:
            if options.address != "auto":
                _check_reachable(options.address)
            ray.init(address=options.address, runtime_env=runtime_env, logging_level=logging.WARNING)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = options.address or "a local instance"
        raise ConfigurationError(
            f"cannot start or join Ray at {where}: {exc}; start a cluster with `ray start --head` "
            "(docs/scale-out.md), or leave out --ray-address to run on a Ray instance of this machine"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once when nothing listens at ``HOST:PORT`` (``ray.init`` would retry for minutes)."""
    import socket

    match = _ADDRESS.match(address)
    host, port = match.group("host").strip("[]"), int(match.group("port"))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ConfigurationError(
            f"--ray-address {address}: nothing answers there ({exc}); start the head with `ray start --head --port={port}` "
            "(docs/scale-out.md), or give its address"
        ) from None


def run_on_ray(
    items: Iterable[tuple[str, Any]],
    stages: Sequence[Stage | Any],
    store: RecordStore,
    *,
    options: RayOptions,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    progress: Any = None,
    stop: threading.Event | None = None,
) -> RunStats:
    """Run each ``(id, payload)`` of ``items`` whose id ``store`` lacks through ``stages`` on Ray; records end in ``store``.

    A stage is a :class:`Stage` (a pool of actors calling its function on each row) or an object
    whose ``apply(ds)`` adds its own steps to the dataset, keeping one row ``{id, state, error}``
    per id (:class:`~fusion_dspy.records.ray_processor.ProcessorStage`, a ``ray.data.llm`` processor).

    Call it after :func:`~fusion_dspy.records.shards.merge_shards` (a killed earlier run's shards
    count as written). Returns the same :class:`RunStats` as :func:`~fusion_dspy.records.run_items`;
    failures go to the same ``*.failed.jsonl``. ``store`` is reopened by the caller afterwards
    (the run appends to its file by merging).
    """
    if not stages:
        raise ConfigurationError("a Ray pipeline needs at least one stage")
    stats = RunStats()
    rows = []
    for rid, payload in items:
        if rid in store:
            stats.skipped += 1
            if progress is not None:
                progress.update(1)
            continue
        rows.append({"id": rid, "state": json_text(payload, ensure_ascii=False, default=str), "error": ""})
    if not rows:
        return stats
    started = time.perf_counter()
    stop = stop or threading.Event()
    with ray_session(options) as ray:
        from ray.data import ActorPoolStrategy

        ray.data.DataContext.get_current().enable_progress_bars = True
        per = options.rows_per_batch
        calls = max(1, options.concurrency // per)  # calls in flight per actor, ``per`` rows each
        ds = ray.data.from_items(rows, override_num_blocks=-(-len(rows) // per))
        for stage in stages:
            if not isinstance(stage, Stage):  # a stage that adds its own steps (ray_processor.ProcessorStage: a vLLM engine)
                ds = stage.apply(ds)
                continue
            ds = ds.map_batches(
                _RowStage, fn_constructor_kwargs={"stage": stage, "threads": options.concurrency}, batch_size=per,
                batch_format="pyarrow",
                compute=ActorPoolStrategy(
                    size=options.workers, max_tasks_in_flight_per_actor=calls + 1,
                    max_concurrent_calls_per_actor=calls, enable_true_multi_threading=calls > 1,
                ),
                num_cpus=STAGE_CPUS,
            )
        # the writer runs on the driver's node, so --out needs no filesystem shared by the cluster
        here = {"ray.io/node-id": ray.get_runtime_context().get_node_id()}
        ds = ds.map_batches(
            _Writer, fn_constructor_kwargs={"store_path": str(store.path)}, batch_size=None, batch_format="pyarrow",
            compute=ActorPoolStrategy(size=1), num_cpus=STAGE_CPUS, label_selector=here,
        )
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                for row in batch.to_pylist():
                    _count(row, stats, on_record, progress)
                if stop.is_set():
                    stats.interrupted = True
                    break
        except KeyboardInterrupt:
            stats.interrupted = True
            logger.warning("interrupted: the rows written so far are kept; rerun the same command to complete the rest")
        finally:
            stats.seconds = time.perf_counter() - started
    merged = merge_shards(store.path)
    logger.info("ray run: %s (%d records merged into %s)", stats.to_dict(), merged, store.path)
    return stats


def _count(row: Mapping[str, Any], stats: RunStats, on_record: Callable[[dict[str, Any]], None] | None, progress: Any) -> None:
    if row["error"]:
        stats.failed += 1
        stats.failures.append(f"{row['id']}: {row['error']}")
    elif row["written"]:
        stats.done += 1
        if on_record is not None:
            on_record(json.loads(row["state"]))
    else:
        stats.skipped += 1  # a record the run started without but the records file has (not expected)
    if progress is not None:
        progress.update(1)


class _RowStage:
    """A Ray Data actor running one :class:`Stage` on each row of its batches, the rows of a batch in threads."""

    def __init__(self, stage: Stage, threads: int):
        from concurrent.futures import ThreadPoolExecutor

        import litellm  # noqa: F401 - imported once before the threads: concurrent first imports fail half-initialised

        self.name = stage.name
        self.fn = stage.factory(**dict(stage.kwargs))
        self.memory = _BoundedMemory()
        self.threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"fusion-{stage.name}")

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows = batch.to_pylist()
        done = [self._row(rows[0])] if len(rows) == 1 else list(self.threads.map(self._row, rows))
        return pa.table({"id": [r["id"] for r in rows], "state": [d[0] for d in done], "error": [d[1] for d in done]})

    def _row(self, row: Mapping[str, Any]) -> tuple[str, str]:
        state, error = row["state"], row["error"]
        if error:
            return state, error
        try:
            return json_text(self.memory.bounded(self.fn, json.loads(state)), ensure_ascii=False, default=str), ""
        except Exception as exc:  # noqa: BLE001 - one row never stops the pipeline: it is logged and retried next run
            error = f"{self.name}: " + redact(f"{type(exc).__name__}: {exc}")[:1000]
            level = logging.WARNING if isinstance(exc, FusionError) else logging.ERROR
            logger.log(level, "item %s failed: %s", row["id"], error)
            return state, error


class _Writer:
    """The last stage: each finished row's record into this writer's shard, each failure into ``*.failed.jsonl``."""

    def __init__(self, store_path: str):
        self.shard = ShardWriter(store_path)
        path = Path(store_path)
        self.failures = path.with_name(path.stem + ".failed.jsonl")

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        out = {"id": [], "state": [], "error": [], "written": []}
        for row in batch.to_pylist():
            written, state, error = False, "", row["error"]
            if not error:
                try:
                    record = {"id": row["id"], **{k: v for k, v in json.loads(row["state"])["record"].items() if k != "id"}}
                    written = self.shard.write(record)
                    if not written:  # a retried batch: this run's killed writer had stored the record
                        record = self.shard.stored(row["id"])
                        written = record is not None
                    state = json_text(record, ensure_ascii=False, default=str) if written else ""
                except Exception as exc:  # noqa: BLE001 - a record that cannot be written fails its row, not the run
                    error = "write: " + redact(f"{type(exc).__name__}: {exc}")[:1000]
            if error:
                _append_failure(self.failures, row["id"], error)
            out["id"].append(row["id"])
            out["state"].append(state)
            out["error"].append(error)
            out["written"].append(written)
        return pa.table(out)
