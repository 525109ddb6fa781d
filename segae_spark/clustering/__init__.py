"""Segmenting rows: clusterers fitted on the preprocessed feature vector."""

from segae_spark.clustering.segmenters import CLUSTERERS, fit_segmenter, load_segmenter

__all__ = ["CLUSTERERS", "fit_segmenter", "load_segmenter"]
