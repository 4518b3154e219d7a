"""The supported window is written in four places (pyproject bounds, the two constraint
files CI installs, the README table) and CI runs the README's test command: these
tests keep them saying the same thing."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project supports 3.10 through tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
WINDOW = ("torch", "torchvision", "onnx", "onnxruntime-gpu", "onnxscript", "onnxsim")


def bounds() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    return {r.name: r for r in requirements if r.name in WINDOW}


def pins(leg: str) -> dict[str, Version]:
    found = {}
    for line in (ROOT / ".ci" / "constraints" / f"{leg}.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            found[name.strip().lower()] = Version(version.strip())
    return found


def readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(python3 -m venv .*?)\n```", readme)
    [command] = [c for c in commands if "pytest" in c]
    return command


def test_every_bounded_package_has_a_lower_and_an_upper_bound():
    for name, requirement in bounds().items():
        operators = {spec.operator for spec in requirement.specifier}
        assert operators == {">=", "<"}, f"{name}: {requirement}"


@pytest.mark.parametrize("leg", ["oldest", "newest"])
def test_each_ci_leg_installs_versions_inside_the_bounds(leg):
    installed = pins(leg)
    for name, requirement in bounds().items():
        assert name in installed, f"{leg}.txt pins no {name}"
        assert installed[name] in requirement.specifier, f"{leg}: {name} {installed[name]} not in {requirement}"


def test_the_oldest_leg_pins_exactly_the_lower_bounds():
    installed = pins("oldest")
    for name, requirement in bounds().items():
        [lower] = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert installed[name] == Version(lower), f"{name}: oldest leg {installed[name]}, bound {lower}"


def test_the_readme_table_names_the_tested_ends():
    readme = (ROOT / "README.md").read_text()
    oldest, newest = pins("oldest"), pins("newest")
    for name in WINDOW:
        row = re.search(rf"^\| {re.escape(name)} \| (\S+) \| (\S+) \|", readme, re.MULTILINE)
        assert row, f"README's supported-versions table has no {name} row"
        assert (Version(row[1]), Version(row[2])) == (oldest[name], newest[name]), row[0]


def test_ci_runs_the_readme_test_command_verbatim():
    command = readme_test_command()
    assert "-c .ci/constraints/newest.txt" in command
    assert command in (ROOT / ".ci" / "run").read_text()


def test_the_oldest_leg_names_only_test_files_that_exist():
    listed = [l for l in (ROOT / ".ci" / "oldest-tests.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert listed
    for entry in listed:
        assert (ROOT / entry.split("::")[0]).exists(), entry
