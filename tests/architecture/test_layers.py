"""The layer contracts in pyproject.toml hold, and they do catch a reverse import or an import circle.

The deliberate violations go into a scratch copy of the package, checked with the repository's own
contracts, so the real tree is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYERS = "cli -> reproduce -> eval | synth"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (pip install -e '.[dev]')")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy under root shadows the installed package
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    for package in ("fusion_dspy", "programs", "optimizers"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_repository_keeps_its_contracts():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, line, broken, chain",
    # LAYERS: the start of the layers contract's name, as lint-imports reports it
    [
        # a low layer reaching up to the command line
        ("types.py", "from fusion_dspy.cli import main", LAYERS, "fusion_dspy.types -> fusion_dspy.cli"),
        # the sampler reaching up to the registry that aggregates its candidates
        ("sampling.py", "from fusion_dspy.aggregate import registry", LAYERS, "fusion_dspy.sampling -> fusion_dspy.aggregate"),
        # the circle the client code once had: the Router importing the endpoints that build it
        ("lm/router.py", "from fusion_dspy.lm import endpoints", "no import circles", ".router -> .endpoints"),
        # a task reaching into a stage
        ("../programs/mgsm.py", "import fusion_dspy.eval", "use the library, not the CLI", "programs.mgsm -> fusion_dspy.eval"),
        # one stage using another's internals
        ("synth/run.py", "import fusion_dspy.eval", LAYERS, "fusion_dspy.synth.run -> fusion_dspy.eval"),
        # a stage reaching up to the experiments that run it
        ("eval/run.py", "import fusion_dspy.reproduce", LAYERS, "fusion_dspy.eval.run -> fusion_dspy.reproduce"),
    ],
)
def test_a_deliberate_bad_import_breaks_the_contracts(scratch, module, line, broken, chain):
    clean = _lint(scratch)
    assert clean.returncode == 0, "the scratch copy should pass before the bad import: " + clean.stdout + clean.stderr
    path = scratch / "fusion_dspy" / module
    path.write_text(path.read_text() + f"\n{line}  # deliberate violation\n")
    result = _lint(scratch)
    assert result.returncode != 0
    report = result.stdout
    assert f"{broken}" in report and "BROKEN" in report, report
    assert chain in report, report
