"""Score pandas frames with a saved SegmentAEModel, in this process, without Spark.

A served model (an MLflow pyfunc, a REST endpoint, a notebook on a laptop)
scores a few rows at a time, where starting Spark would cost more than the
scoring. :class:`PandasScorer` reads the model directory with pyarrow, JSON
and numpy only (:mod:`segae_spark.local_stages`) and scores with the code
Spark's executors run: the numpy assembly, nearest-centroid segments and
:func:`~segae_spark.arrow_scoring.score_batch` with the numpy engines. Each
row gets the columns ``SegmentAEModel.transform`` adds, with the same values.

Importing this module and scoring imports neither pyspark nor TensorFlow.
Models it cannot reproduce exactly are refused when loaded, with a
ConfigError naming what is unsupported: segmenters other than K-means
(Euclidean), MiniBatch K-means and agglomerative; user Keras models the
numpy engine cannot run; categorical columns trained as floating-point
numbers. Those score in Spark. A model with a supervised second stage (a
Spark ML classifier) gets its anomaly columns here (:meth:`PandasScorer.score_columns`)
but not its fraud probability, so :meth:`PandasScorer.score`, which stands
for ``transform``, refuses it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd

from segae_spark.arrow_scoring import OutputColumns, ScoringPlan, score_batch
from segae_spark.errors import ArtifactError, ConfigError, SchemaError
from segae_spark.local_stages import LocalPreprocessing, read_centroids, read_preprocessing
from segae_spark.model_files import TRAIN_ERRORS, filesystem_of, read_manifest, read_train_errors, verify_checksums
from segae_spark.models.numpy_engine import load_engine
from segae_spark.thresholds import ThresholdRule

# The model's Params that scoring reads (SegmentAEParams' names).
_PARAMS = (
    "thresholdMethod", "thresholdRatio", "thresholdQuantile", "contamination", "thresholdMetric",
    "segmentCol", "scoreCol", "thresholdCol", "scoreRatioCol", "predictionCol", "topFeaturesCol",
    "topFeatures", "modelIdCol", "scoredAtCol", "passthroughCols",
)  # fmt: skip


def _params(path: str, manifest: dict) -> dict:
    params = manifest["params"]
    missing = [name for name in _PARAMS if name not in params]
    if missing:
        raise ArtifactError(
            f"model directory {path}: manifest params lack {missing} (saved by an older segae-spark); "
            "load it with SegmentAEModel.load and save it again"
        )
    return params


def read_thresholds(path: str, manifest: dict) -> dict[int, float]:
    """Per-segment thresholds under the model's saved threshold params, as ``SegmentAEModel.thresholds`` gives them."""
    params = _params(path, manifest)
    if TRAIN_ERRORS not in manifest["checksums"]:
        raise ArtifactError(f"model directory {path}: manifest has no checksum for {TRAIN_ERRORS}; the directory is damaged")
    filesystem, root = filesystem_of(path)
    with filesystem.open_input_stream(f"{root}/{TRAIN_ERRORS}") as stream:
        train_errors = read_train_errors(path, stream.readall())
    rule = ThresholdRule(
        method=params["thresholdMethod"],
        ratio=params["thresholdRatio"],
        quantile=params["thresholdQuantile"],
        contamination=params["contamination"],
    )
    metric = params["thresholdMetric"]
    return {seg: rule.threshold(errors[metric]) for seg, errors in sorted(train_errors.items())}


def _engines(path: str, manifest: dict) -> dict:
    """The numpy engine of every model; ConfigError for a user Keras model saved without numpy weights."""
    filesystem, root = filesystem_of(path)
    engines = {}
    for name in manifest["models"]:
        relative = f"models/{name}.npz"
        if relative not in manifest["checksums"]:
            raise ConfigError(
                f"model {name} of {path} is a user Keras model that only Keras can run; local scoring runs the "
                "numpy engine only: score this model in Spark (SegmentAEModel.transform)"
            )
        with filesystem.open_input_stream(f"{root}/{relative}") as stream:
            blob = stream.readall()
        try:
            engines[name] = load_engine(blob)
        except ArtifactError as exc:
            raise ArtifactError(f"model directory {path}: {relative}: {exc}") from None
    return engines


