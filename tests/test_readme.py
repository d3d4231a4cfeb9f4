"""The README's two set-up commands stay the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_readme_has_exactly_a_demo_command_and_a_test_command() -> None:
    commands = _setup_commands()
    assert len(commands) == 2
    demo, tests = commands
    assert demo.endswith(" demo") and (ROOT / demo.split()[1]).is_file()
    assert (ROOT / tests.split()[1]).is_file()


def test_ci_runs_the_readme_test_command() -> None:
    tests = _setup_commands()[1]
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()
