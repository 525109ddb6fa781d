"""Scoring into Delta: date-range backfills (exactly once), replace-where, since-last."""

import datetime as dt

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from segae_spark.batch_scoring import plan_chunks, score_table
from segae_spark.errors import CommitConflictError, ConfigError, SchemaError, SegaeError
from segae_spark.io import DateRange, read_table, write_table

D = dt.date


def test_chunks_follow_the_calendar_and_clip_to_the_range():
    assert plan_chunks(D(2024, 1, 30), D(2024, 3, 2), "month") == [
        (D(2024, 1, 30), D(2024, 2, 1)),
        (D(2024, 2, 1), D(2024, 3, 1)),
        (D(2024, 3, 1), D(2024, 3, 3)),
    ]
    # 2024-01-03 is a Wednesday: the first week chunk ends on Monday the 8th.
    assert plan_chunks(D(2024, 1, 3), D(2024, 1, 15), "week") == [
        (D(2024, 1, 3), D(2024, 1, 8)),
        (D(2024, 1, 8), D(2024, 1, 15)),
        (D(2024, 1, 15), D(2024, 1, 16)),
    ]
    assert plan_chunks(D(2023, 12, 31), D(2024, 1, 1), "year") == [(D(2023, 12, 31), D(2024, 1, 1)), (D(2024, 1, 1), D(2024, 1, 2))]
    assert len(plan_chunks(D(2024, 2, 27), D(2024, 3, 1), "day")) == 4  # leap day included
    assert plan_chunks(D(2024, 1, 1), D(2024, 12, 31), None) == [(D(2024, 1, 1), D(2025, 1, 1))]
    with pytest.raises(ConfigError, match="before it starts"):
        plan_chunks(D(2024, 2, 1), D(2024, 1, 1), "day")
    with pytest.raises(ConfigError, match="chunk must be one of"):
        plan_chunks(D(2024, 1, 1), D(2024, 1, 2), "fortnight")


@pytest.fixture(scope="module")
def source(transactions, tmp_path_factory):
    """The shared transactions as a Delta table partitioned by event_date."""
    path = str(tmp_path_factory.mktemp("batch") / "transactions")
    write_table(transactions, path, partition_by=["event_date"])
    return path


def _ids(spark, path):
    return read_table(spark, path).select("transaction_id", "event_date", "model_id", "threshold")


def _expected(spark, source, low, high):
    return read_table(spark, source, date_range=DateRange("event_date", low, high)).count()


def test_backfill_writes_each_row_once_across_reruns_and_other_chunkings(spark, fitted_model, source, tmp_path):
    out = str(tmp_path / "scored")
    first = score_table(fitted_model, spark, source, out, start="2024-01-01", end="2024-01-10", chunk="week")
    assert [c.skipped for c in first.chunks] == [False, False]
    assert first.rows == _expected(spark, source, D(2024, 1, 1), D(2024, 1, 11))
    assert DeltaTable(out).metadata().partition_columns == ["event_date"]
    commit = DeltaTable(out).history(1)[0]
    assert commit["segae_spark.model_id"] == fitted_model.model_id
    assert commit["segae_spark.input_version"] == "0"
    assert commit["segae_spark.chunk"] == "2024-01-08..2024-01-11"

    again = score_table(fitted_model, spark, source, out, start="2024-01-01", end="2024-01-10", chunk="week")
    assert again.rows == 0 and all(c.skipped for c in again.chunks)

    # A wider range in other chunks: the clipped week (8th-10th) is finished, nothing repeated.
    wider = score_table(fitted_model, spark, source, out, start="2024-01-05", end="2024-01-16", chunk="month")
    assert wider.rows == _expected(spark, source, D(2024, 1, 11), D(2024, 1, 17))
    scored = _ids(spark, out)
    assert scored.count() == scored.select("transaction_id").distinct().count() == _expected(spark, source, D(2024, 1, 1), D(2024, 1, 17))


def test_replace_where_rescores_a_range_in_place(spark, fitted_model, source, tmp_path):
    out = str(tmp_path / "scored")
    score_table(fitted_model, spark, source, out, start="2024-01-01", end="2024-01-14", chunk="week")
    before = _ids(spark, out).groupBy("event_date").agg(F.sum("threshold").alias("t")).collect()  # small: 14 rows
    other = fitted_model.copy().setThresholdRatio(fitted_model.getOrDefault("thresholdRatio") * 2)
    run = score_table(other, spark, source, out, start="2024-01-08", end="2024-01-14", chunk="week", replace=True)
    assert run.rows == _expected(spark, source, D(2024, 1, 8), D(2024, 1, 15))
    after = {r["event_date"]: r["t"] for r in _ids(spark, out).groupBy("event_date").agg(F.sum("threshold").alias("t")).collect()}  # small: 14 rows
    for row in before:
        doubled = row["event_date"] >= D(2024, 1, 8)
        assert after[row["event_date"]] == pytest.approx(row["t"] * (2 if doubled else 1))
    assert _ids(spark, out).count() == _expected(spark, source, D(2024, 1, 1), D(2024, 1, 15))
    rerun = score_table(other, spark, source, out, start="2024-01-08", end="2024-01-14", chunk="week", replace=True)
    assert all(c.skipped for c in rerun.chunks)  # same input version: already replaced


