"""The piot-dagster code location's definitions, loaded by ``definitions.py`` through
``dg.load_from_defs_folder`` (``dg list defs`` shows where each comes from):

- ``trades.py``: the trades table (embedded SQLite, or ``PIOT_SOURCE_URI``) as an
  observable source, with the sensor that refreshes exactly the days whose rows changed;
  the trades by day, week, month, and day x symbol, each partition a Ray task through
  ``RayParquetIOManager``, and the same days as one Delta table through
  ``RayDeltaIOManager`` (each run one commit); partition checks on both daily tables;
  their jobs, and the in-process executor (one Ray per run);
- ``trades_yearly/defs.yaml``: the trades by year, in YAML (the ``PartitionedQuery``
  component);
- ``analytics.py``: a daily VWAP that Declarative Automation keeps up to date, and a
  summary of every stored day, which reads all of trades_daily's partitions as one frame;
  their jobs.

Every asset stores through the same two IO managers (``piot_parquet_io_manager`` and
``piot_delta_io_manager``, from ``partitioned_query``), which share one Ray resource.

Configuration (environment variables, read when the definitions load):

- ``PIOT_SOURCE_URI``: read trades from this database instead of the embedded one, e.g.
  ``postgresql://user:password@host:5432/markets``, ``mysql://user:password@host:3306/markets``
  or an ODBC string, ``Driver={MariaDB Unicode};Server=host;Database=markets;Uid=u;Pwd=p;``
  (a ``trades`` table with ``ts``, ``symbol``, ``price`` and ``qty``);
- ``PIOT_TRADES_DB``: the embedded SQLite database (default ``data/trades.db`` in the
  project), which ``python -m scripts.trades_db`` (or ``make demo``) builds;
- ``PIOT_ASSET_DIR``: where partition files and Delta tables go (default: the Dagster
  instance's storage);
- ``RAY_ADDRESS``: a running Ray cluster to use instead of starting an embedded one.
"""
