"""Bounded, seeded, order-independent training samples per segment.

Which rows train a segment's autoencoder depends only on the rows' content and
the seed (a hash of the feature, id and seed values), never on the input's
partitioning or order, so the same table gives the same sample wherever it is
read from. A segment contributes at most ``max_rows`` rows.
"""

from __future__ import annotations

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from segae_spark.compat import to_arrow
from segae_spark.features.arrays import feature_matrix
from segae_spark.progress import logger

_HASH_RANGE = 2**53


def row_hash(seed: int, columns: list[str]) -> Column:
    """A 64-bit hash of ``columns`` and ``seed``; the row's sampling key."""
    return F.xxhash64(F.lit(seed), *[F.col(c) for c in columns])


def hash_uniform(hash_value: Column) -> Column:
    """A 64-bit row hash mapped to a uniform in [0, 1): keep rows below p for a seeded p-share sample."""
    return F.pmod(hash_value, F.lit(_HASH_RANGE)) / F.lit(float(_HASH_RANGE))


def sample_filter(counts: dict[int, int], max_rows: int, segment_col: str, hash_col: str) -> Column:
    """Keep each segment's rows with probability ~1.1 x max_rows / count, by hash.

    A cheap first cut in Spark; :func:`cap_by_hash` then keeps exactly the
    ``max_rows`` smallest hashes, so the final sample is exact and bounded.
    """
    uniform = hash_uniform(F.col(hash_col))
    keep = F.lit(False)
    for seg, n in sorted(counts.items()):
        if n > 0:
            keep = F.when(F.col(segment_col) == seg, uniform < min(1.0, 1.1 * max_rows / n)).otherwise(keep)
    return keep


def cap_by_hash(segments: np.ndarray, hashes: np.ndarray, matrix: np.ndarray, max_rows: int) -> dict[int, np.ndarray]:
    """``{segment: rows}`` keeping, per segment, the ``max_rows`` rows with the smallest hash."""
    samples = {}
    for seg in np.unique(segments):
        idx = np.flatnonzero(segments == seg)
        idx = idx[np.lexsort((idx, hashes[idx]))][:max_rows]
        samples[int(seg)] = matrix[idx]
    return samples


def sample_segments(
    df: DataFrame,
    segment_col: str,
    hash_col: str,
    features_col: str,
    counts: dict[int, int],
    max_rows: int,
) -> dict[int, np.ndarray]:
    """Bring each segment's bounded sample to the driver: ``{segment: float32 matrix}``."""
    sampled = df.filter(sample_filter(counts, max_rows, segment_col, hash_col)).select(segment_col, hash_col, features_col)
    table = to_arrow(sampled)  # small: <= 1.1 x max_rows per segment
    segments = table.column(segment_col).to_numpy()
    matrix = feature_matrix(table.column(features_col), len(segments))
    samples = cap_by_hash(segments, table.column(hash_col).to_numpy(), matrix, max_rows)
    for seg in sorted(counts):
        samples.setdefault(seg, np.zeros((0, matrix.shape[1] if matrix.ndim == 2 else 0), np.float32))
        logger.info("sample: segment %d has %d rows, %d sampled for training", seg, counts[seg], len(samples[seg]))
    return samples
