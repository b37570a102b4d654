"""Fusion as one step of a tool-using agent, on the embedded CPU model.

The agent has two stages in one ``dspy.Module``: a *tool step* gathers facts, then ``FusionOfN``
writes the answer from N drafts, fused into one. The whole agent can be evaluated or optimized like
any DSPy program (only the fusor is trainable in FusionOfN).

The tool step comes in two kinds:
- ``lookup`` (default): the question's entities are matched against what each tool knows
  (rapidfuzz) and every matching tool is called. SmolLM2-135M cannot follow ``dspy.ReAct``'s
  thought/tool/arguments format (it wrote ``# notes #`` and the fused answer ``success``), so on
  the embedded model the tool choice is made by code and the model only writes the answer.
- ``react``: ``dspy.ReAct`` chooses the tools; use it with a model that can (``--react`` with
  ``FUSION_DSPY_MODEL``/``--api-base`` pointing at a larger model).

Run: .venv/bin/python examples/react_agent.py ["your question"] [--react] [--model M --api-base URL]
"""

from __future__ import annotations

import argparse
import logging

import dspy
from rapidfuzz import fuzz, process

import fusion_dspy as fd

CAPITALS = {"france": "Paris", "germany": "Berlin", "japan": "Tokyo", "kenya": "Nairobi", "peru": "Lima"}
POPULATIONS_M = {"paris": 2.1, "berlin": 3.7, "tokyo": 14.0, "nairobi": 4.4, "lima": 10.0}


def capital_of(country: str) -> str:
    """Return the capital city of a country."""
    capital = CAPITALS.get(country.strip().lower())
    return f"The capital of {country.strip().title()} is {capital}." if capital else f"unknown country {country!r}"


def population_millions(city: str) -> str:
    """Return the population of a city, in millions."""
    value = POPULATIONS_M.get(city.strip().lower())
    return f"{city.strip().title()} has about {value} million inhabitants." if value is not None else f"unknown city {city!r}"


TOOLS = {capital_of: CAPITALS, population_millions: POPULATIONS_M}


class Answer(dspy.Signature):
    """Answer the question in one or two sentences, using the notes. Use only facts from the notes."""

    question: str = dspy.InputField()
    notes: str = dspy.InputField()
    answer: str = dspy.OutputField()


def lookup_notes(question: str) -> str:
    """Call every tool whose known entities the question names (fuzzy, so 'Japans' finds 'japan').

    Tools can chain: a capital found by ``capital_of`` is looked up by ``population_millions`` too.
    """
    notes: list[str] = []
    text = question.lower()
    for _ in range(2):  # a second pass follows what the first pass found (country -> capital -> population)
        for tool, known in TOOLS.items():
            for word in text.replace("?", " ").replace(",", " ").split():
                match = process.extractOne(word, list(known), scorer=fuzz.ratio, score_cutoff=85)
                if match:
                    note = tool(match[0])
                    if note not in notes:
                        notes.append(note)
        text = question.lower() + " " + " ".join(notes).lower()
    return " ".join(notes) or "(no facts found)"


class FactAgent(dspy.Module):
    """Gather facts with tools, then answer with Fusion-of-N over N drafts."""

    def __init__(self, n: int = 3, react: bool = False):
        super().__init__()
        self.react = dspy.ReAct("question -> notes", tools=[capital_of, population_millions], max_iters=3) if react else None
        self.answer = fd.FusionOfN(dspy.Predict(Answer), n=n)

    def forward(self, question: str) -> dspy.Prediction:
        if self.react is not None:
            try:
                notes = self.react(question=question).notes
            except Exception as exc:  # noqa: BLE001 - a model that breaks ReAct's format: fall back to lookups
                logging.getLogger(__name__).warning("ReAct failed (%s); looking facts up directly", exc)
                notes = lookup_notes(question)
        else:
            notes = lookup_notes(question)
        fused = self.answer(question=question, notes=notes)
        return dspy.Prediction(answer=fused.answer, notes=notes, fusion=fused.fusion, candidates=fused.candidates, usage=fused.usage)


def main() -> None:
    ap = argparse.ArgumentParser(description="Fusion-of-N as the answering step of a tool-using agent.")
    ap.add_argument("question", nargs="?", default="What is the capital of Japan, and how many people live there?")
    ap.add_argument("--react", action="store_true", help="let dspy.ReAct choose the tools (needs a capable model)")
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--model", default=None, help="a LiteLLM model string (default: the embedded model)")
    ap.add_argument("--api-base", default=None)
    args = ap.parse_args()
    if args.model:
        run(dspy.LM(args.model, api_base=args.api_base, engine="litellm", max_tokens=256), args)
        return
    with fd.embedded() as server:
        run(server.lm(max_tokens=128), args)


def run(lm, args) -> None:
    dspy.configure(lm=lm)
    pred = FactAgent(n=args.n, react=args.react)(question=args.question)
    print("notes:", pred.notes)
    for c in pred.candidates.candidates:
        print(f"draft {c.index}:", c.outputs.get("answer") if c.ok else f"[failed] {c.error}")
    print("fused answer:", pred.answer, "| fallback:", pred.fusion.fallback, "| shown order:", pred.fusion.order)
    print("usage:", pred.usage["total"])


if __name__ == "__main__":
    main()
