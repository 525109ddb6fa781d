"""Data sources: the synthetic transaction generator (the demo's default data) and
loaders for the public benchmark datasets (see :mod:`segae_spark.data.datasets`)."""

from segae_spark.data.datasets import (
    DATASETS,
    benchmark_split,
    dataset_available,
    load_dataset,
    protocol_split,
)
from segae_spark.data.synthetic import generate_transactions

__all__ = [
    "DATASETS",
    "benchmark_split",
    "dataset_available",
    "generate_transactions",
    "load_dataset",
    "protocol_split",
]
