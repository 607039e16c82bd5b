"""The piot-dagster code location, in Dagster's own shape: this function loads ``defs/``.

- ``defs/trades.py``: trades partitioned by day, week, month and day x symbol, and by day
  as one Delta table; each partition a Ray task, a backfill of a range one run;
  the refresh sensor ``trades_daily_source_changes``; partition checks.
- ``defs/trades_yearly/defs.yaml``: trades by year, through the PartitionedQuery component.
- ``defs/analytics.py``: ``daily_summary``, every stored day concatenated into one frame,
  and ``daily_vwap``, kept up to date by Declarative Automation.

    make demo                               # builds data/trades.db, runs the demo
    dagster dev -f definitions.py           # the UI (or `make ui`, or `dg dev`)
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
