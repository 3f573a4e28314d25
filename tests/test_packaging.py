"""environment.yml and pyproject.toml must name the same runtime dependencies; CI runs the README."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_requirements = {_name(r): r.replace(" ", "") for r in pip_section if not r.startswith("-e")}
    for requirement in project["dependencies"]:
        assert env_requirements.get(_name(requirement)) == requirement.replace(" ", ""), requirement
    assert set(env_requirements) == {_name(r) for r in project["dependencies"]}
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python.split("=")[-1] >= project["requires-python"].lstrip(">=")
    assert any(line.startswith("-e .") for line in pip_section)


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line.strip() for line in ci.splitlines() if line.strip() and not line.startswith(("#", "set ", "cd ")))
    assert command in readme
