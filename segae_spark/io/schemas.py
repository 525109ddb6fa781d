"""Schema checks and conversions between Spark and Delta.

Every check here runs on the driver before any Spark job, so a bad write
fails in milliseconds with a message naming the column, instead of after the
executors have written files. Spark's StructType JSON and Delta's schema JSON
are the same format, which keeps the conversions exact (nested types and
decimal precision included).
"""

from __future__ import annotations

import json

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    ByteType,
    DataType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    ShortType,
    StringType,
    StructField,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from segae_spark.errors import SchemaError

_PRIMITIVES = (
    BooleanType,
    ByteType,
    ShortType,
    IntegerType,
    LongType,
    FloatType,
    DoubleType,
    DecimalType,
    StringType,
    BinaryType,
    DateType,
    TimestampType,
    TimestampNTZType,
)
# Partition values round-trip through strings in the Delta log and through
# directory names; floats and binary do not survive that cleanly.
_PARTITION_TYPES = (
    BooleanType,
    ByteType,
    ShortType,
    IntegerType,
    LongType,
    DecimalType,
    StringType,
    DateType,
    TimestampType,
    TimestampNTZType,
)


def check_storable(schema: StructType) -> None:
    """Raise SchemaError for columns whose type a Delta table cannot hold."""
    seen: dict[str, str] = {}
    for field in schema.fields:
        key = field.name.lower()
        if key in seen:
            raise SchemaError(
                f"columns {seen[key]!r} and {field.name!r} differ only in case; Delta column names are case-insensitive"
            )
        seen[key] = field.name
        bad = _unstorable(field.dataType)
        if bad is not None:
            raise SchemaError(
                f"column {field.name!r} has type {bad.simpleString()}, which a Delta table cannot store; "
                "cast it (e.g. to string, long or timestamp) before writing"
            )


def _unstorable(data_type: DataType) -> DataType | None:
    if isinstance(data_type, _PRIMITIVES):
        return None
    if isinstance(data_type, StructType):
        for field in data_type.fields:
            bad = _unstorable(field.dataType)
            if bad is not None:
                return bad
        return None
    if isinstance(data_type, ArrayType):
        return _unstorable(data_type.elementType)
    if isinstance(data_type, MapType):
        return _unstorable(data_type.keyType) or _unstorable(data_type.valueType)
    return data_type


def check_partition_columns(schema: StructType, partition_by: list[str]) -> None:
    """Partition columns must exist, be distinct, be primitive, and leave a data column."""
    if len(set(partition_by)) != len(partition_by):
        raise SchemaError(f"partition_by lists a column twice: {partition_by}")
    names = schema.names
    for name in partition_by:
        if not isinstance(name, str) or name not in names:
            raise SchemaError(f"partition column {name!r} is not in the DataFrame (columns: {', '.join(names)})")
        data_type = schema[name].dataType
        if not isinstance(data_type, _PARTITION_TYPES):
            raise SchemaError(
                f"partition column {name!r} has type {data_type.simpleString()}; partition by a string, "
                "integer, boolean, decimal, date or timestamp column"
            )
    if len(partition_by) == len(names):
        raise SchemaError("every column is a partition column; a Delta table needs at least one data column")


def schema_differences(expected: StructType, actual: StructType) -> list[str]:
    """Human-readable differences between a table schema and a DataFrame's (nullability ignored)."""
    differences = []
    actual_types = {f.name: f.dataType for f in actual.fields}
    for field in expected.fields:
        if field.name not in actual_types:
            differences.append(f"missing column {field.name!r} ({field.dataType.simpleString()})")
        elif actual_types[field.name].simpleString() != field.dataType.simpleString():
            differences.append(
                f"column {field.name!r} is {actual_types[field.name].simpleString()}, "
                f"table has {field.dataType.simpleString()}"
            )
    expected_names = set(expected.names)
    for field in actual.fields:
        if field.name not in expected_names:
            differences.append(f"extra column {field.name!r} ({field.dataType.simpleString()}) not in the table")
    return differences


def as_nullable(data_type: DataType) -> DataType:
    """The same type with every field, element and value nullable.

    Delta-Spark also declares tables created from a DataFrame nullable: our
    writer does not enforce NOT NULL, so the log must not promise it.
    """
    if isinstance(data_type, StructType):
        return StructType([StructField(f.name, as_nullable(f.dataType), True, f.metadata) for f in data_type.fields])
    if isinstance(data_type, ArrayType):
        return ArrayType(as_nullable(data_type.elementType), True)
    if isinstance(data_type, MapType):
        return MapType(as_nullable(data_type.keyType), as_nullable(data_type.valueType), True)
    return data_type


def spark_schema_from_delta_json(schema_json: str) -> StructType:
    """Spark StructType of a Delta schema (the two JSON formats coincide)."""
    return StructType.fromJson(json.loads(schema_json))


def without(schema: StructType, names: list[str]) -> StructType:
    drop = set(names)
    return StructType([f for f in schema.fields if f.name not in drop])
