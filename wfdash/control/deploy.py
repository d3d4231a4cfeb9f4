"""Where the deployment's SkyPilot YAMLs are: the repository's ``skypilot/`` directory.

An installed wheel carries them as package data (``wfdash/skypilot``, a force-include in
pyproject.toml, like the themes); a source checkout has them at the top of the repo.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wfdash.control.errors import ActionError
from wfdash.control.profiles import LaunchProfile

# Placeholder wfdash writes into a task for a value it cannot read back from SkyPilot
# (the same mask wfdash.collect.redact uses): the SkyPilot plane fills it or refuses.
MASK = "***"


# The directory holding the wfdash package: a checkout's root, or site-packages.
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]


def _local_source(source: object) -> object:
    """A file mount's local source as an absolute path when it names wfdash's own files.

    The YAMLs ship the replica agent as ``wfdash/agent``, relative to the repository
    root, as `sky launch` run from there reads it. wfdash may run from anywhere, or from
    an installed wheel (where skypilot/ is package data): resolve such a path against the
    directory that holds the installed ``wfdash`` package instead.
    """
    if not isinstance(source, str) or "://" in source or source.startswith(("/", "~")):
        return source
    candidate = _PACKAGE_PARENT / source
    return str(candidate) if candidate.exists() else source


@dataclass(frozen=True)
class DeploymentFiles:
    """The ``skypilot/`` directory, and the environment secrets are taken from."""

    root: Path
    # Secret envs SkyPilot never returns are passed from here, as `sky ... --env KEY`
    # (no value) passes them from the caller's environment.
    environ: Mapping[str, str] = field(
        default_factory=lambda: os.environ, repr=False, compare=False
    )

    @classmethod
    def default(cls) -> DeploymentFiles:
        """The installed package data if present, else the source checkout's."""
        here = Path(__file__).resolve().parent
        for root in (here.parent / "skypilot", here.parents[1] / "skypilot"):
            if (root / "service.yaml").is_file():
                return cls(root)
        return cls(here.parents[1] / "skypilot")  # reading it will say what is missing

    @property
    def service_yaml(self) -> Path:
        return self.root / "service.yaml"

    def inference_yaml(self, profile: LaunchProfile) -> Path:
        return self.root / profile.yaml_path

    def load(self, path: Path) -> dict[str, Any]:
        """A task YAML as a dict; ActionError (one line) when it cannot be read."""
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ActionError(f"cannot read {self.display(path)}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ActionError(f"{self.display(path)} is not valid YAML{where}") from exc
        if not isinstance(tree, dict):
            raise ActionError(f"{self.display(path)} is not a task YAML (not a mapping)")
        mounts = tree.get("file_mounts")
        if isinstance(mounts, dict):
            tree["file_mounts"] = {dst: _local_source(src) for dst, src in mounts.items()}
        return tree

    @staticmethod
    def display(path: Path) -> str:
        """The path as a command line shows it: relative to the working directory if below it."""
        try:
            return str(path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(path)
