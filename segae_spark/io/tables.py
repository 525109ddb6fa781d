"""Read and write tables: Delta, Parquet, CSV.

The public entry points of the I/O layer. They validate every argument before
touching data (ConfigError / SchemaError / TableNotFoundError name what is
wrong), detect the format of an existing path, and route Delta to delta-spark
when the session has it, else to delta-rs (:mod:`delta_rs`), so the same code
runs on Databricks and on a laptop without JVM packages.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pyarrow.fs as pafs
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, StringType, TimestampNTZType, TimestampType

from segae_spark.errors import ConfigError, SchemaError, TableExistsError, TableNotFoundError
from segae_spark.io import delta_native, delta_rs, schemas
from segae_spark.io.arrow_map import ArrowMap, as_dataframe
from segae_spark.io.delta_rs import DateRange
from segae_spark.io.paths import TablePath, check_format, detect_format, exists, is_delta_table, resolve
from segae_spark.session import has_native_delta

logger = logging.getLogger("segae_spark")

WRITE_MODES = ("append", "overwrite", "error")
# Keys delta-rs generates itself, plus the one we use to find our commit.
_RESERVED_COMMIT_KEYS = frozenset({"timestamp", "operation", "engineInfo", "segaeWriteId"})


@dataclass(frozen=True)
class WriteResult:
    """What :func:`write_table` did.

    ``version`` is the committed Delta version (None for Parquet/CSV and for a
    skipped write); ``skipped`` is True when the txn was already committed, in
    which case nothing was written; ``rows`` is None when not known (Parquet/CSV).
    """

    path: str
    format: str
    version: int | None
    skipped: bool
    files: int
    rows: int | None


def read_table(
    spark: SparkSession,
    path: str,
    format: str | None = None,
    version: int | None = None,
    date_range: DateRange | None = None,
    added_since: int | None = None,
) -> DataFrame:
    """Read a Delta, Parquet or CSV table; ``format=None`` detects it from the files.

    ``version`` (Delta only) reads an older snapshot (time travel). CSV is read
    with a header row and inferred column types. ``date_range`` keeps the rows
    with ``low <= column < high`` (a date, timestamp or ISO-date string column),
    skipping Delta files that cannot hold any. ``added_since`` (Delta only)
    keeps the rows of files added after that version: what an append-only
    table gained since.
    """
    fmt = check_format(format)
    for name, value in (("version", version), ("added_since", added_since)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    df = _read(spark, path, fmt, version, date_range, added_since)
    return df if date_range is None else _rows_in_range(df, date_range, path)


def _read(spark, path, fmt, version, date_range, added_since) -> DataFrame:
    native = has_native_delta(spark)
    table = _resolve(path, lenient=native and fmt is not None)
    if table is not None:
        if fmt is None:
            fmt = detect_format(table)
        elif not exists(table):
            raise TableNotFoundError(f"no table at {table.path}: the path does not exist")
    for name, value in (("version", version), ("added_since", added_since)):
        if value is not None and fmt != "delta":
            raise ConfigError(f"{name}= is only valid for Delta tables; {path} is read as {fmt}")
    location = table.path if table is not None else path
    if fmt == "delta":
        if table is not None and not is_delta_table(table):
            raise TableNotFoundError(f"{table.path} is not a Delta table (no _delta_log directory)")
        if native and added_since is None:
            return delta_native.read(spark, location, version)
        if table is None:
            raise ConfigError(f"added_since= reads the Delta log with delta-rs, which cannot open {path}")
        return delta_rs.read(spark, table, version, date_range, added_since)
    if table is not None and is_delta_table(table):
        # Its directory also holds files that older versions removed.
        raise ConfigError(f"{table.path} is a Delta table; read it with format='delta' (or None), not {fmt!r}")
    try:
        if fmt == "parquet":
            return spark.read.parquet(location)
        return spark.read.option("header", "true").option("inferSchema", "true").csv(location)
    except Exception as exc:  # Py4JJavaError / AnalysisException from reading the footers or inferring the schema
        raise TableNotFoundError(f"{location} cannot be read as {fmt}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    """The root cause of a JVM read failure, in one line (its last "Caused by:"), else its first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [line.removeprefix("Caused by:").strip() for line in lines if line.startswith("Caused by:")]
    reason = causes[-1] if causes else (lines[0] if lines else type(exc).__name__)
    # "java.lang.RuntimeException: file:/x is not a Parquet file ..." -> "file:/x is not a Parquet file ..."
    head, sep, rest = reason.partition(": ")
    if sep and "." in head and " " not in head:
        reason = rest
    return reason[:300]


