"""segae-spark: segment-wise autoencoder anomaly detection on Spark.

The public API is imported lazily, so that executors importing the scoring
path pay only for what it needs (and never for TensorFlow).
"""

from importlib import import_module
from importlib.util import find_spec

__version__ = "0.1.0"

# pyspark is an extra: Databricks and managed clusters bring their own, which
# installing the wheel must not replace. (segae_spark.compat refuses a pyspark
# older than 3.5.)
if find_spec("pyspark") is None:
    raise ImportError(
        "segae-spark needs pyspark (3.5 or 4.0), and this Python environment has none: "
        'install it with `pip install "segae-spark[spark]"`, or run where a Spark runtime '
        "provides it (Databricks, spark-submit)"
    )

_EXPORTS = {
    "SegmentAE": "segae_spark.pipeline",
    "SegmentAEModel": "segae_spark.pipeline",
    "SegmentAEOptimizer": "segae_spark.optimizer",
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
