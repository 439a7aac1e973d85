"""pyproject.toml declares what requirements.txt installs: the same names and ranges."""

import ast
import re
import sys
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


def _top_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


IMPORT_TO_DIST = {"lm_eval": "lm-eval", "yaml": "pyyaml"}


def test_metrics_and_lm_eval_tasks_need_only_what_is_declared():
    """metrics/ and lm_eval_tasks/ are loaded by path from a checkout (not shipped in the wheel): their
    project imports are packages the wheel ships, their other imports distributions pyproject declares."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    project = pyproject["project"]
    declared = {re.split(r"[<>=!~\[ ]", dep)[0].lower() for dep in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {re.split(r"[<>=!~\[ ]", dep)[0].lower() for dep in extra}
    missing = []
    files = sorted([*(ROOT / "metrics").rglob("*.py"), *(ROOT / "lm_eval_tasks").rglob("*.py")])
    assert files
    for path in files:
        for name in sorted(_top_imports(path) - set(sys.stdlib_module_names) - {"__future__"}):
            if name in shipped:
                continue
            if IMPORT_TO_DIST.get(name, name).lower() not in declared:
                missing.append(
                    f"{path.relative_to(ROOT)}: imports {name}, which pyproject.toml does not declare"
                )
    assert not missing, "\n".join(missing)


def test_requirements_test_txt_pins_what_the_extras_declare():
    """Each test-only package CI installs (requirements-test.txt) is in a pyproject extra whose range
    admits the pinned version, and is what tests/conftest.py requires under CI."""
    from packaging.requirements import Requirement

    from tests.conftest import TEST_EXTRAS

    lines = (ROOT / "requirements-test.txt").read_text().splitlines()
    pins = [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    ranges = {Requirement(dep).name: Requirement(dep).specifier for deps in extras.values() for dep in deps}
    for pin in pins:
        (version,) = [s.version for s in pin.specifier if s.operator == "=="]
        assert pin.name in ranges and ranges[pin.name].contains(version), pin
    assert sorted(p.name for p in pins) == sorted(TEST_EXTRAS.values())
