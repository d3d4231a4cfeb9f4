"""collect/, control/ and sandbox/ stay headless: they import no textual or rich.

Checked twice, as Harlequin does: statically (no module of these packages names textual
or rich in an import), and at run time in a fresh interpreter (textual never loads, and
neither does ``sky``, which costs ~2 s and must be imported lazily off the UI thread).
Rich itself may appear at run time only because httpx imports its optional CLI
(``httpx._main``) when rich is installed; that is httpx's doing, not a dependency of ours.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADLESS_PACKAGES = ("wfdash.collect", "wfdash.sandbox", "wfdash.control")
FORBIDDEN = ("textual", "rich")

PROBE = """
import importlib, json, pkgutil, sys
imported = []
for package_name in %r:
    try:
        package = importlib.import_module(package_name)
    except ModuleNotFoundError:
        continue
    for info in pkgutil.walk_packages(package.__path__, package_name + "."):
        importlib.import_module(info.name)
        imported.append(info.name)
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"textual", "sky"})
print(json.dumps({"imported": imported, "loaded": loaded}))
"""


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_headless_module_imports_ui_libraries() -> None:
    offenders = []
    for package in HEADLESS_PACKAGES:
        folder = ROOT / package.replace(".", "/")
        for path in sorted(folder.rglob("*.py")) if folder.exists() else []:
            bad = _imported_roots(path) & set(FORBIDDEN)
            if bad:
                offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
    assert offenders == []


def test_headless_packages_load_no_textual_and_no_eager_sky() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE % (HEADLESS_PACKAGES,)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = json.loads(out.stdout)
    assert "wfdash.collect.poller" in result["imported"]
    assert result["loaded"] == []


# What the dashboard imports before its first paint (cli.main up to App.run).
FIRST_PAINT_PROBE = """
import json, sys
import wfdash.cli, wfdash.ui.app, wfdash.ui.flows
print(json.dumps(sorted(sys.modules)))
"""
# Each costs start-up time the first frame does not need: the pydantic domain models and
# event model (built on the poller thread), the snapshot's dataclasses and the cost model
# (the first snapshot comes after the first paint), the screens opened over the dashboard
# (help, a replica's detail, the action dialogs), the HTTP clients, YAML, plotting (the
# first plots are empty), the control plane and SkyPilot itself. Pydantic too: valid
# settings are checked without it (tests/test_config.py checks load_config itself).
NOT_BEFORE_FIRST_PAINT = (
    "pydantic",
    "wfdash.config_schema",
    "wfdash.collect.model",
    "wfdash.collect.snapshot",
    "wfdash.cost",
    "wfdash.pricing",
    "wfdash.ui.screens",
    "wfdash.ui.control",
    "wfdash.collect.events",
    "wfdash.collect.dialects",
    "wfdash.collect.poller",
    "wfdash.control",
    "wfdash.sandbox",
    "httpx",
    "aiohttp",
    "yaml",
    "plotext",
    "sky",
)


def test_first_paint_imports_stay_lean() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FIRST_PAINT_PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = json.loads(out.stdout)
    early = [
        name
        for name in loaded
        if any(name == bad or name.startswith(bad + ".") for bad in NOT_BEFORE_FIRST_PAINT)
    ]
    assert early == []
