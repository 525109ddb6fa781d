"""Executor side of the delta-rs write: a task's Arrow batches become Delta data files.

Each Spark task (one ``mapInArrow`` call) writes its rows straight into the
table directory with pyarrow, one Parquet file per partition-value combination
it sees, and yields one small row describing each file (path, size, partition
values, record count, Delta statistics). The driver collects only those rows
and commits them in one Delta transaction, so the data never passes through
the driver and a failed job commits nothing.

File names carry a fresh uuid4: a retried or speculative attempt of the same
task writes different files, and the files of failed attempts are orphans no
snapshot references (``VACUUM`` removes them later).

The Delta protocol keeps partition columns out of the data files (their values
live in the log and in the Hive-style directory names), and wants statistics
in JSON with dates and timestamps as strings. Both are done here.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import uuid
from decimal import Decimal
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StructType

from segae_spark.compat import cast_batch
from segae_spark.io import paths

# What each task yields per written file; `mapInArrow` needs it as DDL.
METADATA_DDL = "path string, size long, partition_values string, num_records long, stats string"
_METADATA_ARROW = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("partition_values", pa.string()),
        ("num_records", pa.int64()),
        ("stats", pa.string()),
    ]
)

HIVE_DEFAULT_PARTITION = "__HIVE_DEFAULT_PARTITION__"
STATS_NUM_INDEXED_COLS = 32  # Delta's default delta.dataSkippingNumIndexedCols
STRING_STATS_PREFIX = 32  # Delta-Spark truncates string statistics to 32 characters too
# Spark hands us ~10k-row batches; a task buffers up to this many bytes (over all
# its open files) into real row groups, so a task writing into many partitions
# holds at most this much, however many rows it writes.
TASK_BUFFER_BYTES = 64 * 1024 * 1024

# Spark's ExternalCatalogUtils.escapePathName set: what Hive-style directory names escape.
_ESCAPED = set(chr(c) for c in range(0x01, 0x20)) | set("\"#%'*/:=?\\\x7f{[]^")


def make_file_writer(
    root: str, schema_json: str, partition_by: list[str], compression: str = "zstd"
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The function to give ``DataFrame.mapInArrow`` (output schema :data:`METADATA_DDL`).

    Only strings and lists travel to the executors; the Arrow schema is
    rebuilt there from the Spark schema JSON.
    """

    def write_task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        files = _TaskFiles(root, schema_json, list(partition_by), compression)
        try:
            for batch in batches:
                files.write(batch)
            described = files.close()
        except BaseException:
            files.abort()
            raise
        if described:
            yield pa.RecordBatch.from_pylist(described, schema=_METADATA_ARROW)

    return write_task


class _TaskFiles:
    """The open files of one task, keyed by partition-value combination."""

    def __init__(self, root: str, schema_json: str, partition_by: list[str], compression: str):
        table = paths.resolve(root)
        self.fs = table.filesystem()
        self.root = table.fs_path
        self.is_local = table.is_local
        self.schema = to_arrow_schema(StructType.fromJson(json.loads(schema_json)))
        self.partition_by = partition_by
        self.file_schema = pa.schema([f for f in self.schema if f.name not in set(partition_by)])
        self.compression = compression
        self.stats_columns = [
            f.name for f in list(self.file_schema)[:STATS_NUM_INDEXED_COLS] if _is_primitive(f.type)
        ]
        self.dictionary_columns = dictionary_columns(self.file_schema)
        self.open: dict[tuple, _OpenFile] = {}
        self.buffered_bytes = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        # Spark labels timestamps with the session time zone; the files store UTC.
        batch = cast_batch(batch, self.schema)
        for key, rows in _split_by_partition(batch, self.partition_by):
            handle = self.open.get(key)
            if handle is None:
                handle = self.open[key] = self._open_file(key)
            handle.write(rows.select(self.file_schema.names))
            self.buffered_bytes += rows.nbytes
        if self.buffered_bytes >= TASK_BUFFER_BYTES:
            for handle in self.open.values():
                handle.flush()
            self.buffered_bytes = 0

    def _open_file(self, key: tuple) -> _OpenFile:
        values = {name: partition_value_string(v) for name, v in zip(self.partition_by, key)}
        directory = "/".join(f"{escape_path_name(n)}={_directory_value(v)}" for n, v in values.items())
        return _OpenFile(self, directory, values)

    def close(self) -> list[dict[str, Any]]:
        return [handle.close() for handle in self.open.values()]

    def abort(self) -> None:
        for handle in self.open.values():
            handle.abort()


