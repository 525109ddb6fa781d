"""Segmenting rows: clusterers fitted on the preprocessed feature vector."""

from segae_spark.clustering.centroids import CentroidSegmenterModel
from segae_spark.clustering.sample_fitted import DEFAULT_SAMPLE_SIZE, AgglomerativeSegmenter, MiniBatchKMeansSegmenter
from segae_spark.clustering.segmenters import (
    AUTO,
    CLUSTERERS,
    DEFAULT_K_RANGE,
    DEFAULT_RUNS,
    SegmenterFit,
    check_segmenter_params,
    fit_segmenter,
    load_segmenter,
    segment_sizes,
    to_n_clusters,
)

__all__ = [
    "AUTO",
    "CLUSTERERS",
    "DEFAULT_K_RANGE",
    "DEFAULT_RUNS",
    "DEFAULT_SAMPLE_SIZE",
    "AgglomerativeSegmenter",
    "CentroidSegmenterModel",
    "MiniBatchKMeansSegmenter",
    "SegmenterFit",
    "check_segmenter_params",
    "fit_segmenter",
    "load_segmenter",
    "segment_sizes",
    "to_n_clusters",
]
