"""Table I/O: Delta round trips through delta-rs, atomic and idempotent writes, format detection."""

from __future__ import annotations

import datetime as dt
import glob
import os
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, Schema, write_deltalake
from deltalake.transaction import AddAction, create_table_with_add_actions
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DateType,
    DecimalType,
    LongType,
    ShortType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from segae_spark.errors import (
    ConfigError,
    SchemaError,
    SegaeError,
    TableExistsError,
    TableNotFoundError,
)
from segae_spark.io import WriteResult, delta_rs, read_table, table_row_count, table_version, vacuum_table, write_table
from segae_spark.io.arrow_map import ArrowMap, map_in_arrow

UTC = dt.timezone.utc
SCHEMA = StructType(
    [
        StructField("id", LongType()),
        StructField("day", DateType()),
        StructField("ts", TimestampType()),
        StructField("amount", DecimalType(12, 2)),
        StructField("small", ShortType()),
        StructField("name", StringType()),
    ]
)


def make_rows(start: int, count: int) -> list[tuple]:
    return [
        (
            i,
            dt.date(2024, 1, 1 + i % 3),
            dt.datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC) + dt.timedelta(seconds=i, microseconds=123456),
            Decimal(f"{i}.25"),
            i - 5,
            None if i % 2 else f"name-{i}",
        )
        for i in range(start, start + count)
    ]