def _rows_in_range(df: DataFrame, rng: DateRange, path: str) -> DataFrame:
    """``low <= column < high``, compared in the column's own type."""
    if rng.column not in df.columns:
        raise SchemaError(f"date column {rng.column!r} is not in {path}; columns: {df.columns}")
    kind = df.schema[rng.column].dataType
    column = F.col(rng.column)
    if isinstance(kind, DateType):
        low, high = F.lit(rng.low), F.lit(rng.high)
    elif isinstance(kind, (TimestampType, TimestampNTZType)):
        low, high = F.lit(rng.low).cast(kind), F.lit(rng.high).cast(kind)
    elif isinstance(kind, StringType):  # ISO dates sort as strings; a timestamp string's date is its first 10 chars
        column = F.substring(column, 1, 10)
        low, high = F.lit(rng.low.isoformat()), F.lit(rng.high.isoformat())
    else:
        raise SchemaError(
            f"date column {rng.column!r} of {path} is {kind.simpleString()}; expected date, timestamp or an ISO-date string"
        )
    return df.filter((column >= low) & (column < high))


def write_table(
    df: DataFrame | ArrowMap,
    path: str,
    mode: str = "error",
    partition_by: list[str] | None = None,
    txn: tuple[str, int] | list[tuple[str, int]] | None = None,
    format: str = "delta",
    commit_metadata: dict[str, str] | None = None,
    replace_where: DateRange | None = None,
) -> WriteResult:
    """Write ``df`` to a table; a Delta write is one atomic commit.

    ``mode``: "error" (fail if a table exists), "append", or "overwrite".
    ``replace_where`` (Delta, with mode="overwrite") replaces only the rows in
    that date range, e.g. to re-score a month: without delta-spark the table
    must be partitioned by the range's column, and every row written must lie
    in the range.
    ``txn=(app_id, version)`` makes a Delta write idempotent: when the table
    already holds that app's transaction at ``version`` or later the write is
    skipped, so a retried job never duplicates rows. Without delta-spark it
    may be a list of such pairs, all recorded by the one commit (a backfill
    chunk records one per day): the write is skipped when all of them are
    committed, and refused when only some are. ``commit_metadata`` is
    stored in the Delta commit info.

    ``df`` may be an :class:`~segae_spark.io.arrow_map.ArrowMap` (what
    ``SegmentAEModel.arrow_transform`` returns): the delta-rs writer then runs
    its function in the same Python pass that writes the files.
    """
    start = time.perf_counter()
    fmt = check_format(format)
    if fmt is None:
        raise ConfigError("format must be one of delta, parquet, csv for a write, got None")
    if mode not in WRITE_MODES:
        raise ConfigError(f"mode must be one of {', '.join(WRITE_MODES)}, got {mode!r}")
    partition_by = _check_partition_by(partition_by)
    txns = _check_txn(txn)
    _check_commit_metadata(commit_metadata)
    if fmt != "delta" and (txn is not None or commit_metadata or replace_where is not None):
        raise ConfigError(f"txn, commit_metadata and replace_where need a Delta table; format is {fmt}")
    if replace_where is not None and mode != "overwrite":
        raise ConfigError(f"replace_where overwrites a range of the table: use mode='overwrite', not {mode!r}")

    spark = df.sparkSession
    if fmt == "delta" and has_native_delta(spark):
        if partition_by:
            schemas.check_partition_columns(df.schema, partition_by)
        table = _resolve(path, lenient=True)
        location = table.path if table is not None else path
        if len(txns) > 1:
            raise ConfigError("delta-spark records one application transaction per write; pass a single txn")
        done = delta_native.write(as_dataframe(df), location, mode, partition_by, txns[0] if txns else None, commit_metadata, replace_where)
        result = WriteResult(location, fmt, done.version, done.skipped, done.files, done.rows)
    elif fmt == "delta":
        table = resolve(path)
        if mode == "error" and is_delta_table(table):
            raise TableExistsError(f"a Delta table already exists at {table.path}; use mode='append' or 'overwrite'")
        df, dt, partitions = delta_rs.prepare_write(df, table, mode, partition_by, replace_where)
        done = delta_rs.write(df, table, mode, dt, partitions, txns, commit_metadata, replace_where=replace_where)
        result = WriteResult(table.path, fmt, done.version, done.skipped, done.files, done.rows)
    else:
        result = _write_files(as_dataframe(df), resolve(path), fmt, mode, partition_by)

    logger.info(
        "write_table path=%s format=%s mode=%s files=%d rows=%s version=%s skipped=%s seconds=%.2f",
        result.path,
        result.format,
        mode,
        result.files,
        result.rows,
        result.version,
        result.skipped,
        time.perf_counter() - start,
    )
    return result


def table_version(path: str) -> int | None:
    """The latest version of the Delta table at ``path``, or None when there is none."""
    table = resolve(path)
    if not is_delta_table(table):
        return None
    dt = delta_rs.open_table(table)
    return None if dt is None else dt.version()


