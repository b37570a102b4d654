#!/usr/bin/env bash
# The main job on the embedded CPU model: N candidates, Best-of-N and Fusion-of-N on the same pool.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fusion-dspy demo "$@"
