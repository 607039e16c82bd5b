"""``dg scaffold defs piot_dagster.PartitionedQuery <name>``: a commented ``defs.yaml``
that loads as it is written (every attribute explained, the optional ones commented
out), for the ``PartitionedQuery`` component."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg

__all__ = ["PartitionedQueryScaffolder", "defs_yaml"]

_TEMPLATE = """\
# A SQL query as a time-partitioned asset: each partition is a Ray task that reads its own
# slice (the partition's window reaches the query's WHERE) and stores it; a backfill of a
# range is one run. Check it with `dg check defs`; see it with `dg list defs`.
type: {type_name}
attributes:
  # The asset's key.
  name: {name}
  # One SELECT statement, sent to the database as written; partitions filter around it.
  query: SELECT ts, symbol, price FROM trades
  # sqlite:///path, duckdb:///path, postgresql://..., mysql://... or an ODBC string. A
  # connection with a password must come from an environment variable, as here.
  connection: "{{{{ env.PIOT_SOURCE_URI }}}}"
  # The Date or Datetime column that partitions split on; the query must select it.
  date_column: ts
  partitions:
    # hourly, daily, weekly (from Monday), monthly or yearly.
    time_unit: daily
    # The first partition, and the end (exclusive; leave it out for partitions up to now).
    start: "2024-01-01"
    # end: "2025-01-01"
    # The partitions' calendar (any IANA zone).
    timezone: UTC
    # A second dimension of fixed keys: each cell is one day and one key; `column` is the
    # query's column holding the keys.
    # static:
    #   name: symbol
    #   keys: [AAPL, MSFT]
    #   column: symbol
  output:
    # parquet (a file per partition) or delta (one Delta table, one commit per run).
    format: parquet
    # A folder every Ray node mounts, or s3://, gs://, az://, abfs:// (default: the
    # Dagster instance's storage).
    # base_dir: s3://lake/assets
    # Polars' cloud options; secrets from environment variables.
    # storage_options:
    #   aws_region: eu-west-1
    #   aws_access_key_id: "{{{{ env.AWS_ACCESS_KEY_ID }}}}"
    #   aws_secret_access_key: "{{{{ env.AWS_SECRET_ACCESS_KEY }}}}"
    # For delta: `merge` lets a run add columns to the table.
    # schema_mode: merge
  # Each Ray task's options, and how many run at once.
  # remote_options: {{num_cpus: 1}}
  # max_concurrency: 100
  # Partition checks: rows in window, no null dates, schema as the previous partition's,
  # and at least min_rows rows.
  checks:
    min_rows: 1
  # A sensor that re-materializes exactly the partitions whose source rows changed.
  # source_sensor:
  #   minimum_interval_seconds: 60
  #   running: false
  # Declarative Automation, e.g. recompute a partition when its upstream changes.
  # automation_condition: "{{{{ dg.AutomationCondition.eager() }}}}"
  # The run's Ray (default: a running local cluster, else an embedded one), started by
  # the step that runs the tasks, never by the checks. Assets of equal ray and
  # io_manager settings share one IO manager.
  # ray:
  #   address: ray://head:10001
  #   num_cpus: 4
  #   num_gpus: 0
  #   runtime_env: {{env_vars: {{POLARS_MAX_THREADS: "2"}}}}
  #   include_dashboard: false
  #   namespace: lake
  #   connect_timeout_s: 10
  #   # Instead of the fields above: a Ray resource built in Python (dagster-ray's
  #   # LocalRay, KubeRayCluster...), a template variable of template_vars_module.
  #   resource: "{{{{ ray_cluster }}}}"
  # io_manager:
  #   # How long tasks may wait for a node offering what they ask for.
  #   infeasible_timeout_s: 60
  # group_name: trades
  # tags: {{team: markets}}
  # owners: ["team:markets"]
  # Other upstream assets, for lineage.
  # deps: [raw_trades]
  # kinds: [polars, ray, parquet]
  description: Trades of the partition's period, read by scan_db in a Ray task.
"""


def defs_yaml(name: str, type_name: str = "piot_dagster.PartitionedQuery") -> str:
    """The commented ``defs.yaml`` of a new ``PartitionedQuery`` named ``name``."""
    return _TEMPLATE.format(name=name, type_name=type_name)


class PartitionedQueryScaffolder(dg.Scaffolder):
    """Writes ``defs.yaml`` into the new definitions folder."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        if request.scaffold_format != "yaml":
            raise ValueError("PartitionedQuery is defined in YAML: scaffold it with --format yaml")
        folder = Path(request.target_path)
        folder.mkdir(parents=True, exist_ok=True)
        # An asset's name is letters, digits and underscores; a folder's may be more.
        name = re.sub(r"\W", "_", folder.name)
        (folder / "defs.yaml").write_text(defs_yaml(name, request.type_name))
