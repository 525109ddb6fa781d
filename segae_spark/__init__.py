"""segae-spark: segment-wise autoencoder anomaly detection on Spark.

The public API is imported lazily, so that executors importing the scoring
path pay only for what it needs (and never for TensorFlow).
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "SegmentAE": "segae_spark.pipeline",
    "SegmentAEModel": "segae_spark.pipeline",
    "get_or_create_session": "segae_spark.session",
    "generate_transactions": "segae_spark.data",
    "read_table": "segae_spark.io",
    "write_table": "segae_spark.io",
    "evaluate": "segae_spark.evaluation",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'segae_spark' has no attribute {name!r}")
