"""Fusion as one step of a tool-using agent, on the embedded CPU model.

A ``dspy.ReAct`` agent looks facts up with tools; then ``FusionOfN`` writes the final answer from
N drafts of the answering step, fused into one. Both live in one ``dspy.Module``, so the whole thing
can be evaluated or optimized like any DSPy program (only the fusor is trainable in FusionOfN).

Run: .venv/bin/python examples/react_agent.py ["your question"]
"""

from __future__ import annotations

import logging
import sys

import dspy

import fusion_dspy as fd

CAPITALS = {"france": "Paris", "germany": "Berlin", "japan": "Tokyo", "kenya": "Nairobi", "peru": "Lima"}
POPULATIONS_M = {"paris": 2.1, "berlin": 3.7, "tokyo": 14.0, "nairobi": 4.4, "lima": 10.0}


def capital_of(country: str) -> str:
    """Return the capital city of a country."""
    return CAPITALS.get(country.strip().lower(), f"unknown country {country!r}")


def population_millions(city: str) -> str:
    """Return the population of a city, in millions."""
    value = POPULATIONS_M.get(city.strip().lower())
    return f"{value} million" if value is not None else f"unknown city {city!r}"


class FactAgent(dspy.Module):
    """Gather facts with tools (ReAct), then answer with Fusion-of-N over N drafts."""

    def __init__(self, n: int = 3):
        super().__init__()
        self.research = dspy.ReAct("question -> notes", tools=[capital_of, population_millions], max_iters=2)
        self.answer = fd.FusionOfN(dspy.Predict("question, notes -> answer"), n=n)

    def forward(self, question: str) -> dspy.Prediction:
        try:
            notes = self.research(question=question).notes
        except Exception as exc:  # noqa: BLE001 - a tiny model may break ReAct's format; answer anyway
            logging.getLogger(__name__).warning("research step failed (%s); answering without notes", exc)
            notes = "(no notes)"
        fused = self.answer(question=question, notes=notes)
        return dspy.Prediction(answer=fused.answer, notes=notes, fusion=fused.fusion, candidates=fused.candidates, usage=fused.usage)


def main() -> None:
    question = sys.argv[1] if len(sys.argv) > 1 else "What is the capital of Japan, and how many people live there?"
    with fd.embedded() as server:
        dspy.configure(lm=server.lm(max_tokens=128))
        pred = FactAgent(n=3)(question=question)
    print("notes:", pred.notes)
    for c in pred.candidates.candidates:
        print(f"draft {c.index}:", c.outputs.get("answer") if c.ok else f"[failed] {c.error}")
    print("fused answer:", pred.answer, "| fallback:", pred.fusion.fallback, "| shown order:", pred.fusion.order)
    print("usage:", pred.usage["total"])


if __name__ == "__main__":
    main()
