"""Feature resolution and the preprocessing stages."""

from decimal import Decimal

import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import functions as F

from segae_spark.errors import SchemaError
from segae_spark.features.preprocessing import FEATURES_COL, build_preprocessing, feature_names
from segae_spark.features.schema import resolve_features

SCHEMA = "id string, d date, tiny tinyint, small smallint, big bigint, f float, dec decimal(10,2), flag boolean, cat string"


@pytest.fixture(scope="module")
def mixed(spark):
    import datetime as dt

    rows = [
        ("a", dt.date(2024, 1, 1), 1, 100, 10**12, 1.5, Decimal("3.25"), True, "x"),
        ("b", dt.date(2024, 1, 2), 2, 200, 2 * 10**12, None, Decimal("4.50"), False, "y"),
        ("c", dt.date(2024, 1, 3), 3, 300, 3 * 10**12, 2.5, None, True, None),
        ("d", dt.date(2024, 1, 4), 4, 400, 4 * 10**12, 3.5, Decimal("1.00"), False, "x"),
    ]
    return spark.createDataFrame(rows, SCHEMA)


def test_every_numeric_type_is_a_feature(mixed):
    spec = resolve_features(mixed.schema, exclude=["id"])
    assert spec.numeric == ("tiny", "small", "big", "f", "dec", "flag")
    assert spec.categorical == ("cat",)
    assert "d" not in spec.columns  # dates are never implicit features


def test_explicit_lists_are_checked(mixed):
    with pytest.raises(SchemaError, match="nope"):
        resolve_features(mixed.schema, numeric=["nope"])
    with pytest.raises(SchemaError, match="cat"):
        resolve_features(mixed.schema, numeric=["cat"])
    with pytest.raises(SchemaError, match="no feature columns"):
        resolve_features(mixed.schema, exclude=[c for c in mixed.columns])


def test_check_input_names_missing_columns(mixed):
    spec = resolve_features(mixed.schema, exclude=["id"])
    with pytest.raises(SchemaError, match="small"):
        spec.check_input(mixed.drop("small").schema)


def test_preprocessing_scales_narrow_ints_and_handles_nulls_and_unseen(spark, mixed, tmp_path):
    spec = resolve_features(mixed.schema, exclude=["id"])
    model = build_preprocessing(spec).fit(mixed)
    names = feature_names(model, spec)
    assert names[:6] == ["tiny", "small", "big", "f", "dec", "flag"]
    assert set(names[6:]) == {"cat=x", "cat=y", "cat=__missing__", "cat=__unseen__"}

    out = model.transform(mixed).select(vector_to_array(F.col(FEATURES_COL)).alias("v")).collect()
    matrix = [r.v for r in out]
    assert all(len(v) == len(names) for v in matrix)
    tiny = [v[0] for v in matrix]
    small = [v[1] for v in matrix]
    assert min(tiny) == 0.0 and max(tiny) == 1.0  # int8 scaled like any numeric
    assert min(small) == 0.0 and max(small) == 1.0  # int16 too
    assert all(0.0 <= x <= 1.0 for v in matrix for x in v[:6])  # nulls imputed, no NaN

    model.write().overwrite().save(str(tmp_path / "prep"))
    reloaded = PipelineModel.load(str(tmp_path / "prep"))
    unseen = spark.createDataFrame([("e", None, 2, 150, 10**12, 1.0, Decimal("2.00"), True, "never-seen")], SCHEMA)
    vec = reloaded.transform(unseen).select(vector_to_array(F.col(FEATURES_COL)).alias("v")).first().v
    assert vec[names.index("cat=__unseen__")] == 1.0
    assert sum(vec[6:]) == 1.0
