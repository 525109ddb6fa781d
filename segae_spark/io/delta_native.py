"""Delta tables through delta-spark, when the session has it (e.g. Databricks).

delta-spark already does what :mod:`delta_rs` rebuilds: atomic commits,
idempotent writes via ``txnAppId``/``txnVersion``, every reader feature. We
only translate arguments and read back the committed version and metrics from
the table history.
"""

from __future__ import annotations

import json

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession

from segae_spark.io.delta_rs import Committed, DateRange

_SPARK_MODES = {"append": "append", "overwrite": "overwrite", "error": "errorifexists"}


def read(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", int(version))
    return reader.load(path)


def write(
    df: DataFrame,
    path: str,
    mode: str,
    partition_by: list[str] | None,
    txn: tuple[str, int] | None,
    commit_metadata: dict[str, str] | None,
    replace_where: DateRange | None = None,
) -> Committed:
    spark = df.sparkSession
    before = _last_commit(spark, path)
    writer = df.write.format("delta").mode(_SPARK_MODES[mode])
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if txn is not None:
        writer = writer.option("txnAppId", txn[0]).option("txnVersion", int(txn[1]))
    if replace_where is not None:
        column = "`" + replace_where.column.replace("`", "``") + "`"
        condition = f"{column} >= '{replace_where.low.isoformat()}' AND {column} < '{replace_where.high.isoformat()}'"
        writer = writer.option("replaceWhere", condition)
    if commit_metadata:
        writer = writer.option("userMetadata", json.dumps(commit_metadata, sort_keys=True))
    writer.save(path)
    after = _last_commit(spark, path)
    if after is None or (before is not None and after["version"] == before["version"]):
        # delta-spark skips a txn it has already seen without committing.
        return Committed(version=None, skipped=True, files=0, rows=0)
    metrics = after.get("operationMetrics") or {}
    return Committed(
        version=int(after["version"]),
        skipped=False,
        files=int(metrics.get("numFiles", 0)),
        rows=int(metrics.get("numOutputRows", 0)),
    )


def _last_commit(spark: SparkSession, path: str) -> dict | None:
    """The newest history entry, or None when ``path`` is not a Delta table yet."""
    quoted = path.replace("`", "``")
    try:
        rows = spark.sql(f"DESCRIBE HISTORY delta.`{quoted}` LIMIT 1").collect()  # small: one history row
    except AnalysisException:
        return None
    return rows[0].asDict(recursive=True) if rows else None
