"""A ``mapInArrow`` held back, so a writer can run it in its own Python pass.

Scoring is a per-batch Arrow function, and so is the delta-rs writer (each
task writes its Parquet files from Arrow batches). Chained as two
``mapInArrow`` steps, every row crosses from the JVM to Python twice, and the
scored batches (the widest data of the job) are converted to Spark rows and
back to Arrow in between. An :class:`ArrowMap` keeps the source DataFrame,
the function and its output schema apart until someone consumes them:
:func:`segae_spark.io.write_table` composes the function with its file writer
into one ``mapInArrow`` (one Python pass per row); anything else asks for
:meth:`ArrowMap.to_dataframe`.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterator

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from segae_spark.errors import SchemaError

BatchFunction = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


def _selected(batches: Iterator[pa.RecordBatch], function: BatchFunction, names: tuple[str, ...]) -> Iterator[pa.RecordBatch]:
    for batch in function(batches):
        yield batch.select(list(names))


def _chained(batches: Iterator[pa.RecordBatch], first: BatchFunction, second: BatchFunction) -> Iterator[pa.RecordBatch]:
    return second(first(batches))


class ArrowMap:
    """The rows ``source.mapInArrow(function, schema)`` would give, not yet planned.

    ``function`` must be picklable with cloudpickle (it travels to the
    executors, as any ``mapInArrow`` function does) and yield batches whose
    columns are ``schema``'s, in that order.
    """

    def __init__(self, source: DataFrame, function: BatchFunction, schema: StructType):
        self.source = source
        self.function = function
        self.schema = schema

    @property
    def sparkSession(self) -> SparkSession:  # noqa: N802 - the DataFrame property's name
        return self.source.sparkSession

    def select(self, *names: str) -> "ArrowMap":
        """Keep and order columns by name (what a writer needs to match a table's column order)."""
        missing = [n for n in names if n not in self.schema.names]
        if missing:
            raise SchemaError(f"no column(s) {missing} among {self.schema.names}")
        schema = StructType([self.schema[n] for n in names])
        return ArrowMap(self.source, functools.partial(_selected, function=self.function, names=tuple(names)), schema)

    def then(self, function: BatchFunction, schema: StructType | str) -> DataFrame:
        """One ``mapInArrow`` running this map's function and then ``function`` on its output, in the same task."""
        return self.source.mapInArrow(functools.partial(_chained, first=self.function, second=function), schema)

    def to_dataframe(self) -> DataFrame:
        return self.source.mapInArrow(self.function, self.schema)


def map_in_arrow(df: DataFrame | ArrowMap, function: BatchFunction, schema: StructType | str) -> DataFrame:
    """``df.mapInArrow(function, schema)``; for an :class:`ArrowMap`, both functions in one Python pass."""
    if isinstance(df, ArrowMap):
        return df.then(function, schema)
    return df.mapInArrow(function, schema)


def as_dataframe(df: DataFrame | ArrowMap) -> DataFrame:
    return df.to_dataframe() if isinstance(df, ArrowMap) else df
