"""Packaging: a wheel (regular or editable) installs one top-level package, fusion_dspy.

``programs/`` and ``optimizers/`` are top-level folders of the repository but install as
``fusion_dspy.programs`` and ``fusion_dspy.optimizers``, so nothing named ``programs`` or
``optimizers`` lands in a user's site-packages. The wheels are built from a copy of the sources
(setuptools' own build hooks, offline), so the repository is never written to.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "fusion_dspy", "programs", "optimizers")
# where each source folder's packages are installed
INSTALLED_AS = {"fusion_dspy": "fusion_dspy", "programs": "fusion_dspy/programs", "optimizers": "fusion_dspy/optimizers"}


def _build(tmp_path: Path, hook: str) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / name)
    out = tmp_path / "dist"
    code = f"from setuptools import build_meta as b; print(b.{hook}({str(out)!r}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / result.stdout.strip().splitlines()[-1]


def _source_packages() -> set[str]:
    """Every package folder of the sources, as the path it has inside the wheel."""
    out = set()
    for folder, installed in INSTALLED_AS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                out.add(str(Path(installed) / init.parent.relative_to(REPO / folder)).rstrip("/."))
    return out


def test_the_wheel_holds_only_fusion_dspy_with_programs_and_optimizers_inside(tmp_path):
    wheel = _build(tmp_path, "build_wheel")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"fusion_dspy"}
    packages = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    missing = _source_packages() - packages
    assert not missing, f"packages missing from the wheel (add them to [tool.setuptools] packages): {sorted(missing)}"
    assert "fusion_dspy/programs/mgsm.py" in names and "fusion_dspy/optimizers/search/study.py" in names

    # installed (unpacked on the path, away from the repository), the tasks and optimizers import by their new names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import importlib.util, json, fusion_dspy.programs as p, fusion_dspy.optimizers.cache as c\n"
        "from fusion_dspy.task import load_task\n"
        "print(json.dumps({'programs': p.__file__, 'optimizers': c.__file__, 'mgsm': load_task('mgsm').name,\n"
        "  'top_level': [m for m in ('programs', 'optimizers') if importlib.util.find_spec(m)]}))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["programs"].startswith(str(site)) and found["optimizers"].startswith(str(site))
    assert found["mgsm"] == "mgsm" and found["top_level"] == []


def test_the_editable_install_maps_only_fusion_dspy(tmp_path):
    wheel = _build(tmp_path, "build_editable")
    archive = zipfile.ZipFile(wheel)
    finders = [n for n in archive.namelist() if re.match(r"__editable___.*_finder\.py$", n)]
    assert finders, archive.namelist()
    source = archive.read(finders[0]).decode()
    mapping = ast.literal_eval(re.search(r"^MAPPING[^=]*=\s*(\{.*?\})$", source, re.M).group(1))
    assert set(mapping) == {"fusion_dspy", "fusion_dspy.programs", "fusion_dspy.optimizers"}
    assert Path(mapping["fusion_dspy.programs"]).name == "programs" and Path(mapping["fusion_dspy.optimizers"]).name == "optimizers"
    for pth in (n for n in archive.namelist() if n.endswith(".pth")):
        lines = [line for line in archive.read(pth).decode().splitlines() if line.strip()]
        assert all(line.startswith("import ") for line in lines), f"{pth} puts a folder on sys.path: {lines}"


@pytest.mark.parametrize("folder", ["programs", "optimizers"])
def test_nothing_in_the_repository_imports_the_old_top_level_names(folder):
    pattern = re.compile(rf"^\s*(from|import) {folder}\b", re.M)
    offenders = [
        str(path.relative_to(REPO))
        for root in ("fusion_dspy", "programs", "optimizers", "tests", "benchmarks", "examples")
        for path in (REPO / root).rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
