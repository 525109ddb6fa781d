"""The preprocessing pipeline: check and cast, impute, encode categoricals, scale, assemble.

Every stage is a Spark ML stage that persists itself (Spark's own
``VectorAssembler``, and this package's stages with their MLWriter /
MLReader), so the fitted ``PipelineModel`` saves with ``.save(path)``, loads
in a fresh Spark session, and runs inside Spark at scoring time.
Intermediate columns carry a ``__segae_`` prefix; the output is one vector
column, :data:`FEATURES_COL`, whose positions are named by :func:`feature_names`.

Stage order: :class:`FeatureCaster` (one aggregation that refuses unusable
columns, then casts) -> :class:`NumericImputer` and :class:`CategoricalImputer`
-> the category encoder -> :class:`ColumnScalerModel` over numerics and
label / inverse-frequency codes -> ``VectorAssembler``. One-hot slots stay
0/1 unscaled: a slot never set in training (the other slot, for unseen
categories) must light up at scoring, not be scaled to a constant.
"""

from __future__ import annotations

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import DataFrame

from segae_spark.errors import ArtifactError, ConfigError
from segae_spark.features.arrays import ArrayAssembly
from segae_spark.features.casting import FeatureCaster
from segae_spark.features.encoders import (
    DEFAULT_MAX_CATEGORIES,
    ENCODERS,
    NUMERIC_ENCODERS,
    CappedOneHotEncoderModel,
    CategoryEncoderModel,
    category_encoder,
)
from segae_spark.features.imputers import CATEGORICAL_IMPUTE_STRATEGIES, CategoricalImputer, NumericImputer
from segae_spark.features.scalers import SCALERS, ColumnScaler
from segae_spark.features.schema import FeatureSpec

FEATURES_COL = "__segae_features"
# "mode" (Spark's Imputer's name for most_frequent) is accepted too.
IMPUTE_STRATEGIES = ("mean", "median", "most_frequent", "mode")

_PREFIX = "__segae_"


def _names(step: str, columns: tuple[str, ...]) -> list[str]:
    return [f"{_PREFIX}{step}_{c}" for c in columns]


def check_options(
    impute_strategy: str, scaler: str, encoder: str, max_categories: int, categorical_impute_strategy: str
) -> None:
    """Raise ConfigError for an unknown preprocessing option, before any Spark work."""
    allowed = (
        ("impute strategy", impute_strategy, IMPUTE_STRATEGIES),
        ("scaler", scaler, SCALERS),
        ("encoder", encoder, ENCODERS),
        ("categorical impute strategy", categorical_impute_strategy, CATEGORICAL_IMPUTE_STRATEGIES),
    )
    for name, value, choices in allowed:
        if value not in choices:
            raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
    if max_categories < 1:
        raise ConfigError(f"maxCategories must be >= 1, got {max_categories}")


def build_preprocessing(
    spec: FeatureSpec,
    impute_strategy: str = "median",
    scaler: str = "minmax",
    encoder: str = "one_hot",
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    categorical_impute_strategy: str = "constant",
) -> Pipeline:
    """An unfitted Pipeline turning the feature columns of ``spec`` into FEATURES_COL.

    Numerics of every width (and decimals, booleans, numbers held as strings)
    are cast to double first, so none is skipped by a stage that only accepts
    some types.
    """
    check_options(impute_strategy, scaler, encoder, max_categories, categorical_impute_strategy)
    numeric, categorical = spec.numeric, spec.categorical
    stages: list = [
        FeatureCaster(
            numericCols=list(numeric),
            numericOutputCols=_names("num", numeric),
            categoricalCols=list(categorical),
            categoricalOutputCols=_names("cat", categorical),
        )
    ]
    to_scale, scaled_names, vectors = [], [], []
    if numeric:
        strategy = "most_frequent" if impute_strategy == "mode" else impute_strategy
        stages.append(NumericImputer(inputCols=_names("num", numeric), outputCols=_names("imp", numeric), strategy=strategy))
        to_scale += _names("imp", numeric)
        scaled_names += list(numeric)
    if categorical:
        stages.append(
            CategoricalImputer(
                inputCols=_names("cat", categorical), outputCols=_names("fill", categorical), strategy=categorical_impute_strategy
            )
        )
        stages.append(category_encoder(encoder, _names("fill", categorical), _names("enc", categorical), max_categories))
        if encoder in NUMERIC_ENCODERS:
            to_scale += _names("enc", categorical)
            scaled_names += list(categorical)
        else:
            vectors = _names("enc", categorical)
    scaled = _names("scaled", tuple(scaled_names))
    if to_scale:
        stages.append(ColumnScaler(inputCols=to_scale, outputCols=scaled, method=scaler))
    stages.append(VectorAssembler(inputCols=scaled + vectors, outputCol=FEATURES_COL, handleInvalid="error"))
    return Pipeline(stages=stages)


def _encoder(model: PipelineModel) -> CategoryEncoderModel:
    for stage in model.stages:
        if isinstance(stage, CategoryEncoderModel):
            return stage
    raise ArtifactError("this preprocessing has no segae-spark category encoder (saved by an older version); re-train it")


def feature_names(model: PipelineModel, spec: FeatureSpec) -> list[str]:
    """Name every position of FEATURES_COL: ``amount``, then ``channel`` or ``channel=online`` / ``channel=__other__``."""
    names = list(spec.numeric)
    if spec.categorical:
        names += _encoder(model).feature_names(list(spec.categorical))
    return names


def unseen_categories(model: PipelineModel, spec: FeatureSpec, dataset: DataFrame) -> dict[str, int]:
    """Per categorical column of ``spec``, how many values of ``dataset`` training never saw.

    Counted after categorical imputation, so with the ``constant`` strategy a
    null counts as unseen when training had no nulls in that column. One
    Spark aggregation; nothing but the counts reaches the driver.
    """
    if not spec.categorical:
        return {}
    encoder = _encoder(model)
    for stage in model.stages[: model.stages.index(encoder)]:
        dataset = stage.transform(dataset)
    return dict(zip(spec.categorical, encoder.unseen_counts(dataset).values()))


def assembly_inputs(model: PipelineModel, dataset: DataFrame) -> tuple[DataFrame, ArrayAssembly] | None:
    """``dataset`` through every stage but the final ``VectorAssembler``, and how to assemble in numpy.

    One-hot encoders give their slot numbers instead of vectors. None when
    the pipeline does not end with a ``VectorAssembler`` (not one built by
    :func:`build_preprocessing`).
    """
    *stages, assembler = model.stages
    if not isinstance(assembler, VectorAssembler):
        return None
    widths = {name: 0 for name in assembler.getInputCols()}
    for stage in stages:
        if isinstance(stage, CappedOneHotEncoderModel):
            dataset = stage.slot_codes(dataset)
            widths.update(zip(stage.getOutputCols(), stage.slot_counts()))
        else:
            dataset = stage.transform(dataset)
    columns = tuple(assembler.getInputCols())
    return dataset, ArrayAssembly(columns, tuple(widths[c] for c in columns))
