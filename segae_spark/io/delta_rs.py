"""Delta tables without delta-spark: delta-rs keeps the log, Spark moves the data.

Reading: delta-rs replays the log into the snapshot's list of files and their
partition values; Spark reads those Parquet files itself. Delta data files do
not contain partition columns, so the values are joined back by file name from
a small driver-built DataFrame (broadcast, no shuffle). This works for any
directory layout, Hive-style or not, and tables written by any engine, as long
as the snapshot's reader features can be honoured by plain Parquet reads;
deletion vectors and column mapping cannot, so those tables are refused.

Writing: executors write the data files (see :mod:`delta_files`), the driver
collects one metadata row per file and commits a single transaction with
delta-rs. Until that commit nothing is visible, so a failed Spark job leaves
the table at its previous version. An application transaction id
``(app_id, version)`` makes a retried job a no-op instead of a duplicate.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError, DeltaProtocolError
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFoundError
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    Transaction,
    create_table_with_add_actions,
)
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StructType

from segae_spark.compat import arrow_to_dataframe
from segae_spark.errors import CommitConflictError, ConfigError, SchemaError, SegaeError, TableNotFoundError
from segae_spark.io import delta_files, schemas
from segae_spark.io.arrow_map import ArrowMap, map_in_arrow
from segae_spark.io.paths import TablePath

logger = logging.getLogger("segae_spark")

# Reader features that change how Parquet files must be read; anything not
# listed as harmless is refused rather than read wrongly.
_HARMLESS_READER_FEATURES = {"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"}
# Writer features whose invariants our plain add-actions would not maintain.
_UNWRITABLE_WRITER_FEATURES = {
    "columnMapping",
    "rowTracking",
    "icebergCompatV1",
    "icebergCompatV2",
    "typeWidening",
    "typeWidening-preview",
}
_FIELD_METADATA_WE_CANNOT_HONOUR = ("delta.generationExpression", "delta.identity", "delta.invariants")
_FILE_COLUMN = "__segae_file_name"


@dataclass(frozen=True)
class Committed:
    """What a delta-rs write did: version None and skipped True for an idempotent retry."""

    version: int | None
    skipped: bool
    files: int
    rows: int


# ----------------------------------------------------------------------------- open


def open_table(table: TablePath, version: int | None = None) -> DeltaTable | None:
    """The table's snapshot (at ``version``), or None when there is no Delta table."""
    try:
        return DeltaTable(table.path, version=version)
    except DeltaTableNotFoundError:
        return None
    except DeltaError as exc:
        if version is not None:
            latest = _latest_version(table)
            raise ConfigError(
                f"version {version} of Delta table {table.path} cannot be read "
                f"(latest version is {latest}; old versions may have been cleaned up): {exc}"
            ) from exc
        raise SegaeError(f"cannot open Delta table {table.path}: {exc}") from exc


def _latest_version(table: TablePath) -> int | str:
    try:
        return DeltaTable(table.path).version()
    except Exception:  # only used to enrich an error message
        return "unknown"


def table_spark_schema(dt: DeltaTable) -> StructType:
    return schemas.spark_schema_from_delta_json(dt.schema().to_json())


# ----------------------------------------------------------------------------- read


def read(
    spark: SparkSession,
    table: TablePath,
    version: int | None = None,
    date_range: DateRange | None = None,
    added_since: int | None = None,
) -> DataFrame:
    """The snapshot's rows as a DataFrame, columns in the Delta schema's order.

    ``date_range`` skips the files whose partition value or min/max statistics
    lie wholly outside it (the caller still filters rows: a kept file may hold
    some outside it). ``added_since`` reads only the files added after that
    version, i.e. the rows appended since; it refuses a table that removed or
    rewrote files meanwhile, whose "new" files would repeat old rows.
    """
    dt = open_table(table, version)
    if dt is None:
        raise TableNotFoundError(f"{table.path} is not a Delta table (no _delta_log)")
    _check_readable(dt, table)
    schema = table_spark_schema(dt)
    partition_columns = list(dt.metadata().partition_columns)
    actions = pa.table(dt.get_add_actions(flatten=True))
    if added_since is not None:
        actions = _added_since(table, dt, actions, added_since)
    if date_range is not None:
        actions = actions.filter(pa.array(_overlapping(actions, date_range, date_range.column in partition_columns)))
    if actions.num_rows == 0:
        return spark.createDataFrame([], schema)
    files = [_absolute_file(table, p) for p in actions.column("path").to_pylist()]
    data_schema = schemas.without(schema, partition_columns)
    if not partition_columns:
        return _read_parquet(spark, data_schema, files).select(*schema.names)
    values = _partition_values(actions, files, schema, partition_columns)
    # Basenames are unique in practice (they carry uuids), but a foreign writer
    # may reuse one in two partitions; such files go to separate scans.
    batches: list[list[int]] = []
    seen: dict[str, int] = defaultdict(int)
    for index, file in enumerate(files):
        name = _basename(file)
        if seen[name] == len(batches):
            batches.append([])
        batches[seen[name]].append(index)
        seen[name] += 1
    frames = []
    for indices in batches:
        part = values.take(pa.array(indices, pa.int64()))
        lookup = arrow_to_dataframe(spark, part)
        data = _read_parquet(spark, data_schema, [files[i] for i in indices]).withColumn(
            _FILE_COLUMN, F.col("_metadata.file_name")
        )
        frames.append(data.join(F.broadcast(lookup), on=_FILE_COLUMN, how="inner").select(*schema.names))
    result = frames[0]
    for frame in frames[1:]:
        result = result.unionByName(frame)
    return result


