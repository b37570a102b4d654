"""Prompts to synthesise answers for: strings or chat conversations, from JSONL, parquet or a ``datasets`` folder.

Bad rows name their file and line (row number for parquet and ``datasets`` folders); with
``skip_bad_rows`` they are counted and skipped instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusion_dspy.data import BadRows, read_jsonl
from fusion_dspy.errors import DataError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Prompt:
    """One prompt to synthesise an answer for.

    Attributes:
        messages: the conversation to answer (ends with a user turn), as ``{"role", "content"}``.
        where: ``file:line`` (or ``file:row``) it came from, for errors and provenance.
    """

    messages: tuple[dict[str, str], ...]
    where: str

    @property
    def text(self) -> str:
        """What the program sees: the user's text, or a transcript of a longer conversation."""
        if len(self.messages) == 1:
            return self.messages[0]["content"]
        return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in self.messages)


def prompt_from_value(value: Any, *, path: str, line: int) -> Prompt:
    """A :class:`Prompt` from a string or a list of chat messages (the last one from the user)."""
    where = f"{path}:{line}"
    if isinstance(value, str):
        if not value.strip():
            raise DataError("the prompt is empty", path=path, line=line)
        return Prompt(({"role": "user", "content": value},), where)
    if isinstance(value, (list, tuple)) or _is_array(value):
        messages = []
        for i, m in enumerate(list(value)):
            if not isinstance(m, Mapping) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
                raise DataError(
                    f"prompt message {i} must be an object with a role ({', '.join(ROLES)}) and a string content",
                    path=path, line=line,
                )
            messages.append({"role": m["role"], "content": m["content"]})
        if not messages:
            raise DataError("the prompt is an empty list of messages", path=path, line=line)
        if messages[-1]["role"] != "user":
            raise DataError(
                f"the prompt's last message is from the {messages[-1]['role']}; it must be the user turn to answer",
                path=path, line=line,
            )
        if not messages[-1]["content"].strip():
            raise DataError("the prompt's last user message is empty", path=path, line=line)
        return Prompt(tuple(messages), where)
    raise DataError(f"the prompt must be a string or a list of chat messages, got {type(value).__name__}", path=path, line=line)


def _is_array(value: Any) -> bool:
    return type(value).__name__ == "ndarray"


def read_prompts(
    path: str | os.PathLike[str],
    *,
    field_name: str = "prompt",
    skip_bad_rows: bool = False,
    bad_rows: BadRows | None = None,
) -> Iterator[Prompt]:
    """Stream prompts from JSONL, parquet, or a folder saved with ``datasets`` (``save_to_disk``).

    Raises:
        DataError: missing file, unknown format, or a bad row (unless ``skip_bad_rows``), naming
            the file and line (row number for parquet and datasets folders).
    """
    p = Path(path)
    bad_rows = bad_rows if bad_rows is not None else BadRows()
    if not p.exists():
        raise DataError("prompts file does not exist", path=str(p))
    if p.is_dir():
        rows: Iterator[tuple[int, Any]] = _dataset_dir_rows(p, field_name)
    elif p.suffix == ".parquet":
        rows = _parquet_rows(p, field_name)
    elif p.suffix in (".jsonl", ".json", ".ndjson"):
        rows = ((line, row.get(field_name)) for line, row in read_jsonl(p, skip_bad_rows=skip_bad_rows, bad_rows=bad_rows))
    else:
        raise DataError("unknown prompts format: give a .jsonl file, a .parquet file or a folder saved with datasets", path=str(p))
    for line, value in rows:
        try:
            if value is None:
                raise DataError(f"missing field {field_name!r}", path=str(p), line=line)
            yield prompt_from_value(value, path=str(p), line=line)
        except DataError as err:
            if not skip_bad_rows:
                raise
            bad_rows.add(err)


def _parquet_rows(p: Path, field_name: str) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"not a readable parquet file ({exc})", path=str(p)) from None
    if field_name not in pf.schema_arrow.names:
        raise DataError(f"no column {field_name!r} (columns: {', '.join(pf.schema_arrow.names)})", path=str(p))
    row = 0
    for batch in pf.iter_batches(columns=[field_name], batch_size=1024):
        for value in batch.column(0).to_pylist():
            row += 1
            yield row, value
    if row == 0:
        raise DataError("no rows", path=str(p))


def _dataset_dir_rows(p: Path, field_name: str) -> Iterator[tuple[int, Any]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except FileNotFoundError as exc:
        raise DataError(f"not a folder saved with datasets' save_to_disk ({exc})", path=str(p)) from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" in ds:
            ds = ds["train"]
        elif len(ds) == 1:
            ds = next(iter(ds.values()))
        else:
            raise DataError(f"a DatasetDict with several splits ({', '.join(ds)}) and no 'train'; save the split you want", path=str(p))
    if field_name not in ds.column_names:
        raise DataError(f"no column {field_name!r} (columns: {', '.join(ds.column_names)})", path=str(p))
    if len(ds) == 0:
        raise DataError("no rows", path=str(p))
    column = ds.select_columns([field_name])
    for row, item in enumerate(column, 1):  # memory-mapped; one row at a time
        yield row, item[field_name]