class _OpenFile:
    """One Parquet file being written, with its running Delta statistics."""

    def __init__(self, task: _TaskFiles, directory: str, partition_values: dict[str, str | None]):
        self.task = task
        name = f"part-{uuid.uuid4()}.parquet"
        self.relative_path = f"{directory}/{name}" if directory else name
        self.full_path = f"{task.root}/{self.relative_path}"
        if task.is_local:
            task.fs.create_dir(self.full_path.rsplit("/", 1)[0], recursive=True)
        self.partition_values = partition_values
        self.writer = pq.ParquetWriter(
            self.full_path,
            task.file_schema,
            filesystem=task.fs,
            compression=task.compression,
            use_dictionary=task.dictionary_columns,
        )
        self.buffer: list[pa.RecordBatch] = []
        self.stats = _Stats(task.stats_columns)

    def write(self, batch: pa.RecordBatch) -> None:
        self.stats.update(batch)
        self.buffer.append(batch)

    def flush(self) -> None:
        if self.buffer:
            self.writer.write_table(pa.Table.from_batches(self.buffer, schema=self.task.file_schema))
        self.buffer = []

    def close(self) -> dict[str, Any]:
        self.flush()
        self.writer.close()
        size = self.task.fs.get_file_info(self.full_path).size
        return {
            "path": self.relative_path,
            "size": size,
            "partition_values": json.dumps(self.partition_values),
            "num_records": self.stats.num_records,
            "stats": self.stats.to_json(),
        }

    def abort(self) -> None:
        try:
            self.writer.close()
        except Exception:  # the task is failing already; the file stays an orphan
            pass


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The Parquet column paths to dictionary-encode: every leaf column but floating-point ones.

    Parquet writers try a dictionary first and give up once it outgrows a
    page; for scores, ratios and amounts (nearly all values distinct) that
    try is wasted: 17 ms of a 200,000-row double column's 18 ms write, and
    the file is no smaller. Paths (``top_features.list.element.share``) come
    from the Parquet schema that pyarrow derives for ``schema``.
    """
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink)
    parquet_schema = pq.read_metadata(pa.BufferReader(sink.getvalue())).schema
    columns = [parquet_schema.column(i) for i in range(len(parquet_schema))]
    return [c.path for c in columns if c.physical_type not in ("FLOAT", "DOUBLE")]


def _split_by_partition(batch: pa.RecordBatch, partition_by: list[str]) -> Iterator[tuple[tuple, pa.RecordBatch]]:
    """(partition key, rows) pairs; a vectorised group-by, no per-row Python."""
    if not partition_by:
        yield (), batch
        return
    keys = pa.table([batch.column(n) for n in partition_by], names=partition_by)
    keys = keys.append_column("__row", pa.array(np.arange(batch.num_rows, dtype=np.int64)))
    groups = keys.group_by(partition_by, use_threads=False).aggregate([("__row", "list")])
    values = groups.select(partition_by).to_pylist()  # small: one dict per partition value in the batch
    if len(values) == 1:  # the usual case when the input is partitioned like the output
        yield tuple(values[0][n] for n in partition_by), batch
        return
    rows = groups.column("__row_list").combine_chunks()
    for i, group in enumerate(values):
        indices = rows[i].values.to_numpy()  # in row order (one thread)
        first, count = int(indices[0]), len(indices)
        # A batch read from a partitioned table holds each value's rows in one run: slice, don't copy
        contiguous = int(indices[-1]) - first + 1 == count
        yield tuple(group[n] for n in partition_by), batch.slice(first, count) if contiguous else batch.take(indices)


def partition_value_string(value: Any) -> str | None:
    """A partition value as the Delta log stores it (the protocol's string forms).

    An empty string is null, as in Delta-Spark and Hive.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")
        return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, _dt.date):
        return value.isoformat()
    return str(value)