@dataclass(frozen=True)
class DateRange:
    """Rows with ``low <= column < high``; the bounds are dates."""

    column: str
    low: datetime.date
    high: datetime.date


def _overlapping(actions: pa.Table, rng: DateRange, partitioned: bool) -> list[bool]:
    """Per file: may it hold rows in ``rng``? From its partition value, else its min/max statistics."""
    if partitioned:
        lows = highs = _column_or_nulls(actions, f"partition.{rng.column}")
    else:
        lows = _column_or_nulls(actions, f"min.{rng.column}")
        highs = _column_or_nulls(actions, f"max.{rng.column}")
    # Timestamps are compared by their UTC date, one day wider on each side,
    # so a session time zone can never make a needed file look out of range.
    slack = datetime.timedelta(days=1)
    keep = []
    for low, high in zip(lows, highs):
        if low is None or high is None:
            keep.append(True)
            continue
        low_day, low_slack = _as_date(low, slack)
        high_day, high_slack = _as_date(high, slack)
        keep.append(low_day is None or high_day is None or (high_day + high_slack >= rng.low and low_day - low_slack < rng.high))
    return keep


def _column_or_nulls(actions: pa.Table, name: str) -> list:
    if name not in actions.column_names:
        return [None] * actions.num_rows
    return actions.column(name).to_pylist()


def _as_date(value, slack: datetime.timedelta) -> tuple[datetime.date | None, datetime.timedelta]:
    """A statistic as a date (None when it is not date-like) and the slack it needs."""
    if isinstance(value, datetime.datetime):
        return value.date(), slack
    if isinstance(value, datetime.date):
        return value, datetime.timedelta(0)
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value[:10]), datetime.timedelta(0)
        except ValueError:
            return None, datetime.timedelta(0)
    return None, datetime.timedelta(0)


def _added_since(table: TablePath, dt: DeltaTable, actions: pa.Table, since: int) -> pa.Table:
    if since > dt.version():
        raise ConfigError(f"version {since} of {table.path} is newer than its latest version {dt.version()}")
    before = open_table(table, since)
    old = set(pa.table(before.get_add_actions(flatten=True)).column("path").to_pylist())
    paths = actions.column("path").to_pylist()
    gone = old - set(paths)
    if gone:
        raise SegaeError(
            f"{table.path} removed or rewrote {len(gone)} data file(s) between version {since} and "
            f"{dt.version()} (an overwrite, DELETE, MERGE or OPTIMIZE), so the rows added since {since} "
            "cannot be told apart; re-score the affected dates with --from/--to --replace-where instead"
        )
    return actions.filter(pa.array([p not in old for p in paths]))


def _read_parquet(spark: SparkSession, schema: StructType, files: list[str]) -> DataFrame:
    # globPaths off: a file name with [ ] { } * ? must be taken literally.
    return spark.read.schema(schema).option("globPaths", "false").parquet(*files)


def _absolute_file(table: TablePath, log_path: str) -> str:
    """A file's decoded location from its log path (a URI-encoded path, relative or absolute).

    Decoded, because Spark takes a path string literally (it would encode a
    ``%`` again) and reports ``_metadata.file_name`` decoded.
    """
    parsed = urlparse(log_path)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme:
        return f"{parsed.scheme}://{parsed.netloc}{unquote(parsed.path)}"
    return f"{table.path.rstrip('/')}/{unquote(log_path)}"


