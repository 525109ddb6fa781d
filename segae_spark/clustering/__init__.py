"""Segmenting rows: clusterers fitted on the preprocessed feature vector.

The names below are imported lazily, as in the top-level package, so that
``segae_spark.clustering.nearest`` (numpy only) imports without pyspark:
local scoring assigns segments with it in processes that have no Spark.
"""

from importlib import import_module

_EXPORTS = {
    "CentroidSegmenterModel": "segae_spark.clustering.centroids",
    "DEFAULT_SAMPLE_SIZE": "segae_spark.clustering.sample_fitted",
    "AgglomerativeSegmenter": "segae_spark.clustering.sample_fitted",
    "MiniBatchKMeansSegmenter": "segae_spark.clustering.sample_fitted",
    **{
        name: "segae_spark.clustering.segmenters"
        for name in (
            "AUTO",
            "CLUSTERERS",
            "DEFAULT_K_RANGE",
            "DEFAULT_RUNS",
            "SegmenterFit",
            "check_segmenter_params",
            "fit_segmenter",
            "load_segmenter",
            "segment_sizes",
            "to_n_clusters",
        )
    },
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'segae_spark.clustering' has no attribute {name!r}")