def escape_path_name(text: str) -> str:
    """Hive-style escaping of a directory name component (as Spark does it)."""
    return "".join(f"%{ord(c):02X}" if c in _ESCAPED else c for c in text)


def _directory_value(value: str | None) -> str:
    return HIVE_DEFAULT_PARTITION if value is None else escape_path_name(value)


def _is_primitive(data_type: pa.DataType) -> bool:
    return not (pa.types.is_nested(data_type) or pa.types.is_dictionary(data_type))


def _has_min_max(data_type: pa.DataType) -> bool:
    # Like Delta-Spark: no bounds for booleans and binary, they never prune files.
    return (
        pa.types.is_integer(data_type)
        or pa.types.is_floating(data_type)
        or pa.types.is_decimal(data_type)
        or pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_date(data_type)
        or pa.types.is_timestamp(data_type)
    )


class _Stats:
    """Delta file statistics (numRecords, minValues, maxValues, nullCount) built batch by batch."""

    def __init__(self, columns: list[str]):
        self.columns = columns
        self.num_records = 0
        self.null_count = {name: 0 for name in columns}
        self.types: dict[str, pa.DataType] = {}
        self.min: dict[str, Any] = {}
        self.max: dict[str, Any] = {}
        self.unbounded: set[str] = set()

    def update(self, batch: pa.RecordBatch) -> None:
        self.num_records += batch.num_rows
        for name in self.columns:
            array = batch.column(name)
            self.null_count[name] += array.null_count
            self.types[name] = array.type
            if name in self.unbounded or not _has_min_max(array.type) or array.null_count == len(array):
                continue
            if pa.types.is_floating(array.type) and pc.any(pc.is_nan(array)).as_py():
                # Spark orders NaN above every number but min_max skips it: no
                # bound at all is the only one that never prunes a NaN row away.
                self.unbounded.add(name)
                continue
            bounds = pc.min_max(array).as_py()
            low, high = bounds["min"], bounds["max"]
            self.min[name] = low if name not in self.min else min(self.min[name], low)
            self.max[name] = high if name not in self.max else max(self.max[name], high)

    def to_json(self) -> str:
        min_values, max_values = {}, {}
        for name in set(self.min) - self.unbounded:
            low = _stat_value(self.min[name], self.types[name], upper=False)
            high = _stat_value(self.max[name], self.types[name], upper=True)
            # A column gets bounds only in pairs: a reader needs both to prune.
            if low is not None and high is not None:
                min_values[name], max_values[name] = low, high
        stats = {
            "numRecords": self.num_records,
            "minValues": min_values,
            "maxValues": max_values,
            "nullCount": self.null_count,
        }
        return json.dumps(stats, separators=(",", ":"))


def _stat_value(value: Any, data_type: pa.DataType, upper: bool) -> Any:
    """A bound in Delta's JSON form, or None when it cannot be written safely.

    Bounds may be looser than the data, never tighter: timestamps are cut to
    milliseconds (Delta's stats format) rounding the upper bound up, long
    strings keep a lower-bound prefix but drop the upper bound.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        # JSON numbers are read back as doubles by some readers; 15 digits survive exactly.
        return float(value) if data_type.precision <= 15 else None
    if isinstance(value, str):
        if len(value) <= STRING_STATS_PREFIX:
            return value
        return None if upper else value[:STRING_STATS_PREFIX]
    if isinstance(value, _dt.datetime):
        extra = value.microsecond % 1000
        try:
            if extra:
                value -= _dt.timedelta(microseconds=extra)
                if upper:
                    value += _dt.timedelta(milliseconds=1)
        except OverflowError:
            return None
        if value.tzinfo is None:
            return value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if isinstance(value, _dt.date):
        return value.isoformat()
    return None
