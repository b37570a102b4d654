#!/usr/bin/env bash
# The test suite (unit + integration on the embedded model). Does its own set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
