"""Score a table into a Delta table: whole, chunk by chunk over dates, or only what is new.

A backfill over years of transactions runs as a sequence of chunks (a day,
week, month or year of the date column), each scored and written as one
atomic Delta commit that carries one application transaction id per day it
covers, made of the model id, the input table and the day. A rerun after a
crash (or with another range or chunk size) reads which days the output
already holds, scores only the others, so every input row lands exactly once.
With delta-spark, which records one id per commit, the id is the chunk's:
rerun with the same range and chunk size. With ``replace=True`` each chunk
instead replaces the output's rows of its dates (re-scoring with a new model,
or after the input was corrected); its id records the input version, so a
rerun on the same input version skips the chunks already replaced.

``since_last=True`` scores only the rows an append-only Delta input gained
after the input version the previous incremental run recorded in the output.

Every commit records the model id, the input table, its version and the chunk.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import os
import time
from dataclasses import dataclass, field
from functools import reduce

from pyspark.sql import DataFrame, SparkSession

from segae_spark.errors import ConfigError
from segae_spark.io import DateRange, read_table, table_version, write_table
from segae_spark.io.delta_rs import open_table
from segae_spark.io.paths import detect_format, resolve
from segae_spark.progress import logger
from segae_spark.session import has_native_delta

CHUNK_UNITS = ("day", "week", "month", "year")
_APP = "segae-spark"
_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class ChunkResult:
    """One commit of a scoring run (or its skip, when a rerun finds it done)."""

    label: str
    rows: int
    seconds: float
    version: int | None
    skipped: bool


@dataclass
class ScoreRun:
    """What :func:`score_table` did, chunk by chunk."""

    output: str
    model_id: str
    input_version: int | None
    chunks: list[ChunkResult] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.chunks)

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.chunks)

    def render(self) -> str:
        done = [c for c in self.chunks if not c.skipped]
        skipped = len(self.chunks) - len(done)
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        versions = [c.version for c in done if c.version is not None]
        return (
            f"scored {self.rows:,} rows with model {self.model_id} -> {self.output} "
            f"({len(done)} commit(s), {skipped} chunk(s) already committed and skipped; "
            f"{rate:,.0f} rows/s; input version {self.input_version}; "
            f"output version {max(versions) if versions else 'unchanged'})"
        )


def plan_chunks(start: dt.date, end: dt.date, unit: str | None) -> list[tuple[dt.date, dt.date]]:
    """Half-open ``[low, high)`` date ranges covering ``start`` .. ``end`` (both inclusive).

    Chunks follow the calendar (weeks start on Monday); the first and last are
    clipped to the range. ``unit=None`` gives one chunk for the whole range.
    """
    if unit is not None and unit not in CHUNK_UNITS:
        raise ConfigError(f"chunk must be one of {', '.join(CHUNK_UNITS)}, got {unit!r}")
    if end < start:
        raise ConfigError(f"the date range ends ({end}) before it starts ({start})")
    stop = end + dt.timedelta(days=1)
    chunks = []
    low = start
    while low < stop:
        high = stop if unit is None else min(_next_boundary(low, unit), stop)
        chunks.append((low, high))
        low = high
    return chunks


def _next_boundary(day: dt.date, unit: str) -> dt.date:
    if unit == "day":
        return day + dt.timedelta(days=1)
    if unit == "week":
        return day + dt.timedelta(days=7 - day.weekday())
    if unit == "month":
        return day.replace(day=1) + dt.timedelta(days=calendar.monthrange(day.year, day.month)[1])
    return dt.date(day.year + 1, 1, 1)


def parse_date(value, name: str) -> dt.date:
    """A ``YYYY-MM-DD`` string or a date (YAML reads unquoted dates as dates)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{name} must be a date as YYYY-MM-DD, got {value!r}") from None


def check_score_paths(input_path: str, output_path: str) -> None:
    """Refuse, before any Spark work, an input that is no table and an output that is the input.

    The input must exist and look like a table (a Delta directory, Parquet or
    CSV: :func:`~segae_spark.io.paths.detect_format`, which reading would call
    anyway), so a typo fails before the model is loaded. Scoring reads the
    input lazily while it writes: an output equal to the input (or nested in
    it, or around it) would add the scores to the table being read, and an
    overwrite would delete it. A scheme pyarrow cannot resolve (e.g. ``dbfs:``)
    is left to the reader and compared as given.
    """

    def location(path: str) -> str | None:
        try:
            table = resolve(path)
        except ConfigError:
            return None
        return os.path.realpath(table.path) if table.is_local else table.path

    source, target = location(input_path), location(output_path)
    if source is not None:
        detect_format(resolve(input_path))
    source = source or str(input_path).rstrip("/")
    target = target or str(output_path).rstrip("/")
    if source == target:
        raise ConfigError(f"output {output_path} is the input table; write the scores to another path")
    if target.startswith(source + "/"):
        raise ConfigError(f"output {output_path} is inside the input table {input_path}; write the scores elsewhere")
    if source.startswith(target + "/"):
        raise ConfigError(f"input {input_path} is inside the output path {output_path}; write the scores elsewhere")


