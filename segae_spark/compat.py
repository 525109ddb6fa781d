"""What differs between the Spark (3.5, 4.0) and pyarrow versions we support, in one place.

Databricks LTS runtimes up to 16.4 and many managed clusters run Spark 3.5;
the wheel uses the runtime's pyspark rather than installing its own. Each
helper below checks for the feature itself (a runtime may backport one) and
otherwise does what the newer API does with what Spark 3.5 / pyarrow 15 have.
On Spark 4 every helper is the plain newer call, so its behaviour is unchanged.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyspark
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

MIN_SPARK = (3, 5)

SPARK_VERSION: tuple[int, int] = tuple(int(p) for p in re.findall(r"\d+", pyspark.__version__)[:2])  # type: ignore[assignment]

if SPARK_VERSION < MIN_SPARK:
    raise ImportError(
        f"segae-spark needs pyspark 3.5 or 4.0; this environment has pyspark {pyspark.__version__}"
    )

_COLUMN_TRY_CAST = hasattr(Column, "try_cast")  # Spark 4.0
_DATAFRAME_TO_ARROW = hasattr(DataFrame, "toArrow")  # Spark 4.0
_BATCH_CAST = hasattr(pa.RecordBatch, "cast")  # pyarrow 16


def try_cast_column(name: str, data_type: str) -> Column:
    """The column called exactly ``name`` cast to ``data_type``, null where a value does not convert.

    Spark 3.5 has SQL's ``try_cast`` (3.2+) but not ``Column.try_cast``.
    """
    quoted = "`" + name.replace("`", "``") + "`"
    if _COLUMN_TRY_CAST:
        return F.col(quoted).try_cast(data_type)
    return F.expr(f"try_cast({quoted} AS {data_type})")


def to_arrow(df: DataFrame) -> pa.Table:
    """``df.toArrow()``: collect ``df`` to the driver as a pyarrow Table (callers bound the rows)."""
    if _DATAFRAME_TO_ARROW:
        return df.toArrow()
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = to_arrow_schema(df.schema)
    batches = df._collect_as_arrow()  # what toArrow and toPandas use on Spark 3.5
    if not batches:
        return schema.empty_table()
    return pa.Table.from_batches(batches).cast(schema)


def arrow_to_dataframe(spark: SparkSession, table: pa.Table) -> DataFrame:
    """``spark.createDataFrame(table)`` for a small pyarrow Table typed like a Spark schema.

    Spark 3.5 does not take a pyarrow Table; its rows go in as Python values
    with the schema the table's Arrow types map to, so no value changes type.
    """
    if SPARK_VERSION >= (4, 0):
        return spark.createDataFrame(table)
    from pyspark.sql.pandas.types import from_arrow_schema

    rows = list(zip(*(column.to_pylist() for column in table.columns))) if table.num_columns else []
    return spark.createDataFrame(rows, from_arrow_schema(table.schema))


def save_params_metadata(instance, path: str, spark: SparkSession, extra: dict | None = None) -> None:
    """``DefaultParamsWriter.saveMetadata``: the stage's params as one line of JSON in ``path/metadata``.

    The line is what Spark's writer builds (Spark 4 takes the session, 3.5
    the SparkContext), written straight through Hadoop's FileSystem instead
    of by a Spark job (:mod:`segae_spark.io.hadoop_files`), so a model
    directory looks the same whichever Spark saved it.
    """
    from pyspark.ml.util import DefaultParamsWriter

    from segae_spark.io.hadoop_files import write_text_part

    context = spark if SPARK_VERSION >= (4, 0) else spark.sparkContext
    write_text_part(spark, f"{path}/metadata", DefaultParamsWriter._get_metadata_to_save(instance, context, extra))


def load_params_metadata(path: str, spark: SparkSession, expected_class: str = "") -> dict:
    """``DefaultParamsReader.loadMetadata``, reading the line without a Spark job."""
    from pyspark.ml.util import DefaultParamsReader

    from segae_spark.io.hadoop_files import read_first_line

    return DefaultParamsReader._parseMetaData(read_first_line(spark, f"{path}/metadata"), expected_class)


def cast_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch.cast(schema)`` (pyarrow 16+): cast each column to the type of its field."""
    if _BATCH_CAST:
        return batch.cast(schema)
    if batch.schema.names != schema.names:
        raise ValueError(f"cannot cast a batch with columns {batch.schema.names} to {schema.names}")
    return pa.RecordBatch.from_arrays([col.cast(field.type) for col, field in zip(batch.columns, schema)], schema=schema)
