"""A tiny question-answering task for the reliability tests and benchmarks (no data download).

``TASK`` reads JSONL rows ``{"question": str, "answer": str}``; the program is ``Predict(question ->
answer)``; the metric is 1 when the gold answer appears in the prediction. Import string:
``tests.reliability._tiny_task:TASK``.
"""

from __future__ import annotations

import json
from pathlib import Path

import dspy

from fusion_dspy.data import read_jsonl
from fusion_dspy.task import Task

SPEC = "tests.reliability._tiny_task:TASK"


class QA(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


def load(path, *, limit=None, skip_bad_rows=False, bad_rows=None):
    out = []
    for n, row in read_jsonl(path, required={"question": str, "answer": str}, skip_bad_rows=skip_bad_rows, bad_rows=bad_rows):
        out.append(dspy.Example(id=f"q{n}", language="en", question=row["question"], answer=row["answer"]).with_inputs("question"))
    return out[:limit] if limit else out


def metric(example, prediction, trace=None):
    return float(example.answer in str(prediction.answer))


def normalize(answer):
    text = str(answer or "").strip().lower()
    return text or None


TASK = Task("reltiny", load, lambda: dspy.Predict(QA), metric, "answer", normalize=normalize)


def write_data(path: str | Path, count: int, *, salt: str = "") -> Path:
    """``count`` distinct rows (the fake server echoes the question, so word ``i`` is the answer).

    ``salt`` makes the questions new, so DSPy's response cache cannot answer them.
    """
    p = Path(path)
    with p.open("w", encoding="utf-8") as fh:
        for i in range(count):
            fh.write(json.dumps({"question": f"word{i} is the answer to item {i} {salt}".strip(), "answer": f"word{i}"}) + "\n")
    return p


def write_prompts(path: str | Path, count: int, *, salt: str = "") -> Path:
    """``count`` distinct synth prompts (``salt``: new prompts that DSPy's response cache cannot answer)."""
    p = Path(path)
    with p.open("w", encoding="utf-8") as fh:
        for i in range(count):
            fh.write(json.dumps({"prompt": f"Write one sentence about the number {i}. {salt}".strip()}) + "\n")
    return p


def write_pool(path: str | Path, servers: dict[str, str], *, num_retries: int = 0, timeout: float = 10.0, **roles) -> Path:
    """A LiteLLM model_list YAML with one endpoint per ``name -> api_base`` and optional roles."""
    import yaml

    doc = {
        "model_list": [
            {"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_base": base, "api_key": "x",
                                                    "num_retries": num_retries, "timeout": timeout}}
            for name, base in servers.items()
        ]
    }
    if roles:
        doc["fusion_dspy"] = roles
    p = Path(path)
    p.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return p


def count_records(out_dir: str | Path, name: str = "records.jsonl") -> tuple[int, int, list[str]]:
    """(records, distinct ids, ids failed and not later done) in a run folder."""
    from fusion_dspy.records import iter_records

    out = Path(out_dir)
    ids = [r["id"] for r in iter_records(out / name)]
    failed_log = out / (Path(name).stem + ".failed.jsonl")
    failed = set()
    if failed_log.exists():
        failed = {json.loads(line)["id"] for line in failed_log.read_text(encoding="utf-8").splitlines() if line.strip()}
    return len(ids), len(set(ids)), sorted(failed - set(ids))