def score_table(
    model,
    spark: SparkSession,
    input_path: str,
    output_path: str,
    *,
    mode: str | None = None,
    partition_by: list[str] | None = None,
    date_col: str | None = None,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    chunk: str | None = None,
    replace: bool = False,
    since_last: bool = False,
    since_version: int | None = None,
) -> ScoreRun:
    """Score ``input_path`` with ``model`` into the Delta table ``output_path``.

    - no dates: the whole table in one commit (``mode`` "error" by default,
      "append" or "overwrite");
    - ``start`` / ``end`` (inclusive dates of ``date_col``), optionally in
      ``chunk`` units: one commit per chunk, appended exactly once, or with
      ``replace`` replacing the output's rows of each chunk;
    - ``since_last``: the rows added to the Delta input since the last
      incremental run (``since_version`` sets that version by hand, e.g. the
      input version a backfill read).
    """
    ranged = start is not None or end is not None
    _check_request(mode, ranged, start, end, chunk, replace, since_last, since_version)
    check_score_paths(input_path, output_path)
    date_col = date_col or model.getOrDefault(model.dateCol) or None
    input_version = _version_of(input_path)
    run = ScoreRun(output=output_path, model_id=model.model_id, input_version=input_version)
    metadata = {
        "segae_spark.model_id": model.model_id,
        "segae_spark.input": str(input_path),
        "segae_spark.input_version": "" if input_version is None else str(input_version),
    }
    if since_last or since_version is not None:
        _score_new_rows(model, spark, input_path, output_path, run, partition_by, date_col, since_version, metadata)
    elif ranged:
        if not date_col:
            raise ConfigError("a date-range run needs the date column: set date_col (--date-col)")
        chunks = plan_chunks(parse_date(start, "from"), parse_date(end, "to"), chunk)
        if partition_by is None and _version_of(output_path) is None:
            partition_by = [date_col]
        per_day = not replace and not has_native_delta(spark)
        key = (model.model_id, input_path, date_col)
        for index, (low, high) in enumerate(chunks, 1):
            rng = DateRange(date_col, low, high)
            name = f"chunk {index}/{len(chunks)} [{low}, {high})"
            label = f"{low.isoformat()}..{high.isoformat()}"
            if per_day:
                days = _days_to_do(output_path, key, rng)
                if not days:
                    run.chunks.append(ChunkResult(label, 0, 0.0, None, True))
                    logger.info("score %s: every day already committed by an earlier run, skipped", name)
                    continue
                df = _read_days(spark, input_path, input_version, date_col, days)
                txn = [(_app(*key, day, day + _DAY), 0) for day in days]
            else:
                df = read_table(spark, input_path, version=input_version, date_range=rng)
                # A replacement's id carries the input version (a rerun on it skips); one from a
                # versionless input has none, and simply replaces again.
                txn = None if replace and input_version is None else (_app(*key, low, high), input_version + 1 if replace else 0)
            _write(
                model, df, output_path, "overwrite" if replace else "append", partition_by,
                txn, {**metadata, "segae_spark.chunk": label}, rng if replace else None, name, run,
            )  # fmt: skip
    else:
        df = read_table(spark, input_path, version=input_version)
        _write(model, df, output_path, mode or "error", partition_by, None, metadata, None, "whole table", run)
    return run


