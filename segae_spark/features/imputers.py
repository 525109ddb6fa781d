"""Imputation: missing numbers and missing categories.

:class:`NumericImputer` fills null and NaN numbers, as Spark's ``Imputer``
does, with the column's ``mean``, ``median`` or ``most_frequent`` training
value, computed so that the same rows always give the same value (see
:mod:`segae_spark.features.column_statistics`; Spark's median is a sketch
whose result depends on the order its parts merge in). The median is exact,
scikit-learn's ``SimpleImputer``'s.

:class:`CategoricalImputer` fills null categories:

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
from segae_spark.features.column_statistics import exact_medians, means_and_stds, most_frequent_values, present
from segae_spark.features.frequencies import most_frequent
from segae_spark.features.persistence import PersistentStage
from segae_spark.features.schema import column, source_column, stage_columns

MISSING_CATEGORY = "__missing__"
CATEGORICAL_IMPUTE_STRATEGIES = ("constant", "most_frequent")
NUMERIC_IMPUTE_STRATEGIES = ("mean", "median", "most_frequent")


class _NumericImputerParams(HasInputCols, HasOutputCols):
    strategy = Param(
        Params._dummy(), "strategy", f"the value that replaces a null or NaN number: one of {NUMERIC_IMPUTE_STRATEGIES}", TypeConverters.toString
    )

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(strategy="median")


class NumericImputer(Estimator, _NumericImputerParams, DefaultParamsWritable, DefaultParamsReadable):
    """Learn one surrogate per numeric column: its mean, exact median or most frequent value.

    Null and NaN are missing, in training and when filling. A column with
    no value in training fails the fit with a SchemaError naming it.
    """

    @keyword_only
    def __init__(self, *, inputCols=None, outputCols=None, strategy="median"):
        super().__init__()
        self._set(**self._input_kwargs)

    def _fit(self, dataset: DataFrame) -> "NumericImputerModel":
        strategy = self.getOrDefault(self.strategy)
        if strategy not in NUMERIC_IMPUTE_STRATEGIES:
            raise ConfigError(f"numeric impute strategy must be one of {NUMERIC_IMPUTE_STRATEGIES}, got {strategy!r}")
        inputs, outputs = stage_columns(self, dataset, "numeric column(s)")
        if strategy == "median":
            surrogates = exact_medians(dataset, inputs)
        elif strategy == "mean":
            surrogates = [None if s is None else s[0] for s in means_and_stds(dataset, inputs)]
        else:
            surrogates = most_frequent_values(dataset, inputs)
        empty = [source_column(c) for c, s in zip(inputs, surrogates) if s is None]
        if empty:
            raise SchemaError(f"numeric column(s) {empty} hold no value (only null or NaN) in the training data; exclude them")
        model = NumericImputerModel(surrogates)
        self._copyValues(model)
        return model


class NumericImputerModel(Model, _NumericImputerParams, PersistentStage):
    """``output = input``, or ``surrogates_[i]`` where the input is null or NaN (as a double)."""

    def __init__(self, surrogates: list[float] | None = None):
        super().__init__()
        self.surrogates_ = [float(v) for v in surrogates or []]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        fills = {
            output: F.coalesce(present(name), F.lit(surrogate))
            for name, output, surrogate in zip(self.getInputCols(), self.getOutputCols(), self.surrogates_)
        }
        return dataset.withColumns(fills)

    def _write_state(self, path: str, spark: SparkSession) -> dict:
        return {"surrogates": self.surrogates_}

    def _read_state(self, state: dict, path: str, spark: SparkSession) -> None:
        self.surrogates_ = [float(v) for v in state["surrogates"]]


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
        inputs, outputs = stage_columns(self, dataset, "categorical column(s)")
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
