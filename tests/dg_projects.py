"""A `dg` project laid out as `create-dagster project` lays one out, written by hand where a
test or benchmark needs one quickly (tests/test_dg_project.py runs the real
`create-dagster`): a pyproject with `[tool.dg]`, the package, its `definitions.py` over
the `defs/` folder, and a Dagster home with telemetry off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["DG", "dagster_home", "dg_cli", "dg_project"]

# The `dg` CLI of the tests' venv.
DG = str(Path(sys.executable).parent / "dg")

_PYPROJECT = """\
[project]
name = "{name}"
version = "0.1.0"
requires-python = ">=3.11"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "{package}"
"""
_DEFINITIONS = """\
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


def dg_project(root: Path, package: str, *, src: bool = False) -> Path:
    """Write the project ``root`` with its package ``package`` (under ``src/`` with
    ``src``); return the package's ``defs/`` folder."""
    folder = (root / "src" if src else root) / package
    (folder / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(_PYPROJECT.format(name=root.name, package=package))
    (folder / "__init__.py").write_text("")
    (folder / "defs" / "__init__.py").write_text("")
    (folder / "definitions.py").write_text(_DEFINITIONS)
    return folder / "defs"


def dagster_home(path: Path) -> Path:
    """A fresh Dagster home at ``path``. Telemetry off: the first `dg` call would print a
    banner on stdout (notes/dagster.md)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return path


def dg_cli(
    *args: str, cwd: Path, env: dict[str, str], ok: bool = True, timeout: float = 300
) -> str:
    """`dg <args>` run in ``cwd``: what it printed (stdout, then stderr), which must
    succeed (``ok``) or fail (not ``ok``)."""
    proc = subprocess.run(
        [DG, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    printed = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == ok, f"dg {' '.join(args)}:\n{printed[-6000:]}"
    return printed
