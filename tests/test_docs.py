"""The docs cannot rot.

- Every ```python block of README.md runs as written: each a complete program, run by a
  fresh Python in a folder of its own (holding a small ``data/trades.db`` for the tour's
  block, as ``make demo`` leaves one). Its ``ray.init()`` starts a local Ray of its own
  there, as it does for a user (``RAY_ADDRESS=local``: never another cluster on this
  machine), so Ray workers see the folder's relative paths as the program does.
- A ```python block of docs/*.md runs the same way when the line before it is
  ``<!-- runnable -->``; the others are fragments, or need a server, a cluster or
  credentials.
- The README's YAML example loads through the real component, in a new `dg` project made
  with the README's own commands (`dg scaffold defs`, `dg check defs`, `dg launch`).
- Every relative link of README.md, docs/ and benchmarks/README.md leads to a file that
  exists, and every ``#anchor`` to a heading of it.
"""

import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import ray

from tests.dg_projects import dagster_home, dg_cli, dg_project

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS, ROOT / "benchmarks" / "README.md"]
RUNNABLE = "<!-- runnable -->"

# README blocks that cannot run as written, by their first line, and why. None today: keep
# it that way, or say here why a block is exempt.
NOT_RUN: dict[str, str] = {}

# What a block must print, by a line of its code.
EXPECTED = {
    'time_unit="monthly"': ["SYM00", "8736"],  # 91 days x 96 trades a day, per symbol
    "def weekly_volume(": ["AAPL", "MSFT", "1680"],  # 7 days x 24 trades x qty 10
    "def trades_daily_delta(": ["2024-01-01", "2024-01-07", "24"],  # 24 rows a day
}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    code: str
    marked: bool  # the line before it is <!-- runnable -->

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path, language: str) -> list[Block]:
    """The fenced ``language`` blocks of ``page``, dedented (a block may sit in a list)."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        match = re.fullmatch(r"( *)```(\w*)", lines[i])
        if not match:
            i += 1
            continue
        indent, lang = len(match.group(1)), match.group(2)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        if lang == language:
            code = "\n".join(line[indent:] for line in lines[i + 1 : end]) + "\n"
            before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            found.append(Block(page, i + 1, lang, code, before == RUNNABLE))
        i = end + 1
    return found


README_BLOCKS = blocks(ROOT / "README.md", "python")
DOC_BLOCKS = [block for page in DOCS for block in blocks(page, "python") if block.marked]


@pytest.fixture(scope="module")
def tour_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's trades for 2024's first quarter (20 symbols, one trade each every 15
    minutes, indexed on ``ts``), enough for the README's tour; ``make demo`` builds all of
    2022 to 2024."""
    path = tmp_path_factory.mktemp("tour") / "trades.db"
    stamps = pl.datetime_range(
        dt.datetime(2024, 1, 1), dt.datetime(2024, 3, 31, 23, 45), "15m", eager=True
    )
    symbols = pl.DataFrame({"symbol": [f"SYM{i:02d}" for i in range(20)]})
    rows = (
        pl.DataFrame({"ts": stamps})
        .join(symbols, how="cross")
        .with_columns(
            pl.col("ts").dt.to_string("%Y-%m-%d %H:%M:%S"),
            price=pl.lit(100.0),
            qty=pl.lit(1),
        )
    )
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE trades (ts TIMESTAMP, symbol TEXT, price REAL, qty INTEGER)")
        conn.executemany("INSERT INTO trades VALUES (?, ?, ?, ?)", rows.rows())
        conn.execute("CREATE INDEX trades_ts ON trades (ts)")
    return path


