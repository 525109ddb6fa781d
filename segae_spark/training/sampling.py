"""Bounded, seeded, order-independent training samples per segment.

Which rows train a segment's autoencoder depends only on the rows' content and
the seed (a hash of the feature, id and seed values), never on the input's
partitioning or order, so the same table gives the same sample wherever it is
read from. Only the sample, at most ``max_rows`` rows per segment, reaches the
driver.
"""

from __future__ import annotations

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from segae_spark.progress import logger

_HASH_RANGE = 2**53


def row_hash(seed: int, columns: list[str]) -> Column:
    """A 64-bit hash of ``columns`` and ``seed``; the row's sampling key."""
    return F.xxhash64(F.lit(seed), *[F.col(c) for c in columns])


def sample_segments(
    df: DataFrame,
    segment_col: str,
    hash_col: str,
    features_col: str,
    counts: dict[int, int],
    max_rows: int,
) -> dict[int, np.ndarray]:
    """Return ``{segment: float32 matrix}`` with at most ``max_rows`` rows each.

    A first filter keeps each segment's rows with probability ~1.1 x
    max_rows / count (by hash), the driver then keeps the ``max_rows`` smallest
    hashes: a bounded transfer and an exact, deterministic cap.
    """
    fractions = {seg: min(1.0, 1.1 * max_rows / n) for seg, n in counts.items() if n > 0}
    uniform = F.pmod(F.col(hash_col), F.lit(_HASH_RANGE)) / F.lit(float(_HASH_RANGE))
    keep = F.lit(False)
    for seg, fraction in sorted(fractions.items()):
        keep = F.when(F.col(segment_col) == seg, uniform < fraction).otherwise(keep)
    table = df.filter(keep).select(segment_col, hash_col, features_col).toArrow()  # small: <= 1.1 x max_rows per segment
    segments = table.column(segment_col).to_numpy()
    hashes = table.column(hash_col).to_numpy()
    flat = table.column(features_col).combine_chunks()
    matrix = flat.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    matrix = matrix.reshape(len(segments), -1) if len(segments) else matrix.reshape(0, 0)
    samples: dict[int, np.ndarray] = {}
    for seg in sorted(counts):
        idx = np.flatnonzero(segments == seg)
        idx = idx[np.lexsort((idx, hashes[idx]))][:max_rows]
        samples[seg] = matrix[idx]
        logger.info("sample: segment %d has %d rows, %d sampled for training", seg, counts[seg], len(idx))
    return samples
