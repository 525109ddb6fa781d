"""Bounded, seeded, order-independent samples of feature vectors.

The sample-fitted clusterers and the choice of K by silhouette work on a
sample, not on every row. Which rows it holds depends only on the feature
vectors and the seed (the rows with the smallest seeded hash of their vector's
values), never on the input's order or partitioning, so the same table gives
the same sample, and the same clusters, wherever it is read from.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segae_spark.compat import to_arrow

SAMPLE_KEY = "__segae_sample_key"
_VALUES = "__segae_sample_values"
_KEY_RANGE = 2**53


def hash_sample(df: DataFrame, features_col: str, max_rows: int, seed: int) -> DataFrame:
    """At most ``max_rows`` rows of ``df``: ``features_col`` and their sampling key.

    The rows kept are those with the smallest key, a seeded hash of the
    vector's values; equal keys are ordered by the values, so the choice is
    total. One cheap filter first keeps about 1.1 x ``max_rows`` rows, so the
    sort only orders those (it may leave slightly fewer than ``max_rows``).
    """
    values = vector_to_array(F.col(features_col), "float64")
    keyed = df.select(
        F.col(features_col), F.pmod(F.xxhash64(F.lit(seed), values), F.lit(_KEY_RANGE)).alias(SAMPLE_KEY)
    )
    rows = df.count()
    if rows > max_rows:
        keyed = keyed.filter(F.col(SAMPLE_KEY) < F.lit(int(_KEY_RANGE * min(1.0, 1.1 * max_rows / rows))))
    return keyed.orderBy(F.col(SAMPLE_KEY), values).limit(max_rows)


def sample_matrix(sample: DataFrame, features_col: str) -> np.ndarray:
    """The rows of a :func:`hash_sample` as a float64 matrix, in key order (what makes fits repeatable)."""
    table = to_arrow(  # small: a hash_sample holds at most its max_rows rows
        sample.select(SAMPLE_KEY, vector_to_array(F.col(features_col), "float64").alias(_VALUES))
    )
    matrix = _vector_matrix(table.column(_VALUES), table.num_rows)
    order = np.lexsort((*matrix.T[::-1], table.column(SAMPLE_KEY).to_numpy()))
    return matrix[order]


def _vector_matrix(column: pa.Array | pa.ChunkedArray, rows: int) -> np.ndarray:
    """An Arrow list<double> column as a float64 ``(rows, d)`` matrix (training's float32 would round centroids)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return values.reshape(rows, -1) if rows else values.reshape(0, 0)
