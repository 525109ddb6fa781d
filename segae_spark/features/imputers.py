"""Missing categories: a category of their own, or the most frequent one.

Numeric columns use Spark's own ``Imputer`` (mean, median, most frequent);
it only takes numbers, so categorical columns get this small stage:

* ``constant`` (default): null becomes the category ``"__missing__"``, so a
  missing value is information the encoders and the autoencoder can see;
* ``most_frequent``: null becomes the column's most frequent training
  category (ties: the smallest value), SimpleImputer's rule.
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
from segae_spark.features.frequencies import most_frequent
from segae_spark.features.persistence import PersistentStage
from segae_spark.features.schema import column

MISSING_CATEGORY = "__missing__"
CATEGORICAL_IMPUTE_STRATEGIES = ("constant", "most_frequent")


class _CategoricalImputerParams(HasInputCols, HasOutputCols):
    strategy = Param(
        Params._dummy(),
        "strategy",
        f"what replaces a null category: {CATEGORICAL_IMPUTE_STRATEGIES[0]} (the category {MISSING_CATEGORY!r}) "
        "or most_frequent (the column's most frequent training category)",
        TypeConverters.toString,
    )

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(strategy="constant")


class CategoricalImputer(Estimator, _CategoricalImputerParams, DefaultParamsWritable, DefaultParamsReadable):
    """Learn one fill value per categorical column (see the module doc for the strategies)."""

    @keyword_only
    def __init__(self, *, inputCols=None, outputCols=None, strategy="constant"):
        super().__init__()
        self._set(**self._input_kwargs)

    def _fit(self, dataset: DataFrame) -> "CategoricalImputerModel":
        strategy = self.getOrDefault(self.strategy)
        if strategy not in CATEGORICAL_IMPUTE_STRATEGIES:
            raise ConfigError(f"categorical impute strategy must be one of {CATEGORICAL_IMPUTE_STRATEGIES}, got {strategy!r}")
        inputs, outputs = self.getInputCols(), self.getOutputCols()
        if len(inputs) != len(outputs):
            raise ConfigError(f"CategoricalImputer needs as many outputCols as inputCols, got {len(inputs)} and {len(outputs)}")
        missing = [c for c in inputs if c not in dataset.columns]
        if missing:
            raise SchemaError(f"categorical column(s) {missing} are not in the data")
        fills = [MISSING_CATEGORY] * len(inputs) if strategy == "constant" else most_frequent(dataset, inputs)
        model = CategoricalImputerModel(fills)
        self._copyValues(model)
        return model


class CategoricalImputerModel(Model, _CategoricalImputerParams, PersistentStage):
    """``output = COALESCE(CAST(input AS STRING), fill_values_[i])``."""

    def __init__(self, fill_values: list[str] | None = None):
        super().__init__()
        self.fill_values_ = list(fill_values or [])

    def _transform(self, dataset: DataFrame) -> DataFrame:
        fills = {
            output: F.coalesce(column(name).cast("string"), F.lit(fill))
            for name, output, fill in zip(self.getInputCols(), self.getOutputCols(), self.fill_values_)
        }
        return dataset.withColumns(fills)

    def _write_state(self, path: str, spark: SparkSession) -> dict:
        return {"fill_values": self.fill_values_}

    def _read_state(self, state: dict, path: str, spark: SparkSession) -> None:
        self.fill_values_ = list(state["fill_values"])
