"""pyproject.toml declares what requirements.txt installs: the same names and ranges."""

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def requirements() -> set[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return {re.sub(r"\s+", "", line.split("#")[0]) for line in lines if line.split("#")[0].strip()}


def test_pyproject_dependencies_match_requirements_txt():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    assert declared == requirements()
    assert not any(re.match(r"torch\b", dep) for dep in declared)  # the Makefile picks the torch build
