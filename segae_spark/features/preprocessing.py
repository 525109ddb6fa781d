"""The preprocessing stages: impute, encode categoricals, assemble, scale.

Built from Spark ML's own stages so the fitted pipeline persists with Spark's
MLWriter and runs inside the JVM at scoring time. Intermediate columns carry a
``__segae_`` prefix and are dropped by the caller; the output is one vector
column, :data:`FEATURES_COL`, whose positions are named by :func:`feature_names`.
"""

from __future__ import annotations

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import (
    Imputer,
    OneHotEncoder,
    StringIndexer,
    StringIndexerModel,
    SQLTransformer,
    VectorAssembler,
)

from segae_spark.errors import ConfigError
from segae_spark.features.scalers import SCALERS, ColumnScaler
from segae_spark.features.schema import FeatureSpec

FEATURES_COL = "__segae_features"
MISSING_CATEGORY = "__missing__"
UNSEEN_CATEGORY = "__unseen__"
IMPUTE_STRATEGIES = ("mean", "median", "mode")

_PREFIX = "__segae_"


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _num(name: str) -> str:
    return f"{_PREFIX}num_{name}"


def _cat(name: str) -> str:
    return f"{_PREFIX}cat_{name}"


def build_preprocessing(spec: FeatureSpec, impute_strategy: str = "median", scaler: str = "minmax") -> Pipeline:
    """An unfitted Pipeline turning the feature columns of ``spec`` into FEATURES_COL.

    Numerics of every width (and decimals, booleans) are cast to double first, so
    none is skipped by a stage that only accepts some types. Null categories
    become their own category; categories unseen in training map to a reserved
    one-hot slot instead of failing the scoring job.
    """
    if impute_strategy not in IMPUTE_STRATEGIES:
        raise ConfigError(f"impute strategy must be one of {IMPUTE_STRATEGIES}, got {impute_strategy!r}")
    if scaler not in SCALERS:
        raise ConfigError(f"scaler must be one of {SCALERS}, got {scaler!r}")
    casts = [f"CAST({_quote(c)} AS DOUBLE) AS {_quote(_num(c))}" for c in spec.numeric]
    casts += [
        f"COALESCE(CAST({_quote(c)} AS STRING), '{MISSING_CATEGORY}') AS {_quote(_cat(c))}" for c in spec.categorical
    ]
    stages: list = [SQLTransformer(statement=f"SELECT *, {', '.join(casts)} FROM __THIS__")]
    final_inputs: list[str] = []
    if spec.numeric:
        imputed = [f"{_PREFIX}imp_{c}" for c in spec.numeric]
        scaled = [f"{_PREFIX}scaled_{c}" for c in spec.numeric]
        stages.append(
            Imputer(inputCols=[_num(c) for c in spec.numeric], outputCols=imputed, strategy=impute_strategy)
        )
        stages.append(ColumnScaler(inputCols=imputed, outputCols=scaled, method=scaler))
        final_inputs += scaled
    if spec.categorical:
        indexed = [f"{_PREFIX}idx_{c}" for c in spec.categorical]
        encoded = [f"{_PREFIX}ohe_{c}" for c in spec.categorical]
        stages.append(
            StringIndexer(
                inputCols=[_cat(c) for c in spec.categorical],
                outputCols=indexed,
                handleInvalid="keep",
                stringOrderType="frequencyDesc",
            )
        )
        # StringIndexer's "keep" already reserves the last index for unseen
        # values, so the encoder must not add a second such slot.
        stages.append(OneHotEncoder(inputCols=indexed, outputCols=encoded, dropLast=False, handleInvalid="error"))
        final_inputs += encoded
    # One-hot slots stay 0/1 unscaled: a slot never set in training (the unseen
    # category) must light up at scoring, not be scaled to a constant.
    stages.append(VectorAssembler(inputCols=final_inputs, outputCol=FEATURES_COL, handleInvalid="error"))
    return Pipeline(stages=stages)


def feature_names(model: PipelineModel, spec: FeatureSpec) -> list[str]:
    """Name every position of FEATURES_COL: ``amount`` or ``channel=online``."""
    names = list(spec.numeric)
    indexers = [s for s in model.stages if isinstance(s, StringIndexerModel)]
    if indexers:
        for column, labels in zip(spec.categorical, indexers[0].labelsArray):
            names += [f"{column}={label}" for label in labels] + [f"{column}={UNSEEN_CATEGORY}"]
    return names


def intermediate_columns(columns: list[str]) -> list[str]:
    """The helper columns the stages add, to drop after transform."""
    return [c for c in columns if c.startswith(_PREFIX)]
