"""Per-column scaling fitted in one Spark aggregation, applied as plain SQL.

Spark's MinMaxScaler maps a column that was constant in training to 0.5 for
every value, and its StandardScaler to 0.0: either way a value that changes
at scoring time becomes invisible to the autoencoder. Here, as in
scikit-learn, a zero range (or standard deviation, or IQR) gets scale 1, so
the training value maps to 0 and any other value still shows.

:class:`ColumnScaler` learns ``offset_`` and ``scale_`` per column;
:class:`ColumnScalerModel` applies ``(x - offset) * scale`` as one projection
with the learned numbers as exact double literals, so it runs inside the JVM
at scoring time, and persists them as JSON (no pickle).
"""

from __future__ import annotations

import re

from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCols, HasOutputCols, HasRelativeError
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segae_spark.errors import ConfigError, SchemaError
from segae_spark.features.persistence import PersistentStage
from segae_spark.features.schema import column
from segae_spark.progress import logger

SCALERS = ("minmax", "standard", "robust")
# The preprocessing pipeline's intermediate columns are "__segae_<step>_<user column>";
# warnings name the user's column.
_INTERMEDIATE = re.compile(r"^__segae_[a-z]+_")


def _source_column(name: str) -> str:
    return _INTERMEDIATE.sub("", name)


class _ColumnScalerParams(HasInputCols, HasOutputCols, HasRelativeError):
    method = Param(Params._dummy(), "method", f"scaling method, one of {SCALERS}", TypeConverters.toString)

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(method="minmax", relativeError=0.001)


class ColumnScaler(Estimator, _ColumnScalerParams, DefaultParamsWritable, DefaultParamsReadable):
    """Scale numeric columns: ``(x - offset) * scale`` with offset/scale learned by ``method``.

    * ``minmax``: offset = min, scale = 1 / (max - min)  -> [0, 1] on training data
    * ``standard``: offset = mean, scale = 1 / population std (scikit-learn's)
    * ``robust``: offset = median, scale = 1 / IQR (q75 - q25), quantiles from
      ``percentile_approx`` with ``relativeError``

    A zero spread gets scale 1; a column that is entirely null fails the fit
    with a SchemaError naming it.
    """

    @keyword_only
    def __init__(self, *, inputCols=None, outputCols=None, method="minmax", relativeError=0.001):
        super().__init__()
        self._set(**self._input_kwargs)

    def _statistics(self, dataset: DataFrame, columns: list[str], method: str) -> list[tuple[float | None, float | None]]:
        """(offset, spread) of each column, from one aggregation."""
        exprs = []
        for i, c in enumerate(columns):
            col = column(c).cast("double")
            if method == "minmax":
                exprs += [F.min(col).alias(f"a{i}"), F.max(col).alias(f"b{i}")]
            elif method == "standard":
                exprs += [F.avg(col).alias(f"a{i}"), F.stddev_pop(col).alias(f"b{i}")]
            else:
                accuracy = int(round(1.0 / self.getOrDefault(self.relativeError)))
                q = F.percentile_approx(col, [0.25, 0.5, 0.75], accuracy)
                exprs += [q.alias(f"q{i}")]
        row = dataset.agg(*exprs).first()  # small: two numbers per column
        stats = []
        for i in range(len(columns)):
            if method == "minmax":
                low, high = row[f"a{i}"], row[f"b{i}"]
                stats.append((low, None if low is None else high - low))
            elif method == "standard":
                stats.append((row[f"a{i}"], row[f"b{i}"]))
            else:
                q = row[f"q{i}"]
                stats.append((None, None) if q is None or q[1] is None else (q[1], q[2] - q[0]))
        return stats

    def _fit(self, dataset: DataFrame) -> "ColumnScalerModel":
        method = self.getOrDefault(self.method)
        if method not in SCALERS:
            raise ConfigError(f"scaler must be one of {SCALERS}, got {method!r}")
        inputs, outputs = self.getInputCols(), self.getOutputCols()
        if len(inputs) != len(outputs):
            raise ConfigError(f"ColumnScaler needs as many outputCols as inputCols, got {len(inputs)} and {len(outputs)}")
        missing = [c for c in inputs if c not in dataset.columns]
        if missing:
            raise SchemaError(f"columns to scale {missing} are not in the data")
        offsets, scales = [], []
        for name, (offset, spread) in zip(inputs, self._statistics(dataset, inputs, method)):
            if offset is None:
                raise SchemaError(f"numeric column {_source_column(name)!r} is entirely null in the training data; exclude it")
            offsets.append(float(offset))
            scales.append(1.0 / spread if spread else 1.0)
            if not spread:
                what = "has an interquartile range of 0 (median %r)" if method == "robust" else "is constant (every value %r)"
                logger.warning(
                    "feature column %r " + what + " in the training data: scaled with scale 1, so it teaches the "
                    "autoencoder little and a value unlike %r at scoring raises a row's score; exclude it "
                    "(features.exclude / excludeCols) if that is not wanted",
                    _source_column(name), float(offset), float(offset),
                )  # fmt: skip
        model = ColumnScalerModel(offsets, scales)
        self._copyValues(model)
        return model


class ColumnScalerModel(Model, _ColumnScalerParams, PersistentStage):
    """``output = (CAST(input AS DOUBLE) - offset_[i]) * scale_[i]`` for each input column."""

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
