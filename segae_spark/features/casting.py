"""Typed feature columns: checked once on the training data, cast alike at scoring.

The first preprocessing stage. Its fit is one aggregation over the training
data that refuses, with a SchemaError naming the column, what would otherwise
fail later with an obscure message (Spark's Imputer: "surrogate cannot be
computed") or quietly train a useless model:

* a configured column that is not in the data;
* a numeric column without one usable value (all null, NaN or infinite);
* a string column named as numeric whose values do not all parse as numbers
  (the error gives how many do not, and the smallest such value);
* a categorical column that is entirely null.

The fitted :class:`FeatureCasterModel` casts numerics to double and
categoricals to string, into new columns so the caller's own columns pass
through unchanged. Numerics go through ``try_cast``: under ANSI mode (Spark
4's default) a plain cast fails the whole scoring job on one bad string, so at
scoring time a value that does not parse becomes null and is imputed like any
missing value. NaN, +inf and -inf become null too, in training and at scoring:
an infinite value would otherwise reach the autoencoder and score NaN, which
is never above a threshold, so the row would silently pass as normal (and in
training, an infinite min or max would squash the whole column to 0).
"""

from __future__ import annotations

from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from segae_spark.compat import try_cast_column
from segae_spark.errors import ConfigError, SchemaError
from segae_spark.features.schema import column


_INF = float("inf")


def _as_double(name: str) -> Column:
    """The column as double; null where it does not parse or is NaN / +-inf (imputed like missing values)."""
    value = try_cast_column(name, "double")
    return F.when(F.isnan(value) | (F.abs(value) == F.lit(_INF)), F.lit(None).cast("double")).otherwise(value)


class _FeatureCasterParams(Params):
    numericCols = Param(Params._dummy(), "numericCols", "numeric input columns (any numeric type, boolean, or numbers as strings)", TypeConverters.toListString)
    numericOutputCols = Param(Params._dummy(), "numericOutputCols", "double output column for each numeric column", TypeConverters.toListString)
    categoricalCols = Param(Params._dummy(), "categoricalCols", "categorical input columns (strings or integer codes)", TypeConverters.toListString)
    categoricalOutputCols = Param(Params._dummy(), "categoricalOutputCols", "string output column for each categorical column", TypeConverters.toListString)

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(numericCols=[], numericOutputCols=[], categoricalCols=[], categoricalOutputCols=[])

    def _pairs(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        get = self.getOrDefault
        numeric, categorical = get(self.numericCols), get(self.categoricalCols)
        if len(numeric) != len(get(self.numericOutputCols)) or len(categorical) != len(get(self.categoricalOutputCols)):
            raise ConfigError("FeatureCaster needs one output column per input column")
        return list(zip(numeric, get(self.numericOutputCols))), list(zip(categorical, get(self.categoricalOutputCols)))


class FeatureCaster(Estimator, _FeatureCasterParams, DefaultParamsWritable, DefaultParamsReadable):
    """Check the feature columns of the training data in one aggregation; learn nothing else."""

    @keyword_only
    def __init__(self, *, numericCols=None, numericOutputCols=None, categoricalCols=None, categoricalOutputCols=None):
        super().__init__()
        self._set(**self._input_kwargs)

    def _fit(self, dataset: DataFrame) -> "FeatureCasterModel":
        numeric, categorical = self._pairs()
        check_columns(dataset, [c for c, _ in numeric], [c for c, _ in categorical])
        model = FeatureCasterModel()
        self._copyValues(model)
        return model


class FeatureCasterModel(Model, _FeatureCasterParams, DefaultParamsWritable, DefaultParamsReadable):
    """Numerics to double (``try_cast``: unparsable, NaN and +-inf -> null), categoricals to string (nulls kept)."""

    def _transform(self, dataset: DataFrame) -> DataFrame:
        numeric, categorical = self._pairs()
        casts = {out: _as_double(c) for c, out in numeric}
        casts.update({out: column(c).cast("string") for c, out in categorical})
        return dataset.withColumns(casts)


def check_columns(dataset: DataFrame, numeric: list[str], categorical: list[str]) -> None:
    """Raise one SchemaError listing every unusable feature column of ``dataset``.

    Missing columns are reported before any Spark job runs; the value checks
    of all columns share a single aggregation.
    """
    missing = [c for c in numeric + categorical if c not in dataset.columns]
    if missing:
        raise SchemaError(f"feature column(s) {missing} are not in the data; columns: {dataset.columns}")
    strings = {f.name for f in dataset.schema.fields if isinstance(f.dataType, StringType)}
    exprs = []
    for i, c in enumerate(numeric):
        value = _as_double(c)
        exprs.append(F.count(value).alias(f"usable{i}"))
        if c in strings:
            unparsable = column(c).isNotNull() & try_cast_column(c, "double").isNull()
            exprs.append(F.count(F.when(unparsable, 1)).alias(f"bad{i}"))
            exprs.append(F.min(F.when(unparsable, column(c))).alias(f"example{i}"))
    exprs += [F.count(column(c)).alias(f"present{j}") for j, c in enumerate(categorical)]
    if not exprs:
        return
    row = dataset.agg(*exprs).first()  # small: a few numbers per column
    problems = []
    for i, c in enumerate(numeric):
        if c in strings and row[f"bad{i}"]:
            problems.append(
                f"numeric column {c!r} is a string column with {row[f'bad{i}']} value(s) that are not numbers "
                f"(e.g. {row[f'example{i}']!r}); fix them or list the column as categorical"
            )
        elif row[f"usable{i}"] == 0:
            problems.append(f"numeric column {c!r} is entirely null (or NaN / infinite) in the training data; exclude it")
    problems += [
        f"categorical column {c!r} is entirely null in the training data; exclude it"
        for j, c in enumerate(categorical)
        if row[f"present{j}"] == 0
    ]
    if problems:
        raise SchemaError("; ".join(problems))
