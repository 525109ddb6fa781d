"""The number each categorical encoder gives a category, in plain Python.

One definition for the Spark stages (:mod:`segae_spark.features.encoders`)
and for local scoring (:mod:`segae_spark.local_stages`), which reads the same
saved frequency tables without Spark, so the two cannot drift apart.
``counts`` is one column's frequency table (most frequent first, see
:mod:`segae_spark.features.frequencies`) and ``rows`` the training rows,
nulls included. Each function returns the code of every known category, in
table order, and the code of a category training never saw.
"""

from __future__ import annotations

import math
from typing import Sequence


def inverse_frequency_codes(counts: Sequence[int], rows: int) -> tuple[list[float], float]:
    """SegmentAE's IFrequencyEncoder: ``log1p(rows / count)``; unseen: as rare as the rarest known category."""
    return [math.log1p(rows / n) for n in counts], math.log1p(rows / min(counts))


def label_codes(counts: Sequence[int]) -> tuple[list[float], float]:
    """Rank by frequency (0 = most frequent); unseen: ``len(counts)``, a code no known category has."""
    return [float(code) for code in range(len(counts))], float(len(counts))


def one_hot_slots(counts: Sequence[int], max_categories: int) -> tuple[list[float], float]:
    """Slot numbers: the ``max_categories`` most frequent categories get their own, rarer and unseen ones the last."""
    kept = min(len(counts), max_categories)
    return [float(min(position, kept)) for position in range(len(counts))], float(kept)
