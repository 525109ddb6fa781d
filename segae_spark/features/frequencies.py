"""Category frequency tables of several columns, from one shuffle.

The categorical imputer (most frequent value) and every encoder learn from
how often each category occurs. Counting all columns together reads the data
once: each row is exploded into (column index, category) pairs that a single
``groupBy`` counts. Categories are compared as strings; order is by count
descending, ties by category value, so the same data always gives the same
table.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from segae_spark.errors import SchemaError
from segae_spark.features.schema import column

# A categorical column with more distinct values than this is an identifier,
# not a category; its table would also no longer be small enough to collect
# to the driver and broadcast at scoring time.
MAX_DISTINCT_CATEGORIES = 1_000_000



def category_counts(dataset: DataFrame, columns: list[str]) -> DataFrame:
    """``(column, category, count)``: rows per category of each column, nulls as a null category."""
    pairs = F.explode(
        F.array(*[F.struct(F.lit(i).alias("column"), column(c).cast("string").alias("category")) for i, c in enumerate(columns)])
    )
    return dataset.select(pairs.alias("pair")).select("pair.*").groupBy("column", "category").count()


@dataclass(frozen=True)
class FrequencyTable:
    """Each column's non-null categories, most frequent first, with their counts."""

    categories: list[list[str]]
    counts: list[list[int]]
    rows: int  # training rows, nulls included


def frequency_table(dataset: DataFrame, columns: list[str]) -> FrequencyTable:
    """Count every category of ``columns`` in one aggregation and bring the (small) table to the driver.

    Raises SchemaError naming a column that is entirely null, or that has
    more than MAX_DISTINCT_CATEGORIES distinct values.
    """
    # At most this many rows (null categories included) when no column is too
    # large; one row more proves that some column is, and which one.
    bound = (MAX_DISTINCT_CATEGORIES + 1) * len(columns)
    table = category_counts(dataset, columns).limit(bound + 1).toPandas()  # small: bounded, see above
    known = table[table["category"].notna()]
    sizes = known.groupby("column").size()
    too_many = [c for i, c in enumerate(columns) if sizes.get(i, 0) > MAX_DISTINCT_CATEGORIES]
    if too_many:
        raise SchemaError(
            f"categorical column(s) {too_many} have more than {MAX_DISTINCT_CATEGORIES:,} distinct values in the "
            "training data; they look like identifiers: exclude them"
        )
    empty = [c for i, c in enumerate(columns) if sizes.get(i, 0) == 0]
    if empty:
        raise SchemaError(f"categorical column(s) {empty} are entirely null in the training data; exclude them")
    rows = int(table.loc[table["column"] == 0, "count"].sum())
    known = known.sort_values(["column", "count", "category"], ascending=[True, False, True])
    categories: list[list[str]] = [[] for _ in columns]
    frequencies: list[list[int]] = [[] for _ in columns]
    for i, group in known.groupby("column", sort=True):
        categories[int(i)] = group["category"].tolist()
        frequencies[int(i)] = [int(n) for n in group["count"]]
    return FrequencyTable(categories, frequencies, rows)


def most_frequent(dataset: DataFrame, columns: list[str]) -> list[str]:
    """The most frequent non-null category of each column (ties: the smallest value)."""
    rank = F.row_number().over(Window.partitionBy("column").orderBy(F.desc("count"), F.asc("category")))
    top = (
        category_counts(dataset, columns)
        .where(F.col("category").isNotNull())
        .withColumn("rank", rank)
        .where(F.col("rank") == 1)
        .collect()  # small: one row per column
    )
    found = {int(r["column"]): r["category"] for r in top}
    empty = [c for i, c in enumerate(columns) if i not in found]
    if empty:
        raise SchemaError(f"categorical column(s) {empty} are entirely null in the training data; exclude them")
    return [found[i] for i in range(len(columns))]