def user_env(**extra: str) -> dict[str, str]:
    """A user's environment in the venv: its tools first, no Dagster home of the project's
    (runs use an ephemeral instance unless ``extra`` names one)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DAGSTER_PYTHON_FILE")}
    env.update(
        PATH=f"{BIN}:{os.environ['PATH']}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        VIRTUAL_ENV=str(BIN.parent),
        NO_COLOR="1",
        COLUMNS="200",
    )
    env.update(extra)
    return env


def run_program(block: Block, folder: Path) -> str:
    """``block`` run as a program in ``folder``, on a local Ray of its own: what it
    printed. Fails with its output."""
    script = folder / "example.py"
    script.write_text(block.code)
    proc = subprocess.run(
        [sys.executable, script.name],
        cwd=folder,
        env=user_env(RAY_ADDRESS="local"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{block.name} failed:\n{printed[-6000:]}"
    for line, wanted in EXPECTED.items():
        if line in block.code:
            missing = [text for text in wanted if text not in proc.stdout]
            assert not missing, f"{block.name} did not print {missing}:\n{proc.stdout[-3000:]}"
    return proc.stdout


def test_the_readme_has_its_examples():
    assert len(README_BLOCKS) >= 2, "the tour's block and the Python example"
    assert len(blocks(ROOT / "README.md", "yaml")) == 1, "one YAML example"
    assert DOC_BLOCKS, "docs/ marks at least one block runnable"
    every_first_line = {block.code.splitlines()[0] for block in README_BLOCKS}
    stale = set(NOT_RUN) - every_first_line
    assert not stale, f"NOT_RUN names blocks the README no longer has: {stale}"


@pytest.mark.parametrize("block", README_BLOCKS + DOC_BLOCKS, ids=lambda block: block.name)
def test_a_python_block_runs_as_written(block: Block, tour_db: Path, tmp_path: Path):
    first = block.code.splitlines()[0]
    if block.page.name == "README.md" and first in NOT_RUN:
        pytest.skip(f"not run: {NOT_RUN[first]}")
    (tmp_path / "data").mkdir()
    shutil.copy(tour_db, tmp_path / "data" / "trades.db")
    run_program(block, tmp_path)


# The README's YAML example in a `dg` project ----------------------------------------------


@pytest.mark.usefixtures("ray_cluster")
def test_the_readme_yaml_example_loads_and_launches_through_the_component(tmp_path: Path):
    # A project as `create-dagster project my-project` lays one out (src/ layout).
    root = tmp_path / "my-project"
    defs = dg_project(root, "my_project", src=True)
    home = dagster_home(tmp_path / "home")
    database = tmp_path / "trades.db"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE trades (ts TIMESTAMP, symbol TEXT, price REAL, qty INTEGER)")
        conn.executemany(
            "INSERT INTO trades VALUES (?, ?, ?, ?)",
            [
                (f"2024-01-0{day} {hour:02d}:00:00", symbol, 100.0, 1)
                for day in (1, 2, 3)
                for hour in range(24)
                for symbol in ("AAPL", "MSFT")
            ],
        )
    env = user_env(
        RAY_ADDRESS=ray.get_runtime_context().gcs_address,  # the tests' Ray, to join
        DAGSTER_HOME=str(home),
        PIOT_SOURCE_URI=f"sqlite:///{database}",
        PYTHONPATH=os.pathsep.join([str(root / "src"), str(ROOT)]),
    )

    # The README's commands, its YAML in place of the scaffolded file.
    dg_cli("scaffold", "defs", "piot_dagster.PartitionedQuery", "trades", cwd=root, env=env)
    defs_yaml = defs / "trades" / "defs.yaml"
    assert defs_yaml.exists()
    (yaml,) = blocks(ROOT / "README.md", "yaml")
    defs_yaml.write_text(yaml.code)
    assert "All definitions loaded successfully" in dg_cli("check", "defs", cwd=root, env=env)
    listed = json.loads(dg_cli("list", "defs", "--json", cwd=root, env=env))
    assert [asset["asset_key"] for asset in listed["assets"] if asset["asset_key"] == "trades"]
    assert {check["name"] for check in listed["asset_checks"]} == {
        "rows_in_window", "no_null_dates", "schema_as_previous", "min_rows"
    }  # fmt: skip
    assert listed["sensors"], "the source sensor"

    day = "2024-01-02"
    launched = dg_cli("launch", "--assets", "trades", "--partition", day, cwd=root, env=env)
    partition = home / "storage" / "trades" / f"{day}.parquet"
    assert partition.exists(), launched[-6000:]
    stored = pl.read_parquet(partition)
    assert stored.height == 24 * 2
    assert stored.get_column("ts").dt.date().unique().to_list() == [dt.date(2024, 1, 2)]


# Links ------------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    in_fence = False
    for line in page.read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else re.match(r"#{1,6} (.*)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    """The link targets of ``page``, outside code blocks and inline code."""
    text = re.sub(r"(?ms)^ *```.*?^ *```", "", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)
    return LINK.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_internal_link_and_anchor_resolves(page: Path):
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)
