#!/usr/bin/env bash
# GPU smoke test (not run in CI): install vLLM, serve a small real model with
# `fusion-dspy serve --config`, run `fusion-dspy demo` against it, then stop the server.
#
#   bash scripts/gpu_smoke.sh [CONFIG]        (default: examples/serve_gpu.yaml)
#
# Needs an NVIDIA GPU with ~8 GB free and internet access for the first download.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:-examples/serve_gpu.yaml}"
VENV="${FUSION_DSPY_VENV:-.venv}"

command -v nvidia-smi >/dev/null 2>&1 || { echo "error: no NVIDIA GPU found (nvidia-smi missing)" >&2; exit 1; }
bash scripts/setup.sh
if ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  echo "installing the vllm extra (a few GB) ..." >&2
  "$VENV/bin/python" -m pip install --quiet -e ".[vllm]"
fi

WORK="$(mktemp -d -t fusion-dspy-gpu-smoke-XXXX)"
ENDPOINTS="$WORK/endpoints.yaml"
export PATH="$(cd "$VENV/bin" && pwd):$PATH"   # the venv's `vllm` executable

"$VENV/bin/fusion-dspy" -v serve --config "$CONFIG" --endpoints-out "$ENDPOINTS" >"$WORK/serve.out" 2>&1 &
SERVE_PID=$!
cleanup() {
  if kill -0 "$SERVE_PID" 2>/dev/null; then
    kill -TERM "$SERVE_PID"         # serve stops every vLLM process group it started
    wait "$SERVE_PID" || true
  fi
}
trap cleanup EXIT INT TERM

echo "waiting for the servers (logs: $WORK/serve.out and the config's log_dir) ..." >&2
for _ in $(seq 1 1200); do
  [ -f "$ENDPOINTS" ] && break
  if ! kill -0 "$SERVE_PID" 2>/dev/null; then
    echo "error: fusion-dspy serve exited:" >&2; cat "$WORK/serve.out" >&2; exit 1
  fi
  sleep 1
done
[ -f "$ENDPOINTS" ] || { echo "error: servers not ready in 20 minutes" >&2; cat "$WORK/serve.out" >&2; exit 1; }
cat "$WORK/serve.out"

"$VENV/bin/fusion-dspy" demo --pool "$ENDPOINTS" --n 4 --max-tokens 256
echo "gpu smoke test passed" >&2