def vacuum_table(
    path: str, retention_hours: int | None = None, dry_run: bool = False, enforce_retention: bool = True
) -> list[str]:
    """Remove the data files of the Delta table at ``path`` that no current version references.

    A job killed before its commit (or a write that lost a conflict) leaves its
    data files behind; no snapshot ever reads them, but they take space. This
    deletes them, and files that overwrites removed, once they are older than
    ``retention_hours`` (default: the table's ``delta.deletedFileRetentionDuration``,
    7 days). Returns the files deleted, or with ``dry_run`` the files it would
    delete. A retention below the table's own is refused unless
    ``enforce_retention=False``: run that only when no job is writing to the
    table, since a running write's files are not yet in the log either.
    """
    if retention_hours is not None and (not isinstance(retention_hours, int) or retention_hours < 0):
        raise ConfigError(f"retention_hours must be a whole number of hours >= 0, got {retention_hours!r}")
    table = resolve(path)
    files = delta_rs.vacuum(table, retention_hours, dry_run, enforce_retention)
    logger.info("vacuum %s: %d unreferenced files %s", table.path, len(files), "found (dry run)" if dry_run else "deleted")
    return sorted(files)


def table_row_count(spark: SparkSession, path: str, format: str | None = None, version: int | None = None) -> int:
    """Rows in a table; for Delta from the log's file statistics when every file has them."""
    fmt = check_format(format)
    if not has_native_delta(spark) and fmt in (None, "delta"):
        table = resolve(path)
        if is_delta_table(table):
            counted = delta_rs.row_count(table, version)
            if counted is not None:
                return counted
    return read_table(spark, path, format=format, version=version).count()


def _write_files(df: DataFrame, table: TablePath, fmt: str, mode: str, partition_by: list[str] | None) -> WriteResult:
    """Parquet / CSV through Spark's own writer (not atomic: that is what Delta is for)."""
    present = exists(table)
    if present and is_delta_table(table):
        # An overwrite would delete _delta_log; an append would add files Delta never sees.
        raise ConfigError(f"{table.path} is a Delta table; write to it with format='delta', not {fmt!r}")
    if mode == "error" and present:
        raise TableExistsError(f"{table.path} already exists; use mode='append' or 'overwrite'")
    if partition_by:
        schemas.check_partition_columns(df.schema, partition_by)
    before = _data_files(table) if present and mode == "append" else set()
    writer = df.write.format(fmt).mode("errorifexists" if mode == "error" else mode)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if fmt == "csv":
        writer = writer.option("header", "true")
    writer.save(table.path)
    files = len(_data_files(table) - before)
    return WriteResult(table.path, fmt, None, False, files, None)


def _data_files(table: TablePath) -> set[str]:
    fs = table.filesystem()
    found = set()
    for entry in fs.get_file_info(pafs.FileSelector(table.fs_path, recursive=True, allow_not_found=True)):
        relative = entry.path[len(table.fs_path) :].strip("/")
        if entry.type == pafs.FileType.File and not any(p.startswith(("_", ".")) for p in relative.split("/")):
            found.add(relative)
    return found


def _resolve(path: str, lenient: bool) -> TablePath | None:
    """Resolve ``path``; with ``lenient``, None for a scheme pyarrow cannot open (e.g. dbfs:)."""
    try:
        return resolve(path)
    except ConfigError:
        if lenient and isinstance(path, str) and path.strip():
            return None
        raise


def _check_partition_by(partition_by: list[str] | None) -> list[str] | None:
    if partition_by is None:
        return None
    if isinstance(partition_by, str) or not all(isinstance(c, str) for c in partition_by):
        raise ConfigError(f"partition_by must be a list of column names, got {partition_by!r}")
    return list(partition_by)


def _check_txn(txn) -> list[tuple[str, int]]:
    """``txn`` as a list of (app_id, version) pairs; ConfigError when malformed."""
    if txn is None:
        return []
    pairs = txn if isinstance(txn, list) and all(isinstance(t, (tuple, list)) for t in txn) and txn else [txn]
    for pair in pairs:
        valid = (
            isinstance(pair, (tuple, list))
            and len(pair) == 2
            and isinstance(pair[0], str)
            and pair[0].strip() != ""
            and isinstance(pair[1], int)
            and not isinstance(pair[1], bool)
            and pair[1] >= 0
        )
        if not valid:
            raise ConfigError(f"txn must be (app_id: non-empty str, version: non-negative int) or a list of them, got {txn!r}")
    return [(str(app), int(version)) for app, version in pairs]


def _check_commit_metadata(commit_metadata: dict[str, str] | None) -> None:
    if commit_metadata is None:
        return
    if not isinstance(commit_metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in commit_metadata.items()
    ):
        raise ConfigError(f"commit_metadata must be a dict of str to str, got {commit_metadata!r}")
    reserved = sorted(_RESERVED_COMMIT_KEYS & set(commit_metadata))
    if reserved:
        raise ConfigError(f"commit_metadata keys {reserved} are reserved by the Delta commit info")