def test_replace_where_needs_a_date_partitioned_output(spark, fitted_model, source, tmp_path):
    out = str(tmp_path / "scored")
    score_table(fitted_model, spark, source, out, partition_by=None)
    with pytest.raises(SchemaError, match="partitioned by 'event_date'"):
        score_table(fitted_model, spark, source, out, start="2024-01-01", end="2024-01-02", replace=True)


def test_since_last_scores_only_appended_rows(spark, fitted_model, transactions, tmp_path):
    source, out = str(tmp_path / "tx"), str(tmp_path / "scored")
    cut = F.col("event_date") < "2024-02-01"
    write_table(transactions.filter(cut), source, partition_by=["event_date"])
    first = score_table(fitted_model, spark, source, out, since_last=True)
    assert first.rows == transactions.filter(cut).count()
    write_table(transactions.filter(~cut), source, mode="append")
    second = score_table(fitted_model, spark, source, out, since_last=True)
    assert second.rows == transactions.filter(~cut).count()
    assert DeltaTable(out).history(1)[0]["segae_spark.input_version"] == "1"
    third = score_table(fitted_model, spark, source, out, since_last=True)
    assert third.rows == 0 and third.chunks[0].skipped
    scored = _ids(spark, out)
    assert scored.count() == scored.select("transaction_id").distinct().count() == transactions.count()

    # An output filled some other way needs the starting version; a rewritten input is refused.
    other = str(tmp_path / "other")
    score_table(fitted_model, spark, source, other, start="2024-01-01", end="2024-01-31")
    with pytest.raises(ConfigError, match="since_version"):
        score_table(fitted_model, spark, source, other, since_last=True)
    assert score_table(fitted_model, spark, source, other, since_version=0).rows == transactions.filter(~cut).count()
    write_table(transactions.limit(10), source, mode="overwrite")
    with pytest.raises(SegaeError, match="removed or rewrote"):
        score_table(fitted_model, spark, source, out, since_last=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"start": "2024-01-01"}, "both from and to"),
        ({"start": "2024-01-01", "end": "2024-01-02", "mode": "overwrite"}, "mode 'overwrite' is not available"),
        ({"chunk": "day"}, "give from and to"),
        ({"replace": True}, "give from and to"),
        ({"since_last": True, "start": "2024-01-01", "end": "2024-01-02"}, "cannot be combined"),
        ({"start": "2024-01-01", "end": "Jan 2"}, "YYYY-MM-DD"),
        ({"since_version": -1}, "non-negative"),
    ],
)
def test_bad_requests_fail_before_any_work(spark, fitted_model, source, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        score_table(fitted_model, spark, source, str(tmp_path / "never"), **kwargs)
    assert not (tmp_path / "never").exists()


def test_date_range_reads_prune_files_and_compare_in_the_column_type(spark, transactions, source, tmp_path):
    rng = DateRange("event_date", D(2024, 1, 5), D(2024, 1, 8))
    pruned = read_table(spark, source, date_range=rng)
    assert len(pruned.inputFiles()) < len(read_table(spark, source).inputFiles())
    expected = transactions.filter((F.col("event_date") >= "2024-01-05") & (F.col("event_date") < "2024-01-08")).count()
    assert pruned.count() == expected
    as_text = str(tmp_path / "text")
    write_table(transactions.withColumn("event_date", F.col("event_date").cast("string")), as_text)
    assert read_table(spark, as_text, date_range=rng).count() == expected
    as_time = str(tmp_path / "time")
    write_table(transactions.withColumn("event_date", F.col("event_date").cast("timestamp")), as_time)
    assert read_table(spark, as_time, date_range=rng).count() == expected
    with pytest.raises(SchemaError, match="expected date, timestamp"):
        read_table(spark, source, date_range=DateRange("amount", D(2024, 1, 5), D(2024, 1, 8)))


def test_replace_where_refuses_rows_outside_the_range(spark, transactions, source, tmp_path):
    out = str(tmp_path / "copy")
    write_table(transactions, out, partition_by=["event_date"])
    with pytest.raises(SchemaError, match="outside it"):
        write_table(transactions, out, mode="overwrite", replace_where=DateRange("event_date", D(2024, 1, 1), D(2024, 1, 2)))
    with pytest.raises(ConfigError, match="mode='overwrite'"):
        write_table(transactions, out, mode="append", replace_where=DateRange("event_date", D(2024, 1, 1), D(2024, 1, 2)))
    assert DeltaTable(out).version() == 0


def test_a_write_holding_some_committed_transactions_is_refused(spark, transactions, tmp_path):
    out = str(tmp_path / "t")
    write_table(transactions.limit(5), out, txn=[("day-1", 0), ("day-2", 0)])
    assert write_table(transactions.limit(5), out, mode="append", txn=[("day-1", 0), ("day-2", 0)]).skipped
    with pytest.raises(CommitConflictError, match="1 of the 2"):
        write_table(transactions.limit(5), out, mode="append", txn=[("day-2", 0), ("day-3", 0)])
    assert DeltaTable(out).version() == 0
