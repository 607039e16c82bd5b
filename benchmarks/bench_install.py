"""What an install costs (issue 30): a fresh venv and ``pip install`` of

- the core (``piot-dagster``, no extra: SQLite, DuckDB, local storage),
- everything (``piot-dagster[all]``),
- the package as ``--baseline`` (a git revision, ``main`` by default) declares it, where
  every driver was required,

each timed (``pip install`` alone, pip's cache as it is: run twice for warm figures) and
measured: the size of its site-packages (``du``) and the number of distributions.

    .venv/bin/python benchmarks/bench_install.py [--baseline main] [--only core,all,baseline]
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "README.md", "piot_dagster"]


def checkout(target: Path, revision: str | None) -> Path:
    """What the package builds from, at ``revision`` (None: the working tree), in
    ``target``: building in the checkout would leave build/ and *.egg-info in it."""
    target.mkdir(parents=True)
    if revision is None:
        for name in SOURCES:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(source, target / name)
    else:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", revision, *SOURCES],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "x", "-C", str(target)], input=archive, check=True)
    return target


def install(work: Path, name: str, requirement: str) -> dict[str, object]:
    venv = work / f"venv-{name}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    started = time.perf_counter()
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", requirement],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - started
    site = next((venv / "lib").glob("python*/site-packages"))
    size = subprocess.run(["du", "-sm", str(site)], capture_output=True, text=True, check=True)
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    dagster = next((p.split("==")[1] for p in listed if p.startswith("dagster==")), "?")
    return {
        "install": name,
        "seconds": round(seconds, 1),
        "site_packages_mb": int(size.stdout.split()[0]),
        "distributions": len(listed),
        "dagster": dagster,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="git revision of today's install")
    parser.add_argument("--only", default="core,all,baseline")
    args = parser.parse_args()
    wanted = args.only.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="piot-install-") as tmp:
        work = Path(tmp)
        here = checkout(work / "here", None)
        if "core" in wanted:
            rows.append(install(work, "core", str(here)))
        if "all" in wanted:
            rows.append(install(work, "all", f"{here}[all]"))
        if "baseline" in wanted:
            base = checkout(work / "baseline", args.baseline)
            rows.append(install(work, f"{args.baseline} (every driver)", str(base)))
    print(f"{'install':<24} {'seconds':>8} {'site-packages':>14} {'dists':>6}  dagster")
    for row in rows:
        print(
            f"{row['install']:<24} {row['seconds']:>8} {row['site_packages_mb']:>11} MB "
            f"{row['distributions']:>6}  {row['dagster']}"
        )


if __name__ == "__main__":
    main()