def _basename(file: str) -> str:
    return file.rstrip("/").rsplit("/", 1)[-1]


def _partition_values(
    actions: pa.Table, files: list[str], schema: StructType, partition_columns: list[str]
) -> pa.Table:
    """A (file name, partition columns...) table typed like the Delta schema.

    delta-rs already parses the log's partition strings into typed values; the
    cast pins them to exactly the Spark types (e.g. int16, decimal(p,s), UTC).
    """
    target = to_arrow_schema(StructType([schema[name] for name in partition_columns]))
    columns = [pa.array([_basename(f) for f in files], pa.string())]
    for field in target:
        source = f"partition.{field.name}"
        if source in actions.column_names:
            columns.append(actions.column(source).cast(field.type))
        else:  # delta-rs leaves out a partition column that is null in every file
            columns.append(pa.nulls(actions.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=pa.schema([pa.field(_FILE_COLUMN, pa.string()), *target]))


def _check_readable(dt: DeltaTable, table: TablePath) -> None:
    protocol = dt.protocol()
    features = set(protocol.reader_features or [])
    mapping = dt.metadata().configuration.get("delta.columnMapping.mode") or "none"
    if protocol.min_reader_version == 2 or mapping != "none" or "columnMapping" in features:
        raise SegaeError(
            f"Delta table {table.path} uses column mapping, which plain Parquet reads cannot honour; "
            "read it from a Spark session with delta-spark configured"
        )
    if "deletionVectors" in features:
        raise SegaeError(
            f"Delta table {table.path} has deletion vectors enabled, which plain Parquet reads cannot honour; "
            "read it from a Spark session with delta-spark configured, or disable them and run REORG/OPTIMIZE"
        )
    unknown = features - _HARMLESS_READER_FEATURES
    if unknown or protocol.min_reader_version > 3:
        raise SegaeError(
            f"Delta table {table.path} needs reader features {sorted(unknown)} "
            f"(reader version {protocol.min_reader_version}) that this reader does not support; "
            "read it from a Spark session with delta-spark configured"
        )


# ----------------------------------------------------------------------------- write


def prepare_write(
    df: DataFrame | ArrowMap,
    table: TablePath,
    mode: str,
    partition_by: list[str] | None,
    replace_where: DateRange | None = None,
) -> tuple[DataFrame | ArrowMap, DeltaTable | None, list[str]]:
    """Validate a write against the existing table; return the DataFrame in table order.

    Runs before any Spark job, so every rejection is cheap.
    """
    dt = open_table(table)
    schemas.check_storable(df.schema)
    if dt is None:
        partition_by = list(partition_by or [])
        schemas.check_partition_columns(df.schema, partition_by)
        _check_replace_partitioning(replace_where, partition_by, table)
        return df, None, partition_by
    _check_writable(dt, table)
    table_partitions = list(dt.metadata().partition_columns)
    if partition_by is not None and list(partition_by) != table_partitions:
        schemas.check_partition_columns(df.schema, list(partition_by))
        raise SchemaError(
            f"partition_by {list(partition_by)} differs from the partition columns {table_partitions} of "
            f"{table.path}; a table's partitioning cannot change (write to a new path instead)"
        )
    schemas.check_partition_columns(df.schema, table_partitions)
    _check_replace_partitioning(replace_where, table_partitions, table)
    if mode == "append" or replace_where is not None:
        table_schema = table_spark_schema(dt)
        differences = schemas.schema_differences(table_schema, df.schema)
        if differences:
            raise SchemaError(
                f"cannot append to {table.path}: the DataFrame's schema differs from the table's: "
                + "; ".join(differences)
            )
        df = df.select(*table_schema.names)
    return df, dt, table_partitions


def _check_replace_partitioning(replace_where: DateRange | None, partitions: list[str], table: TablePath) -> None:
    if replace_where is not None and replace_where.column not in partitions:
        raise SchemaError(
            f"replacing a date range of {table.path} needs the table partitioned by {replace_where.column!r} "
            f"(its partition columns: {partitions}); without delta-spark only whole partitions can be replaced"
        )


def _outside(described: list, rng: DateRange) -> list[str]:
    """Partition values of written files that fall outside ``rng``."""
    low, high = rng.low.isoformat(), rng.high.isoformat()
    found = set()
    for row in described:
        value = json.loads(row["partition_values"]).get(rng.column)
        if value is None or not low <= value[:10] < high:
            found.add(str(value))
    return sorted(found)


def already_committed(dt: DeltaTable | None, txns: list[tuple[str, int]]) -> bool:
    """True when the table holds every one of ``txns`` (at its version or later).

    A table holding only some of them raises CommitConflictError: another
    writer committed part of what this write would add, and adding it all
    again would duplicate that part.
    """
    if dt is None or not txns:
        return False
    committed = {app: dt.transaction_version(app) for app, _ in txns}
    done = [app for app, version in txns if committed[app] is not None and committed[app] >= version]
    if done and len(done) < len(txns):
        raise CommitConflictError(
            f"{len(done)} of the {len(txns)} application transactions of this write (e.g. {done[0]}) are already "
            "committed by another writer; nothing was committed, rerun to write only the rest"
        )
    return bool(done)


def write(
    df: DataFrame | ArrowMap,
    table: TablePath,
    mode: str,
    dt: DeltaTable | None,
    partition_by: list[str],
    txns: list[tuple[str, int]],
    commit_metadata: dict[str, str] | None,
    compression: str = "zstd",
    replace_where: DateRange | None = None,
) -> Committed:
    """Write ``df`` (already validated by :func:`prepare_write`) and commit once.

    With ``replace_where`` the commit removes the table's partitions in that
    range and adds the new files, atomically; rows outside it are refused.
    """
    if already_committed(dt, txns):
        logger.info("write to %s skipped: transaction %s version %s is already committed", table.path, *txns[0])
        return Committed(version=None, skipped=True, files=0, rows=0)
    schema = schemas.as_nullable(df.schema)
    writer = delta_files.make_file_writer(table.path, schema.json(), partition_by, compression)
    try:
        described = map_in_arrow(df, writer, delta_files.METADATA_DDL).collect()  # small: one row per written file
    except Exception:
        _log_orphans(table, "the Spark job failed")
        raise
    now_ms = int(time.time() * 1000)
    actions = [
        AddAction(
            path=row["path"],
            size=row["size"],
            partition_values=json.loads(row["partition_values"]),
            modification_time=now_ms,
            data_change=True,
            stats=row["stats"],
        )
        for row in described
    ]
    rows = sum(r["num_records"] for r in described)
    if replace_where is not None and _outside(described, replace_where):
        _log_orphans(table, "rows fell outside the range to replace")
        raise SchemaError(
            f"rows to replace {replace_where.column} in [{replace_where.low}, {replace_where.high}) of {table.path} "
            f"hold {replace_where.column} values outside it: {_outside(described, replace_where)[:5]}"
        )
    # Other writers may have committed while the job ran: decide on the newest
    # snapshot, so an overwrite replaces everything and a retry racing with
    # its twin still commits once.
    if dt is not None:
        dt.update_incremental()
        if already_committed(dt, txns):
            _log_orphans(table, f"transaction {txns[0][0]} version {txns[0][1]} was committed by another writer meanwhile")
            return Committed(version=None, skipped=True, files=0, rows=0)
        if (mode == "append" or replace_where is not None) and schemas.schema_differences(table_spark_schema(dt), schema):
            _log_orphans(table, "the table schema changed meanwhile")
            raise CommitConflictError(
                f"the schema of {table.path} changed while this append ran; nothing was committed"
            )
    try:
        version = _commit(table, dt, mode, actions, schema, partition_by, txns, commit_metadata, replace_where)
    except CommitConflictError:
        _log_orphans(table, "the commit conflicted")
        if already_committed(open_table(table), txns):
            return Committed(version=None, skipped=True, files=0, rows=0)
        raise
    return Committed(version=version, skipped=False, files=len(actions), rows=rows)


def _log_orphans(table: TablePath, reason: str) -> None:
    logger.warning(
        "nothing committed to %s (%s): the table is unchanged; data files this write left under %s "
        "are orphans that no version references (VACUUM removes them)",
        table.path,
        reason,
        table.path,
    )


def _commit(
    table: TablePath,
    dt: DeltaTable | None,
    mode: str,
    actions: list[AddAction],
    schema: StructType,
    partition_by: list[str],
    txns: list[tuple[str, int]],
    commit_metadata: dict[str, str] | None,
    replace_where: DateRange | None = None,
) -> int:
    """One Delta commit of ``actions``; returns its version."""
    # The write id finds our commit's version even if other writers commit
    # right after us (delta-rs does not return it).
    write_id = str(uuid.uuid4())
    properties = CommitProperties(
        custom_metadata={**(commit_metadata or {}), "segaeWriteId": write_id},
        app_transactions=[Transaction(app, int(version)) for app, version in txns] or None,
    )
    delta_schema = DeltaSchema.from_json(schema.json())
    try:
        if dt is None:
            create_table_with_add_actions(
                table.path, delta_schema, actions, mode="error", partition_by=partition_by, commit_properties=properties
            )
        else:
            dt.create_write_transaction(
                actions,
                "overwrite" if mode == "overwrite" or replace_where is not None else "append",
                delta_schema,
                partition_by,
                partition_filters=_partition_filters(replace_where),
                commit_properties=properties,
            )
    except CommitFailedError as exc:
        raise CommitConflictError(
            f"commit to {table.path} conflicted with a concurrent writer and was not applied: {exc}"
        ) from exc
    except DeltaProtocolError as exc:
        raise SegaeError(f"cannot write to Delta table {table.path}: {exc}") from exc
    except DeltaError as exc:
        if dt is None and "already exists" in str(exc):
            raise CommitConflictError(
                f"another writer created a Delta table at {table.path} while this write ran; nothing was committed"
            ) from exc
        raise
    return _find_commit_version(table, write_id)


def _partition_filters(replace_where: DateRange | None) -> list[tuple[str, str, str]] | None:
    if replace_where is None:
        return None
    column = replace_where.column
    return [(column, ">=", replace_where.low.isoformat()), (column, "<", replace_where.high.isoformat())]


def _find_commit_version(table: TablePath, write_id: str) -> int:
    latest = DeltaTable(table.path)
    for entry in latest.history(limit=100):
        if entry.get("segaeWriteId") == write_id:
            return int(entry["version"])
    return latest.version()  # unreachable unless 100 commits landed meanwhile


def vacuum(table: TablePath, retention_hours: int | None, dry_run: bool, enforce_retention: bool) -> list[str]:
    """Delete (or with ``dry_run`` list) the files under the table no current version needs.

    A "full" vacuum: besides files removed by overwrites, it takes the orphans a
    killed or conflicted write left behind, which the log never mentions. Only
    files older than the retention go, because younger ones may belong to a
    write still running; ``enforce_retention=False`` lets the retention go below
    the table's ``delta.deletedFileRetentionDuration`` (default 7 days).
    """
    dt = open_table(table)
    if dt is None:
        raise TableNotFoundError(f"{table.path} is not a Delta table (no _delta_log); there is nothing to vacuum")
    try:
        return dt.vacuum(retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=enforce_retention, full=True)
    except DeltaError as exc:
        if "retention" in str(exc).lower():
            raise ConfigError(
                f"cannot vacuum {table.path} with a retention of {retention_hours} hours: {exc}. Files younger than the "
                "retention may belong to a write still running; go below the table's retention only when no job writes to it"
            ) from exc
        raise SegaeError(f"cannot vacuum Delta table {table.path}: {exc}") from exc


def _check_writable(dt: DeltaTable, table: TablePath) -> None:
    protocol = dt.protocol()
    blocked = set(protocol.writer_features or []) & _UNWRITABLE_WRITER_FEATURES
    configuration = dt.metadata().configuration
    if (configuration.get("delta.columnMapping.mode") or "none") != "none":
        blocked.add("columnMapping")
    if any(key.startswith("delta.constraints.") for key in configuration):
        blocked.add("checkConstraints")
    for field in json.loads(dt.schema().to_json())["fields"]:
        for key in field.get("metadata", {}):
            if key.startswith(_FIELD_METADATA_WE_CANNOT_HONOUR):
                blocked.add(f"{key} on column {field['name']!r}")
    if blocked:
        raise SegaeError(
            f"cannot write to Delta table {table.path} without delta-spark: it uses {', '.join(sorted(blocked))}; "
            "write from a Spark session with delta-spark configured"
        )


def row_count(table: TablePath, version: int | None = None) -> int | None:
    """Rows in the snapshot from the log's statistics, or None when a file lacks them."""
    dt = open_table(table, version)
    if dt is None:
        raise TableNotFoundError(f"{table.path} is not a Delta table (no _delta_log)")
    actions = pa.table(dt.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return 0
    if "num_records" not in actions.column_names or actions.column("num_records").null_count:
        return None
    return int(pc.sum(actions.column("num_records")).as_py())
