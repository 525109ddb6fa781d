"""Per-column scaling fitted with a few Spark aggregations, applied as plain SQL.

Spark's MinMaxScaler maps a column that was constant in training to 0.5 for
every value, and its StandardScaler to 0.0: either way a value that changes
at scoring time becomes invisible to the autoencoder. Here, as in
scikit-learn, a zero range (or standard deviation, or IQR) gets scale 1, so
the training value maps to 0 and any other value still shows.

:class:`ColumnScaler` learns ``offset_`` and ``scale_`` per column;
:class:`ColumnScalerModel` applies ``(x - offset) * scale`` as one projection
with the learned numbers as exact double literals, so it runs inside the JVM
at scoring time, and persists them as JSON (no pickle). The numbers are the
same on every fit of the same rows (see
:mod:`segae_spark.features.column_statistics`): quartiles are exact, and sums
are added in a fixed order.
"""

from __future__ import annotations

from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCols, HasOutputCols
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segae_spark.errors import ConfigError, SchemaError
from segae_spark.features.persistence import PersistentStage
from segae_spark.features.column_statistics import exact_quantiles, means_and_stds, value_ranges
from segae_spark.features.schema import column, source_column, stage_columns
from segae_spark.progress import logger

SCALERS = ("minmax", "standard", "robust")


class _ColumnScalerParams(HasInputCols, HasOutputCols):
    method = Param(Params._dummy(), "method", f"scaling method, one of {SCALERS}", TypeConverters.toString)

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(method="minmax")


class ColumnScaler(Estimator, _ColumnScalerParams, DefaultParamsWritable, DefaultParamsReadable):
    """Scale numeric columns: ``(x - offset) * scale`` with offset/scale learned by ``method``.

    * ``minmax``: offset = min, scale = 1 / (max - min)  -> [0, 1] on training data
    * ``standard``: offset = mean, scale = 1 / population std (scikit-learn's)
    * ``robust``: offset = median, scale = 1 / IQR (q75 - q25), exact
      quantiles interpolated as scikit-learn's RobustScaler does

    Null and NaN values are left out. A zero spread gets scale 1; a column
    with no value fails the fit with a SchemaError naming it.
    """

    @keyword_only
    def __init__(self, *, inputCols=None, outputCols=None, method="minmax"):
        super().__init__()
        self._set(**self._input_kwargs)

    def _statistics(self, dataset: DataFrame, columns: list[str], method: str) -> list[tuple[float, float] | None]:
        """(offset, spread) of each column; ``None`` for a column with no value.

        Minimum and maximum are exact in any order; the mean, standard
        deviation and quartiles come from :mod:`.column_statistics`, so the
        same rows give the same numbers on every run.
        """
        if method == "minmax":
            return [None if not n else (low, high - low) for n, low, high in value_ranges(dataset, columns)]
        if method == "standard":
            return means_and_stds(dataset, columns)
        quartiles = exact_quantiles(dataset, columns, [0.25, 0.5, 0.75])
        return [None if q is None else (q[1], q[2] - q[0]) for q in quartiles]

    def _fit(self, dataset: DataFrame) -> "ColumnScalerModel":
        method = self.getOrDefault(self.method)
        if method not in SCALERS:
            raise ConfigError(f"scaler must be one of {SCALERS}, got {method!r}")
        inputs, outputs = stage_columns(self, dataset, "columns to scale")
        offsets, scales = [], []
        for name, stats in zip(inputs, self._statistics(dataset, inputs, method)):
            if stats is None:
                raise SchemaError(f"numeric column {source_column(name)!r} is entirely null or NaN in the training data; exclude it")
            offset, spread = stats
            offsets.append(float(offset))
            scales.append(1.0 / spread if spread else 1.0)
            if not spread:
                what = "has an interquartile range of 0 (median %r)" if method == "robust" else "is constant (every value %r)"
                logger.warning(
                    "feature column %r " + what + " in the training data: scaled with scale 1, so it teaches the "
                    "autoencoder little and a value unlike %r at scoring raises a row's score; exclude it "
                    "(features.exclude / excludeCols) if that is not wanted",
                    source_column(name), float(offset), float(offset),
                )  # fmt: skip
        model = ColumnScalerModel(offsets, scales)
        self._copyValues(model)
        return model


class ColumnScalerModel(Model, _ColumnScalerParams, PersistentStage):
    """``output = (CAST(input AS DOUBLE) - offset_[i]) * scale_[i]`` for each input column."""

    # The accuracy of percentile_approx, which robust scaling used before its
    # quartiles were exact: stages saved then still carry it.
    _retired_params = ("relativeError",)

    def __init__(self, offset: list[float] | None = None, scale: list[float] | None = None):
        super().__init__()
        self.offset_ = [float(v) for v in offset or []]
        self.scale_ = [float(v) for v in scale or []]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        terms = {
            output: (column(name).cast("double") - F.lit(offset)) * F.lit(scale)
            for name, output, offset, scale in zip(self.getInputCols(), self.getOutputCols(), self.offset_, self.scale_)
        }
        return dataset.withColumns(terms)

    def _write_state(self, path: str, spark: SparkSession) -> dict:
        return {"offset": self.offset_, "scale": self.scale_}

    def _read_state(self, state: dict, path: str, spark: SparkSession) -> None:
        self.offset_ = [float(v) for v in state["offset"]]
        self.scale_ = [float(v) for v in state["scale"]]
