"""scikit-learn clusterers fitted on a bounded sample, assigning every row in Spark.

SegmentAE offers MiniBatchKMeans and Agglomerative clustering; neither has a
Spark version. Here each is a pyspark.ml Estimator that fits scikit-learn on
a seeded, order-independent sample of at most ``sampleSize`` rows brought to
the driver (:mod:`segae_spark.clustering.sample`) and returns the clusters'
centroids as a :class:`CentroidSegmenterModel`, which assigns every row to
its nearest centroid in Spark.
"""

from __future__ import annotations

import numpy as np
from pyspark import keyword_only
from pyspark.ml import Estimator
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasFeaturesCol, HasPredictionCol, HasSeed
from pyspark.sql import DataFrame

from segae_spark.clustering.centroids import CentroidSegmenterModel
from segae_spark.clustering.sample import hash_sample, sample_matrix
from segae_spark.errors import ConfigError
from segae_spark.progress import logger

DEFAULT_SAMPLE_SIZE = 20_000
# Ward linkage keeps all pairwise distances: 5,000 rows take ~100 MB of driver
# memory, 20,000 would take 1.6 GB.
AGGLOMERATIVE_MAX_ROWS = 5_000


class _SampleFittedParams(HasFeaturesCol, HasPredictionCol, HasSeed):
    k = Param(Params._dummy(), "k", "number of clusters (>= 2)", TypeConverters.toInt)
    sampleSize = Param(
        Params._dummy(),
        "sampleSize",
        "at most this many rows, chosen by a seeded hash of their feature vector, are clustered",
        TypeConverters.toInt,
    )

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(k=2, sampleSize=DEFAULT_SAMPLE_SIZE, seed=42)

    def getK(self) -> int:
        return self.getOrDefault(self.k)

    def getSampleSize(self) -> int:
        return self.getOrDefault(self.sampleSize)


class _SampleFittedSegmenter(Estimator, _SampleFittedParams):
    """Draws the sample, lets the subclass find k centroids in it, wraps them as a Spark model."""

    @keyword_only
    def __init__(self, *, featuresCol="features", predictionCol="prediction", k=2, sampleSize=DEFAULT_SAMPLE_SIZE, seed=42):
        super().__init__()
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, featuresCol="features", predictionCol="prediction", k=2, sampleSize=DEFAULT_SAMPLE_SIZE, seed=42):
        return self._set(**self._input_kwargs)

    def _sample_rows(self) -> int:
        return self.getSampleSize()

    def _centers(self, x: np.ndarray, k: int, seed: int) -> np.ndarray:
        raise NotImplementedError

    def _fit(self, dataset: DataFrame) -> CentroidSegmenterModel:
        k, seed, features = self.getK(), self.getSeed(), self.getFeaturesCol()
        if k < 2:
            raise ConfigError(f"k must be >= 2, got {k}")
        x = sample_matrix(hash_sample(dataset, features, self._sample_rows(), seed), features)
        distinct = len(np.unique(x, axis=0))
        if distinct < k:
            raise ConfigError(
                f"the clustering sample ({len(x)} rows) holds {distinct} distinct feature vectors, fewer than the "
                f"k={k} clusters asked for; raise sampleSize (SegmentAE's clusterSampleSize, config clustering.sample_size) or lower k"
            )
        logger.info("clustering: %s on a sample of %d rows", type(self).__name__, len(x))
        # scikit-learn takes seeds in [0, 2**32); Spark seeds are any long.
        model = CentroidSegmenterModel(self._centers(x, k, seed % 2**32))
        return self._copyValues(model)


class MiniBatchKMeansSegmenter(_SampleFittedSegmenter):
    """scikit-learn's MiniBatchKMeans on the sample; rows go to the nearest of its cluster centers."""

    initRuns = Param(Params._dummy(), "initRuns", "starts tried, the best kept (scikit-learn's n_init)", TypeConverters.toInt)

    @keyword_only
    def __init__(self, *, featuresCol="features", predictionCol="prediction", k=2, sampleSize=DEFAULT_SAMPLE_SIZE, seed=42, initRuns=3):
        kwargs = self._input_kwargs  # the base constructor's @keyword_only resets it
        super().__init__()
        self._setDefault(initRuns=3)
        self._set(**kwargs)

    @keyword_only
    def setParams(self, *, featuresCol="features", predictionCol="prediction", k=2, sampleSize=DEFAULT_SAMPLE_SIZE, seed=42, initRuns=3):
        return self._set(**self._input_kwargs)

    def _centers(self, x: np.ndarray, k: int, seed: int) -> np.ndarray:
        from sklearn.cluster import MiniBatchKMeans  # scikit-learn loads only when a sample-fitted clusterer runs

        runs = self.getOrDefault(self.initRuns)
        return MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=runs).fit(x).cluster_centers_


class AgglomerativeSegmenter(_SampleFittedSegmenter):
    """Ward agglomerative clustering on the sample; rows go to the nearest cluster centroid.

    Agglomerative clustering has no ``predict``: a cluster is represented by
    the mean of its sample rows, which is what Ward linkage minimises the
    spread around. At most AGGLOMERATIVE_MAX_ROWS rows are clustered.
    """

    def _sample_rows(self) -> int:
        rows = self.getSampleSize()
        if rows > AGGLOMERATIVE_MAX_ROWS:
            logger.info("clustering: agglomerative uses %d of the %d sample rows (memory grows with rows^2)", AGGLOMERATIVE_MAX_ROWS, rows)
        return min(rows, AGGLOMERATIVE_MAX_ROWS)

    def _centers(self, x: np.ndarray, k: int, seed: int) -> np.ndarray:
        from sklearn.cluster import AgglomerativeClustering  # scikit-learn loads only when a sample-fitted clusterer runs

        labels = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)
        return np.stack([x[labels == j].mean(axis=0) for j in range(k)])