def _check_request(mode, ranged, start, end, chunk, replace, since_last, since_version) -> None:
    incremental = since_last or since_version is not None
    if ranged and (start is None or end is None):
        raise ConfigError("a date-range run needs both from and to (inclusive dates, YYYY-MM-DD)")
    if incremental and ranged:
        raise ConfigError("since_last scores what the input gained; it cannot be combined with from/to")
    if chunk is not None and not ranged:
        raise ConfigError("chunk splits a date range: give from and to as well")
    if replace and not ranged:
        raise ConfigError("replace_where re-scores a date range: give from and to as well")
    if since_version is not None and (isinstance(since_version, bool) or not isinstance(since_version, int) or since_version < 0):
        raise ConfigError(f"since_version must be a non-negative integer, got {since_version!r}")
    if (ranged or incremental) and mode not in (None, "append"):
        what = "replaces the range's rows with replace_where" if ranged else "appends"
        raise ConfigError(
            f"a {'date-range' if ranged else 'since_last'} run commits chunk by chunk: it appends, or {what}; "
            f"mode {mode!r} is not available for it"
        )


def _score_new_rows(model, spark, input_path, output_path, run, partition_by, date_col, since_version, metadata) -> None:
    if run.input_version is None:
        raise ConfigError(f"since_last needs a Delta input table with versions; {input_path} is not one")
    app = f"{_APP}/since-last/{_table_key(input_path)}"
    output = open_table(resolve(output_path))
    since = since_version if since_version is not None else None if output is None else output.transaction_version(app)
    if since is None and output is not None:
        raise ConfigError(
            f"{output_path} holds no record of an incremental run over {input_path}; give since_version "
            "(the input version up to which it is already scored, e.g. the one your backfill read) to start"
        )
    if since is not None and since >= run.input_version:
        logger.info("score since_last: input version %s is already scored; nothing to do", run.input_version)
        run.chunks.append(ChunkResult(f"versions ..{since}", 0, 0.0, None, True))
        return
    df = read_table(spark, input_path, version=run.input_version, added_since=since)
    if partition_by is None and output is None and date_col and date_col in df.columns:
        partition_by = [date_col]
    label = f"input versions {'start' if since is None else since + 1}..{run.input_version}"
    _write(
        model, df, output_path, "append", partition_by, (app, run.input_version),
        {**metadata, "segae_spark.chunk": label}, None, label, run,
    )  # fmt: skip


def _write(model, df: DataFrame, output_path, mode, partition_by, txn, metadata, replace_where, label, run):
    start = time.perf_counter()
    result = write_table(
        model.arrow_transform(df), output_path, mode=mode, partition_by=partition_by, txn=txn,
        commit_metadata=metadata, replace_where=replace_where,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    rows = result.rows or 0
    if result.skipped:
        logger.info("score %s: already committed by an earlier run, skipped", label)
    else:
        logger.info(
            "score %s: %s rows in %.1fs (%s rows/s), output version %s",
            label, f"{rows:,}", seconds, f"{rows / seconds:,.0f}" if seconds > 0 else "-", result.version,
        )  # fmt: skip
    run.chunks.append(ChunkResult(label, rows, round(seconds, 3), result.version, result.skipped))
    return result


def _version_of(path: str) -> int | None:
    """The Delta version of ``path``, or None for a Parquet/CSV input or a missing table."""
    try:
        return table_version(path)
    except ConfigError:  # a scheme delta-rs cannot open (e.g. dbfs:) read through delta-spark
        return None


def _table_key(path: str) -> str:
    try:
        location = resolve(path).path
    except ConfigError:
        location = str(path)
    return hashlib.sha256(location.encode()).hexdigest()[:12]


def _app(model_id: str, input_path: str, date_col: str, low: dt.date, high: dt.date) -> str:
    """The application id of dates [low, high): the same model, input and dates give the same id."""
    return f"{_APP}/{model_id}/{_table_key(input_path)}/{date_col}/{low.isoformat()}/{high.isoformat()}"


def _days_to_do(output_path: str, key: tuple, rng: DateRange) -> list[dt.date]:
    """The days of ``rng`` the output does not hold yet (by their application ids)."""
    days = [rng.low + dt.timedelta(days=i) for i in range((rng.high - rng.low).days)]
    output = open_table(resolve(output_path))
    if output is None:
        return days
    return [day for day in days if output.transaction_version(_app(*key, day, day + _DAY)) is None]


def _read_days(spark, input_path: str, version: int | None, date_col: str, days: list[dt.date]) -> DataFrame:
    """The input rows of ``days``, read as few contiguous ranges."""
    spans: list[list[dt.date]] = []
    for day in days:
        if spans and spans[-1][1] == day:
            spans[-1][1] = day + _DAY
        else:
            spans.append([day, day + _DAY])
    frames = [read_table(spark, input_path, version=version, date_range=DateRange(date_col, low, high)) for low, high in spans]
    return reduce(DataFrame.unionByName, frames)
