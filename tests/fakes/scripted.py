"""Scripted replies for the fake OpenAI server: judges and translators whose verdicts a test knows in advance.

Each reply is ``reply(body, choice_index) -> str`` (the ``FakeOpenAIServer(reply=...)`` contract) and
answers the requests it recognises by their instruction; every other request gets the default reply.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .openai_server import chat_adapter_reply

FIXTURES = Path(__file__).resolve().parents[1] / "programs" / "fixtures"
PAIRWISE = "Compare the two assistant responses"  # the pairwise judge's instruction (the rater's differs)
REASONING = "strict grader of reasoning"
FUSOR = "draft answers"  # the plain fusor's instruction
_FIELD = re.compile(r"\[\[ ## (response_a|response_b) ## \]\]\n(.*?)(?=\n\n\[\[ ## |\Z)", re.S)


def system(body: dict) -> str:
    return next((str(m.get("content", "")) for m in body.get("messages") or [] if m.get("role") == "system"), "")


def pair(body: dict) -> tuple[str, str]:
    """The two responses a pairwise-judge request shows, in order (A, B)."""
    text = str(body["messages"][-1]["content"]).split("\n\nRespond with")[0]
    fields = dict(_FIELD.findall(text))
    return _unfenced(fields["response_a"]), _unfenced(fields["response_b"])


def _unfenced(text: str) -> str:
    """A response without the ``<response id=...>`` fence the judge shows it in."""
    return re.sub(r"^\s*<response[^>]*>\s*|\s*</response>\s*$", "", text).strip()


def verdict(a_wins: bool) -> str:
    return json.dumps({"comparison": "scripted", "verdict": "[[A>B]]" if a_wins else "[[B>A]]"})


def reference_judge(body: dict, index: int) -> str:
    """Against references ``REF-<lang>-...``: on German prompts the method's answer wins, on every other
    language the reference wins, whichever position each is shown in."""
    if PAIRWISE not in system(body):
        return chat_adapter_reply(body, index)
    a, b = pair(body)
    ref_is_a = a.startswith("REF-")
    method_wins = (a if ref_is_a else b).split("-")[1] == "de"
    return verdict(method_wins != ref_is_a)


def arena_references(root: Path, languages=("de", "th"), model: str = "gemini-2.5-pro") -> Path:
    """Reference answers ``REF-<lang>-<id>`` in Arena-Hard's model_answer layout, one folder per language."""
    for lang in languages:
        questions = FIXTURES / "arena" / f"m-arena-hard-{lang}" / "question.jsonl"
        rows = [json.loads(line) for line in questions.read_text(encoding="utf-8").splitlines()]
        out = root / f"m-arena-hard-{lang}" / "model_answer" / f"{model}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps({"uid": r["question_id"], "model": model, "messages": [
            {"role": "user", "content": "q"}, {"role": "assistant", "content": {"answer": f"REF-{lang}-{r['question_id']}"}}]}) + "\n"
            for r in rows), encoding="utf-8")
    return root


def wmt_targets() -> dict[str, str]:
    files = [FIXTURES / "wmt" / f for f in ("en-de_DE.jsonl", "en-ko_KR.jsonl")]
    rows = [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    return {r["source"]: r["target"] for r in rows if r["domain"] != "canary"}


def scripted_translator(body: dict, index: int) -> str:
    """Sampling: choice 1 is the reference translation, every other choice (and greedy) a poor one; the
    fusor writes the reference. Other requests (the rater) get the default reply."""
    targets = wmt_targets()
    text = json.dumps(body.get("messages"), ensure_ascii=False)
    source = next((s for s in targets if json.dumps(s, ensure_ascii=False)[1:-1] in text), None)
    if source is None or "impartial" in system(body):
        return chat_adapter_reply(body, index)
    target = targets[source]
    if FUSOR in system(body):
        return target
    return target if index == 1 else " ".join(target.split()[:1]) + " xx"


def fused_answers_win(body: dict, index: int) -> str:
    """Synthetic data: the fusor answers ``FUSED ...`` and the judge prefers a fused answer to the reference,
    and the reference to anything else (a teacher's sample), in both orders."""
    if FUSOR in system(body):
        return "FUSED " + chat_adapter_reply(body, index)
    if PAIRWISE not in system(body):
        return chat_adapter_reply(body, index)
    a, b = pair(body)
    ref_is_a = a.startswith("REF")
    answer = b if ref_is_a else a
    return verdict(answer.startswith("FUSED") != ref_is_a)


def reasoning_judge(body: dict, index: int) -> str:
    """Grades 5 on the English GeoFactX question, 2 on the Hindi one, and writes no grade on any other."""
    if REASONING not in system(body):
        return chat_adapter_reply(body, index)
    text = str(body["messages"][-1]["content"])
    if "Woods Hole Oceanographic Institution?" in text.split("[[ ## accepted_answers")[0]:
        return json.dumps({"analysis": "sound", "score": 5})
    if "किस संस्थान" in text:
        return json.dumps({"analysis": "major errors", "score": 2})
    return json.dumps({"analysis": "I will not grade this."})
