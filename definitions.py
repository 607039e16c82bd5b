"""The piot-dagster code location: trades partitioned by day, week, month and year, and by
day x symbol, each partition a Ray task; the same days as one Delta table; the table as
an observable source with its refresh sensor; partition checks; a daily VWAP kept up to
date by Declarative Automation; and a summary of every stored day. The definitions are
in ``defs/`` (its ``__init__.py`` says what is where, and which environment variables
configure them).

    make demo                               # builds data/trades.db, runs the demo
    dagster dev -f definitions.py           # the UI (or `make ui`, or `dg dev`)
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
