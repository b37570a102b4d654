"""The fusion endpoint on the embedded model: streamed vs whole, against in-process FusionOfN and OptiLLM's moa.

Run: flock /tmp/fd-embedded.lock .venv/bin/python benchmarks/bench_endpoint.py [--prompts 6] [--n 4] [--max-tokens 256]
     [--data ../shared/data/ultrafeedback/train_clean.jsonl] [--json OUT]

One run, one embedded server, the same prompts and ``max_tokens`` for every contender, their order
rotated from prompt to prompt (so none always goes first, warm, or last):

- ``stream``: ``fusion-N`` through the endpoint with the official ``openai`` client, ``stream=True``:
  seconds to the first content token, total seconds, tokens (the response's usage: every stage);
- ``whole``: the same request without streaming;
- ``in_process``: the same N + fuse with ``fd.FusionOfN`` in this process (what the endpoint adds is
  HTTP, parsing and a thread hop); both report how much of their wall time was spent outside the
  model calls (total minus the sampling and fusor seconds), the endpoint's overhead as a share;
- ``moa``: OptiLLM's ``mixture_of_agents`` (its ``moa.py``, loaded as bench_fusion_substance.py
  loads it) with an ``openai`` client on the same server; it returns the whole answer at once, so
  its first token is its total time. Its tokens are counted from every call's usage by a wrapper
  client (OptiLLM itself counts completion tokens only), with the same correction for llama.cpp's
  ``n>1`` usage as the endpoint's (``sampling.split_usage``).

Goals (issue 16): endpoint overhead <= 5%; total <= 0.5x moa's; first token >= 3x sooner than moa's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_fusion_substance's moa loader

import dspy  # noqa: E402

import fusion_dspy as fd  # noqa: E402
from fusion_dspy.gateway import Gateway, GatewayServer, GatewaySettings  # noqa: E402
from fusion_dspy.lm.endpoints import Pool  # noqa: E402
from fusion_dspy.sampling import split_usage  # noqa: E402
from fusion_dspy.synth.prompts import read_prompts  # noqa: E402
from fusion_dspy.types import Usage  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "ultrafeedback" / "train_clean.jsonl"
MODES = ("stream", "whole", "in_process", "moa")


class _Counting:
    """An OpenAI client whose chat completions add up their usage (for moa, which counts completions only)."""

    def __init__(self, client: Any):
        self._client = client
        self.usage = Usage()
        self.chat = self
        self.completions = self

    def create(self, **request: Any) -> Any:
        response = self._client.chat.completions.create(**request)
        texts = [c.message.content or " " for c in response.choices]
        total = Usage(response.usage.prompt_tokens, response.usage.completion_tokens, 0.0, 1)
        self.usage = self.usage + sum(split_usage(total, texts), Usage())
        return response


def run_stream(client: Any, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    started = time.perf_counter()
    first = None
    pieces = 0
    usage = record = None
    for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
                                                stream=True, stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            first = first if first is not None else time.perf_counter() - started
        if chunk.choices and chunk.choices[0].finish_reason:
            record = chunk.model_extra["fusion_dspy"]
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
    total = time.perf_counter() - started
    return _row(total, first if first is not None else total, usage, record, pieces)


def run_whole(client: Any, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    started = time.perf_counter()
    resp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens)
    total = time.perf_counter() - started
    return _row(total, total, resp.usage.model_dump(), resp.model_extra["fusion_dspy"], 1, resp.choices[0].message.content)


def _row(total: float, first: float, usage: dict, record: dict, pieces: int, text: str | None = None) -> dict[str, Any]:
    stages = usage["stages"]
    model_seconds = sum(s["seconds"] for s in stages.values())
    return {"total": total, "first_token": first, "tokens": usage["total_tokens"], "completion_tokens": usage["completion_tokens"],
            "outside_models": total - model_seconds, "pieces": pieces, "fallback": record.get("fallback"), "cut": record.get("cut"),
            "chars": len(text) if text is not None else None, "sampling_seconds": stages["sampling"]["seconds"]}


def run_in_process(module: Any, prompt: str) -> dict[str, Any]:
    started = time.perf_counter()
    pred = module(prompt=prompt)
    total = time.perf_counter() - started
    used = pred.usage["total"]
    model_seconds = pred.candidates.usage.seconds + pred.fusion.usage.seconds
    return {"total": total, "first_token": total, "tokens": used["total_tokens"], "completion_tokens": used["completion_tokens"],
            "outside_models": total - model_seconds, "pieces": 1, "fallback": pred.fallback, "chars": len(pred.response or "")}


def run_moa(moa: Any, counting: _Counting, prompt: str, max_tokens: int) -> dict[str, Any]:
    from bench_fusion_substance import _moa

    before = counting.usage
    started = time.perf_counter()
    answer, reported = _moa(moa, counting, prompt, max_tokens)
    total = time.perf_counter() - started
    spent = Usage(counting.usage.prompt_tokens - before.prompt_tokens, counting.usage.completion_tokens - before.completion_tokens)
    return {"total": total, "first_token": total, "tokens": spent.total_tokens, "completion_tokens": spent.completion_tokens,
            "moa_reported_completion_tokens": reported, "chars": len(answer or "")}


def summarize(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode, items in rows.items():
        if not items:
            continue
        out[mode] = {
            "total_seconds": round(sum(r["total"] for r in items), 1),
            "median_total": round(statistics.median(r["total"] for r in items), 2),
            "median_first_token": round(statistics.median(r["first_token"] for r in items), 2),
            "tokens_per_answer": round(statistics.mean(r["tokens"] for r in items)),
            "completion_tokens_per_answer": round(statistics.mean(r["completion_tokens"] for r in items)),
        }
        if "outside_models" in items[0]:
            out[mode]["seconds_outside_models"] = round(sum(r["outside_models"] for r in items), 2)
        if mode == "stream":  # what the first token waits for: all the candidates, then the fusor's reading of them
            out[mode]["median_sampling_seconds"] = round(statistics.median(r["sampling_seconds"] for r in items), 2)
            out[mode]["median_first_token_after_sampling"] = round(statistics.median(r["first_token"] - r["sampling_seconds"] for r in items), 2)
        if mode in ("stream", "whole", "in_process"):
            out[mode]["fallbacks"] = sum(bool(r.get("fallback")) for r in items)
    if "whole" in out and "in_process" in out:
        whole, local = out["whole"], out["in_process"]
        out["endpoint_overhead"] = {
            "seconds_outside_models_per_answer": round((whole["seconds_outside_models"] - local["seconds_outside_models"]) / len(rows["whole"]), 3),
            "share_of_total": round((whole["seconds_outside_models"] - local["seconds_outside_models"]) / whole["total_seconds"], 4),
            "total_ratio_whole_over_in_process": round(whole["total_seconds"] / local["total_seconds"], 3),
        }
    if "moa" in out and "stream" in out:
        out["versus_moa"] = {
            "total_ratio_stream_over_moa": round(out["stream"]["total_seconds"] / out["moa"]["total_seconds"], 3),
            "first_token_times_sooner": round(out["moa"]["median_first_token"] / out["stream"]["median_first_token"], 2),
            "tokens_ratio_stream_over_moa": round(out["stream"]["tokens_per_answer"] / out["moa"]["tokens_per_answer"], 2),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--modes", default=",".join(MODES), help="which contenders, comma-separated")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    prompts = [p.text for p in itertools.islice(read_prompts(args.data), args.prompts)]

    import openai

    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    started = time.perf_counter()
    with fd.embedded() as embedded:
        pool = Pool({embedded.endpoint.name: embedded.endpoint}, (embedded.endpoint.name,))
        gateway = Gateway(pool, default_max_tokens=args.max_tokens)
        with GatewayServer(gateway, GatewaySettings(max_in_flight=1)) as server:
            client = openai.OpenAI(base_url=server.api_base, api_key="none", timeout=900, max_retries=0)
            model = f"fusion-{args.n}"
            module = fd.FusionOfN(dspy.Predict("prompt -> response"), n=args.n, lm=embedded.lm(max_tokens=args.max_tokens, cache=False),
                                  fusor=embedded.lm(max_tokens=args.max_tokens, temperature=0.0, cache=False))
            moa = counting = None
            if "moa" in modes:
                from bench_fusion_substance import load_moa

                moa = load_moa()
                os.environ.setdefault("OPTILLM_MAX_TOKENS", str(args.max_tokens))
                counting = _Counting(openai.OpenAI(base_url=embedded.api_base, api_key="none", timeout=900))
            for k, prompt in enumerate(prompts):
                for mode in modes[k % len(modes):] + modes[: k % len(modes)]:
                    if mode == "stream":
                        row = run_stream(client, model, prompt, args.max_tokens)
                    elif mode == "whole":
                        row = run_whole(client, model, prompt, args.max_tokens)
                    elif mode == "in_process":
                        row = run_in_process(module, prompt)
                    else:
                        row = run_moa(moa, counting, prompt, args.max_tokens)
                    rows[mode].append(row)
                    print(f"prompt {k} {mode}: total {row['total']:.1f} s, first token {row['first_token']:.1f} s, {row['tokens']} tokens",
                          flush=True)
    result = {"prompts": len(prompts), "n": args.n, "max_tokens": args.max_tokens, "seconds": round(time.perf_counter() - started, 1),
              **summarize(rows)}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "rows": rows}, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