def epoch_micros(t: dt.datetime) -> int:
    return (t - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(microseconds=1)


def expected(rows: list[tuple]) -> list[tuple]:
    """Rows as comparable tuples: timestamps as epoch microseconds, whatever the local time zone."""
    return sorted((r[0], r[1], epoch_micros(r[2]), r[3], r[4], r[5]) for r in rows)


def spark_rows(df) -> list[tuple]:
    picked = df.select("id", "day", F.unix_micros("ts"), "amount", "small", "name")
    return sorted(tuple(r) for r in picked.collect())  # small: test data


def delta_rs_rows(path: str) -> list[tuple]:
    frame = DeltaTable(path).to_pandas()
    return sorted(
        (int(r.id), r.day, pd.Timestamp(r.ts).value // 1000, r.amount, int(r.small), r.name)
        for r in frame.itertuples()
    )


@pytest.fixture()
def frame(spark):
    def build(start: int = 0, count: int = 12, partitions: int = 2):
        # coalesce, not repartition: no shuffle, and few tasks keep each write fast
        return spark.createDataFrame(make_rows(start, count), SCHEMA).coalesce(partitions)

    return build


def test_round_trip_unpartitioned(spark, frame, tmp_path):
    path = str(tmp_path / "t")
    result = write_table(frame(), path)

    assert result == WriteResult(path=path, format="delta", version=0, skipped=False, files=2, rows=12)
    back = read_table(spark, path)
    assert back.schema == SCHEMA
    assert spark_rows(back) == expected(make_rows(0, 12))
    assert delta_rs_rows(path) == expected(make_rows(0, 12))
    types = DeltaTable(path).to_pandas().dtypes
    # pandas < 2 (Spark 3.5 runtimes) has nanosecond timestamps only
    ts_unit = "us" if int(pd.__version__.split(".")[0]) >= 2 else "ns"
    assert str(types["small"]) == "int16" and str(types["ts"]) == f"datetime64[{ts_unit}, UTC]"
    stats = pa.table(DeltaTable(path).get_add_actions(flatten=True)).to_pydict()
    assert sum(stats["num_records"]) == 12 and sum(stats["null_count.name"]) == 6
    assert (min(stats["min.id"]), max(stats["max.id"])) == (0, 11)
    # Delta keeps timestamp statistics in milliseconds: the lower bound rounds down, the upper bound up
    assert min(stats["min.ts"]) == dt.datetime(2024, 1, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert max(stats["max.ts"]) == dt.datetime(2024, 1, 1, 12, 0, 11, 124000, tzinfo=UTC)


def test_round_trip_partitioned_by_date(spark, frame, tmp_path):
    path = str(tmp_path / "t")
    result = write_table(frame(), path, partition_by=["day"])

    assert result.version == 0 and result.rows == 12
    assert sorted(os.listdir(path)) == ["_delta_log", "day=2024-01-01", "day=2024-01-02", "day=2024-01-03"]
    a_file = glob.glob(f"{path}/day=2024-01-01/part-*.parquet")[0]
    assert "day" not in pq.read_schema(a_file).names  # the Delta protocol keeps partition values in the log
    back = read_table(spark, path, format="delta")
    assert back.schema == SCHEMA  # column order and types of the table, partition column included
    assert spark_rows(back) == expected(make_rows(0, 12))
    assert delta_rs_rows(path) == expected(make_rows(0, 12))
    assert DeltaTable(path).metadata().partition_columns == ["day"]


def test_partition_values_that_need_escaping_round_trip(spark, tmp_path):
    path = str(tmp_path / "t")
    df = spark.createDataFrame(
        [(1, "a b/c=d%e[1]", dt.datetime(2024, 5, 1, 8, 30, 0, 500000, tzinfo=UTC)), (2, None, None)],
        "id long, city string, at timestamp",
    )
    write_table(df, path, partition_by=["city", "at"])

    back = read_table(spark, path).select("id", "city", F.unix_micros("at")).orderBy("id")
    assert [tuple(r) for r in back.collect()] == [(1, "a b/c=d%e[1]", 1714552200500000), (2, None, None)]  # small
    assert sorted(DeltaTable(path).to_pandas()["city"].fillna("<null>")) == ["<null>", "a b/c=d%e[1]"]


def test_reads_tables_written_by_other_engines(spark, tmp_path):
    path = str(tmp_path / "foreign")
    data = pa.table({"v": [1.5, 2.5, 3.5], "city": ["a b/c", None, "x%y"], "day": [dt.date(2024, 1, 1)] * 3})
    write_deltalake(path, data, partition_by=["city", "day"])

    back = read_table(spark, path)

    assert back.schema.simpleString() == "struct<v:double,city:string,day:date>"
    assert sorted(tuple(r) for r in back.collect()) == [  # small: 3 rows
        (1.5, "a b/c", dt.date(2024, 1, 1)),
        (2.5, None, dt.date(2024, 1, 1)),
        (3.5, "x%y", dt.date(2024, 1, 1)),
    ]


def test_reads_partitions_whose_files_share_a_name(spark, tmp_path):
    root = tmp_path / "t"
    actions = []
    for k in (1, 2):
        (root / f"k={k}").mkdir(parents=True)
        pq.write_table(pa.table({"v": [k * 10]}), root / f"k={k}/data.parquet")
        size = (root / f"k={k}/data.parquet").stat().st_size
        actions.append(AddAction(f"k={k}/data.parquet", size, {"k": str(k)}, 0, True, '{"numRecords":1}'))
    schema = Schema.from_arrow(pa.schema([("v", pa.int64()), ("k", pa.int32())]))
    create_table_with_add_actions(str(root), schema, actions, partition_by=["k"])

    back = read_table(spark, str(root))

    assert sorted(tuple(r) for r in back.collect()) == [(10, 1), (20, 2)]  # small: 2 rows


def test_refuses_tables_it_cannot_read_correctly(spark, tmp_path):
    path = str(tmp_path / "dv")
    write_deltalake(path, pa.table({"a": [1]}), configuration={"delta.enableDeletionVectors": "true"})

    with pytest.raises(SegaeError, match="deletion vectors"):
        read_table(spark, path)


def test_append_adds_rows_and_bumps_version_by_one(spark, frame, tmp_path):
    path = str(tmp_path / "t")
    write_table(frame(0, 12), path, partition_by=["day"])

    reordered = frame(100, 6, partitions=1).select("name", "small", "amount", "ts", "day", "id")
    result = write_table(reordered, path, mode="append")  # columns are matched by name

    assert result.version == 1 and result.rows == 6
    assert table_version(path) == 1
    assert spark_rows(read_table(spark, path)) == expected(make_rows(0, 12) + make_rows(100, 6))
    assert delta_rs_rows(path) == expected(make_rows(0, 12) + make_rows(100, 6))
    assert table_row_count(spark, path) == 18


def test_an_arrow_map_writes_like_its_dataframe_in_one_python_pass(spark, frame, tmp_path):
    def _shift_ids(batches):  # nested: pickled by value, as workers cannot import test modules
        for batch in batches:
            ids = pc.add(batch.column("id"), 1000)
            yield batch.set_column(batch.schema.get_field_index("id"), batch.schema.field("id"), ids)

    shifted = [(i + 1000, *rest) for i, *rest in make_rows(0, 12)]
    mapped = ArrowMap(frame(0, 12), _shift_ids, SCHEMA)
    result = write_table(mapped, str(tmp_path / "mapped"), partition_by=["day"])
    write_table(mapped.to_dataframe(), str(tmp_path / "plain"), partition_by=["day"])

    assert result.version == 0 and result.rows == 12
    assert spark_rows(read_table(spark, str(tmp_path / "mapped"))) == expected(shifted)
    assert delta_rs_rows(str(tmp_path / "mapped")) == delta_rs_rows(str(tmp_path / "plain"))
    # appending reorders the columns to the table's order inside the same pass
    reordered = mapped.select("name", "small", "amount", "ts", "day", "id")
    assert write_table(reordered, str(tmp_path / "mapped"), mode="append").rows == 12
    assert spark_rows(read_table(spark, str(tmp_path / "mapped"))) == expected(shifted + shifted)
    with pytest.raises(SchemaError, match="no column"):
        mapped.select("id", "nope")
    # the map and the writer run as one Python step: the rows cross into Python once
    chained = map_in_arrow(mapped, lambda batches: batches, SCHEMA)
    assert chained._jdf.queryExecution().optimizedPlan().toString().count("MapInArrow") == 1


def test_overwrite_replaces_rows(spark, frame, tmp_path):
    path = str(tmp_path / "t")
    write_table(frame(0, 12), path, partition_by=["day"])

    result = write_table(frame(50, 5), path, mode="overwrite")

    assert result.version == 1
    assert spark_rows(read_table(spark, path)) == expected(make_rows(50, 5))
    assert delta_rs_rows(path) == expected(make_rows(50, 5))


def test_mode_error_on_existing_table_raises(frame, tmp_path):
    path = str(tmp_path / "t")
    write_table(frame(0, 3), path)

    with pytest.raises(TableExistsError, match="already exists"):
        write_table(frame(0, 3), path)
    assert table_version(path) == 0


def test_append_with_another_schema_raises_before_writing(frame, tmp_path):
    path = str(tmp_path / "t")
    write_table(frame(0, 6), path, partition_by=["day"])
    files_before = sorted(glob.glob(f"{path}/**/*.parquet", recursive=True))
    changed = frame(10, 3).withColumn("small", F.col("small").cast("int")).drop("name").withColumn("extra", F.lit(1))

    with pytest.raises(SchemaError) as error:
        write_table(changed, path, mode="append")

    message = str(error.value)
    assert "'small' is int, table has smallint" in message
    assert "missing column 'name'" in message and "extra column 'extra'" in message
    assert table_version(path) == 0
    assert sorted(glob.glob(f"{path}/**/*.parquet", recursive=True)) == files_before


def test_partition_columns_are_checked(frame, tmp_path):
    path = str(tmp_path / "t")
    with pytest.raises(SchemaError, match="'nope' is not in the DataFrame"):
        write_table(frame(0, 3), path, partition_by=["nope"])
    write_table(frame(0, 3), path, partition_by=["day"])
    with pytest.raises(SchemaError, match=r"partition_by \['name'\] differs"):
        write_table(frame(0, 3), path, mode="append", partition_by=["name"])


def test_same_txn_twice_is_written_once(spark, frame, tmp_path):
    path = str(tmp_path / "t")
    write_table(frame(0, 6), path)

    first = write_table(frame(10, 4), path, mode="append", txn=("nightly-score", 7))
    retry = write_table(frame(10, 4), path, mode="append", txn=("nightly-score", 7))
    older = write_table(frame(10, 4), path, mode="append", txn=("nightly-score", 6))

    assert (first.skipped, first.version) == (False, 1)
    assert retry.skipped and retry.version is None and retry.files == 0
    assert older.skipped
    assert DeltaTable(path).transaction_version("nightly-score") == 7
    assert table_version(path) == 1
    assert read_table(spark, path).count() == 10


def _rival_commits_first(monkeypatch, rival) -> None:
    """Run ``rival()`` (another writer's commit) just before our next commit, after our last look at the log."""
    real = delta_rs._commit

    def commit_after_the_rival(*args, **kwargs):
        monkeypatch.setattr(delta_rs, "_commit", real)
        rival()
        return real(*args, **kwargs)

    monkeypatch.setattr(delta_rs, "_commit", commit_after_the_rival)


def test_an_append_that_loses_the_commit_race_to_another_append_still_commits(spark, frame, tmp_path, monkeypatch):
    path = str(tmp_path / "t")
    write_table(frame(0, 6), path)
    _rival_commits_first(monkeypatch, lambda: write_table(frame(100, 5), path, mode="append", txn=("day-2", 0)))

    ours = write_table(frame(10, 4), path, mode="append", txn=("day-1", 0))

    assert (ours.skipped, ours.version) == (False, 2)
    assert read_table(spark, path).count() == 6 + 5 + 4


def test_a_retry_racing_its_twin_commits_once(spark, frame, tmp_path, monkeypatch):
    path = str(tmp_path / "t")
    write_table(frame(0, 6), path)
    _rival_commits_first(monkeypatch, lambda: write_table(frame(10, 4), path, mode="append", txn=("day-1", 0)))

    ours = write_table(frame(10, 4), path, mode="append", txn=("day-1", 0))

    assert ours.skipped and ours.version is None
    assert table_version(path) == 1
    assert read_table(spark, path).count() == 10


def test_failed_job_leaves_table_at_previous_version(spark, frame, tmp_path):
    path = str(tmp_path / "t")
    write_table(frame(0, 6), path)

    @F.udf("long")
    def fail_on_one_row(value):
        if value == 13:
            raise ValueError("bad row")
        return value

    failing = frame(10, 8).withColumn("id", fail_on_one_row("id"))
    with pytest.raises(Exception, match="bad row"):
        write_table(failing, path, mode="append")

    assert table_version(path) == 0
    assert read_table(spark, path).count() == 6
    assert len(DeltaTable(path).to_pandas()) == 6


def test_vacuum_removes_what_a_failed_write_left_and_nothing_else(spark, frame, tmp_path):
    path = str(tmp_path / "t")
    write_table(frame(0, 6), path)
    committed = set(DeltaTable(path).file_uris())
    orphan = os.path.join(path, "part-of-a-killed-job.parquet")
    pq.write_table(pa.table({"id": [1]}), orphan)

    assert vacuum_table(path, dry_run=True) == []  # younger than the table's 7-day retention
    with pytest.raises(ConfigError, match="retention of 0 hours"):
        vacuum_table(path, retention_hours=0)
    assert vacuum_table(path, retention_hours=0, enforce_retention=False, dry_run=True) == ["part-of-a-killed-job.parquet"]
    assert os.path.exists(orphan)
    assert vacuum_table(path, retention_hours=0, enforce_retention=False) == ["part-of-a-killed-job.parquet"]
    assert not os.path.exists(orphan)
    assert set(DeltaTable(path).file_uris()) == committed
    assert read_table(spark, path).count() == 6
    with pytest.raises(TableNotFoundError, match="not a Delta table"):
        vacuum_table(str(tmp_path))
    with pytest.raises(ConfigError, match="retention_hours"):
        vacuum_table(path, retention_hours=-1)


def test_read_older_version(spark, frame, tmp_path):
    path = str(tmp_path / "t")
    write_table(frame(0, 5), path)
    write_table(frame(20, 3), path, mode="append")
    write_table(frame(40, 2), path, mode="overwrite")

    assert spark_rows(read_table(spark, path, version=0)) == expected(make_rows(0, 5))
    assert table_row_count(spark, path, version=1) == 8  # from the log's file statistics, no Spark job
    assert read_table(spark, path).count() == 2
    with pytest.raises(ConfigError, match="version 9"):
        read_table(spark, path, version=9)


def test_commit_metadata_is_recorded(frame, tmp_path):
    path = str(tmp_path / "t")
    write_table(frame(0, 2), path, commit_metadata={"run_id": "r-42"})

    assert DeltaTable(path).history(1)[0]["run_id"] == "r-42"


def test_csv_and_parquet_are_detected(spark, tmp_path):
    pd.DataFrame({"a": [1, 2, 3], "b": ["x", None, "z"]}).to_csv(tmp_path / "one.csv", index=False)
    (tmp_path / "csv_dir").mkdir()
    for i in (1, 2):
        pd.DataFrame({"a": [i], "b": ["x"]}).to_csv(tmp_path / f"csv_dir/part-{i}.csv", index=False)
    df = spark.createDataFrame([(1, "x"), (2, "y")], "a long, b string").coalesce(1)
    result = write_table(df, str(tmp_path / "pq_dir"), format="parquet", partition_by=["b"])
    assert (result.format, result.files, result.version) == ("parquet", 2, None)
    pq.write_table(pq.read_table(glob.glob(str(tmp_path / "pq_dir/b=x/*.parquet"))[0]), tmp_path / "one.parquet")

    csv_file = read_table(spark, str(tmp_path / "one.csv"))
    assert csv_file.schema.simpleString() == "struct<a:int,b:string>" and csv_file.count() == 3
    assert read_table(spark, str(tmp_path / "csv_dir")).count() == 2
    assert sorted(read_table(spark, str(tmp_path / "pq_dir")).columns) == ["a", "b"]
    assert read_table(spark, str(tmp_path / "one.parquet")).count() == 1


def test_missing_path_raises_table_not_found(spark, tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(TableNotFoundError, match="nowhere"):
        read_table(spark, missing)
    with pytest.raises(TableNotFoundError, match="does not exist"):
        read_table(spark, missing, format="delta")


def test_explicit_delta_on_plain_directory_raises(spark, tmp_path):
    (tmp_path / "plain").mkdir()
    pq.write_table(pa.table({"a": [1]}), tmp_path / "plain/part-0.parquet")

    with pytest.raises(TableNotFoundError, match="not a Delta table"):
        read_table(spark, str(tmp_path / "plain"), format="delta")


def test_bad_arguments_raise_config_error(spark, frame, tmp_path):
    path = str(tmp_path / "t")
    with pytest.raises(ConfigError, match="delta, parquet, csv"):
        read_table(spark, path, format="orc")
    with pytest.raises(ConfigError, match="append, overwrite, error"):
        write_table(frame(0, 1), path, mode="upsert")
    with pytest.raises(ConfigError, match="txn"):
        write_table(frame(0, 1), path, format="parquet", txn=("app", 1))
    with pytest.raises(ConfigError, match="txn"):
        write_table(frame(0, 1), path, txn=("app", -1))
    write_table(frame(0, 1), path, format="parquet")
    with pytest.raises(ConfigError, match="only valid for Delta"):
        read_table(spark, path, version=0)
    write_table(frame(0, 1), str(tmp_path / "d"))
    with pytest.raises(ConfigError, match="is a Delta table"):
        write_table(frame(0, 1), str(tmp_path / "d"), format="parquet", mode="overwrite")
    with pytest.raises(ConfigError, match="is a Delta table"):
        read_table(spark, str(tmp_path / "d"), format="parquet")


def test_a_batch_splits_by_partition_value_in_row_order():
    from segae_spark.io.delta_files import _split_by_partition

    def split(days):
        batch = pa.record_batch({"day": pa.array(days, pa.string()), "i": pa.array(range(len(days)), pa.int64())})
        return [(key, rows.column("i").to_pylist()) for key, rows in _split_by_partition(batch, ["day"])]

    assert split(["a"] * 3) == [(("a",), [0, 1, 2])]
    assert split(["a", "a", "b", "b", None]) == [(("a",), [0, 1]), (("b",), [2, 3]), ((None,), [4])]  # runs: slices
    assert split(["a", "b", "a", "b"]) == [(("a",), [0, 2]), (("b",), [1, 3])]  # interleaved: taken
