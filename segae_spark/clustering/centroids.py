"""CentroidSegmenterModel: assigns each row its nearest centroid, in Spark.

The fitted form of the clusterers that scikit-learn fits on a driver sample
(MiniBatchKMeans, Agglomerative): all they keep is one centroid per cluster,
and every row, at training and at scoring, goes to its nearest centroid. It
persists like a Spark ML model: params as DefaultParams JSON metadata, the
centroids as a Parquet table, so loading runs no code.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from pyspark.errors import AnalysisException
from pyspark.ml import Model
from pyspark.ml.functions import vector_to_array
from pyspark.ml.param.shared import HasFeaturesCol, HasPredictionCol
from pyspark.ml.util import DefaultParamsReader, MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segae_spark.clustering.nearest import nearest_center
from segae_spark.compat import save_params_metadata
from segae_spark.errors import ArtifactError, NotFittedError

_DATA_SCHEMA = "cluster INT, center ARRAY<DOUBLE>"


def _nearest_center_udf(centers: np.ndarray):
    # The centroids travel inside the UDF's closure: once per task, a few KB.
    @F.pandas_udf("int")
    def nearest(vectors: pd.Series) -> pd.Series:
        if vectors.empty:
            return pd.Series([], dtype=np.int32)
        return pd.Series(nearest_center(np.stack(vectors.to_numpy()), centers))

    return nearest


class CentroidSegmenterModel(Model, HasFeaturesCol, HasPredictionCol, MLWritable, MLReadable):
    """Adds ``predictionCol``: the index of the row's nearest centroid in ``cluster_centers_``.

    Runs as a pandas UDF on the feature vectors (numpy on Arrow batches): no
    data reaches the driver, every row is scored on its own, so the result
    does not depend on order or partitioning.
    """

    def __init__(self, cluster_centers: np.ndarray | None = None):
        super().__init__()
        self.cluster_centers_ = None if cluster_centers is None else np.asarray(cluster_centers, dtype=np.float64)

    def setFeaturesCol(self, value: str) -> "CentroidSegmenterModel":
        return self._set(featuresCol=value)

    def setPredictionCol(self, value: str) -> "CentroidSegmenterModel":
        return self._set(predictionCol=value)

    def clusterCenters(self) -> list[np.ndarray]:
        """The centroids, one array per cluster, as Spark's KMeansModel gives them."""
        return list(self._centers())

    def _centers(self) -> np.ndarray:
        if self.cluster_centers_ is None:
            raise NotFittedError("this CentroidSegmenterModel holds no centroids; fit a segmenter or load a saved one")
        return self.cluster_centers_

    def _transform(self, dataset: DataFrame) -> DataFrame:
        vectors = vector_to_array(F.col(self.getFeaturesCol()), "float64")
        return dataset.withColumn(self.getPredictionCol(), _nearest_center_udf(self._centers())(vectors))

    def write(self) -> MLWriter:
        return _CentroidSegmenterWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _CentroidSegmenterReader(cls)


class _CentroidSegmenterWriter(MLWriter):
    def __init__(self, instance: CentroidSegmenterModel):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        centers = self.instance._centers()
        save_params_metadata(
            self.instance,
            path,
            self.sparkSession,
            extra={"numClusters": int(centers.shape[0]), "numFeatures": int(centers.shape[1])},
        )
        rows = [(i, [float(v) for v in center]) for i, center in enumerate(centers)]
        self.sparkSession.createDataFrame(rows, _DATA_SCHEMA).coalesce(1).write.parquet(f"{path}/data")


class _CentroidSegmenterReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> CentroidSegmenterModel:
        metadata = read_metadata(path, self.sparkSession)
        expected = f"{CentroidSegmenterModel.__module__}.{CentroidSegmenterModel.__name__}"
        if metadata.get("class") != expected:
            raise ArtifactError(f"{path} holds a {metadata.get('class')!r}, not a {expected}")
        rows = self.sparkSession.read.parquet(f"{path}/data").orderBy("cluster").collect()  # small: one row per cluster
        centers = np.array([r["center"] for r in rows], dtype=np.float64)
        shape = (metadata.get("numClusters"), metadata.get("numFeatures"))
        if [r["cluster"] for r in rows] != list(range(len(rows))) or centers.shape != shape or not np.isfinite(centers).all():
            raise ArtifactError(f"{path}/data does not hold {shape[0]} finite centroids of {shape[1]} values")
        model = self.cls(centers)
        model._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(model, metadata)
        return model


def read_metadata(path: str, spark) -> dict:
    """The DefaultParams metadata JSON of the Spark ML stage saved at ``path`` (Java or Python)."""
    try:
        line = spark.read.text(f"{path}/metadata").first()
        metadata = json.loads(line[0]) if line is not None else None
    except (AnalysisException, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} holds no readable Spark ML metadata: {exc}") from None
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{path}/metadata is empty or not a JSON object")
    return metadata