@dataclasses.dataclass(frozen=True)
class PandasScorer:
    """A saved SegmentAEModel that scores pandas DataFrames in-process.

    >>> scorer = PandasScorer.load("/models/segae")
    >>> scored = scorer.score(pdf)   # pdf + segment, anomaly_score, threshold, score_ratio, is_anomaly, ...
    """

    path: str
    preprocessing: LocalPreprocessing
    plan: ScoringPlan
    engines: dict
    passthrough: tuple[str, ...]
    supervised: bool = False

    @classmethod
    def load(cls, model_dir: str) -> "PandasScorer":
        """Read and check ``model_dir`` (manifest, SHA-256 of every file) as ``SegmentAEModel.load`` does."""
        path = str(model_dir)
        manifest = read_manifest(path)
        verify_checksums(path, manifest)
        params = _params(path, manifest)
        features = manifest["features"]
        preprocessing = read_preprocessing(path, features["numeric"], features["categorical"], features.get("types", {}))
        centers = read_centroids(path)
        width = sum(max(w, 1) for w in preprocessing.assembly.widths)
        if centers.shape[1] != width or len(features["names"]) != width:
            raise ArtifactError(
                f"model directory {path}: the preprocessing gives {width} features, the segmenter's centroids have "
                f"{centers.shape[1]} and the manifest names {len(features['names'])}; the directory is damaged"
            )
        plan = ScoringPlan(
            model_id=manifest.get("model_id", ""),
            segment_models={s["segment"]: s["model"] for s in manifest["segments"]},
            thresholds=read_thresholds(path, manifest),
            metric=params["thresholdMetric"],
            features_col="",
            segment_col="",
            passthrough=(),
            outputs=OutputColumns.from_params(params.__getitem__),
            top_features=params["topFeatures"],
            feature_names=tuple(features["names"]),
            model_id_col=params["modelIdCol"],
            scored_at_col=params["scoredAtCol"],
            assembly=preprocessing.assembly,
            centers=centers,
        )
        engines = _engines(path, manifest)
        return cls(path, preprocessing, plan, engines, tuple(params["passthroughCols"]), bool(manifest.get("supervised")))

    @property
    def model_id(self) -> str:
        return self.plan.model_id

    @property
    def features(self) -> tuple[str, ...]:
        """The input columns scoring reads (numeric, then categorical)."""
        return self.preprocessing.inputs

    @property
    def output_columns(self) -> list[str]:
        """segment, anomaly_score, threshold, score_ratio, is_anomaly (under the model's column names)."""
        return self.plan.outputs.names()

    @property
    def thresholds(self) -> dict[int, float]:
        return dict(self.plan.thresholds)

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``SegmentAEModel.transform`` on a pandas frame: its passthrough columns plus every output column.

        The outputs follow the model's params, as in Spark: the five score
        columns, ``top_features`` (a list of ``{feature, share}`` per row)
        unless ``topFeatures`` is 0, and the ``model_id`` / ``scored_at``
        stamps unless their column names are empty. ConfigError for a model
        with a supervised second stage, whose Spark classifier is not run here.
        """
        if self.supervised:
            raise ConfigError(
                f"model {self.path} has a supervised second stage (a Spark ML classifier), which local scoring does not "
                "run; score_columns gives its anomaly columns, SegmentAEModel.transform in Spark adds the fraud probability"
            )
        passthrough = list(self.passthrough) or list(frame.columns)
        missing = [c for c in passthrough if c not in frame.columns]
        if missing:
            raise SchemaError(f"passthroughCols names column(s) {missing} that the input lacks; columns: {list(frame.columns)}")
        scored = self._score(frame, dataclasses.replace(self.plan, scored_at=dt.datetime.now(dt.timezone.utc)))
        clash = [c for c in scored.columns if c in passthrough]
        if clash:
            raise SchemaError(f"input already has output column(s) {clash}; drop them or leave them out of passthroughCols")
        return pd.concat([frame[passthrough], scored], axis=1)

    def score_columns(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Only the five score columns of ``frame``'s rows (same index): what the MLflow pyfunc model returns."""
        return self._score(frame, dataclasses.replace(self.plan, top_features=0, model_id_col="", scored_at_col=""))

    def _score(self, frame: pd.DataFrame, plan: ScoringPlan) -> pd.DataFrame:
        batch = self.preprocessing.assembly_batch(frame)
        scored = score_batch(batch, plan, self.engines).to_pandas()
        scored.index = frame.index
        return scored
