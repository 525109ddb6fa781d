"""Feature resolution, input checks and the preprocessing pipeline."""

import json
import math
import os
import subprocess
import sys
import textwrap
from decimal import Decimal

import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import functions as F

from segae_spark.errors import ConfigError, SchemaError
from segae_spark.features.imputers import CategoricalImputer, CategoricalImputerModel
from segae_spark.features.preprocessing import FEATURES_COL, build_preprocessing, feature_names, unseen_categories
from segae_spark.features.schema import FeatureSpec, resolve_features

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


@pytest.fixture(scope="module")
def unseen(spark):
    return spark.createDataFrame([("e", None, 2, 150, 10**12, 1.0, Decimal("2.00"), True, "never-seen")], SCHEMA)


def _vectors(model, df):
    rows = model.transform(df).select("id", vector_to_array(F.col(FEATURES_COL)).alias("v")).orderBy("id").collect()
    return [list(r.v) for r in rows]


def test_every_numeric_type_is_a_feature(mixed):
    spec = resolve_features(mixed.schema, exclude=["id"])
    assert spec.numeric == ("tiny", "small", "big", "f", "dec", "flag")
    assert spec.categorical == ("cat",)
    assert "d" not in spec.columns  # dates are never implicit features


def test_explicit_lists_are_checked(mixed):
    with pytest.raises(SchemaError, match="nope"):
        resolve_features(mixed.schema, numeric=["nope"])
    with pytest.raises(SchemaError, match="d \\(date\\)"):
        resolve_features(mixed.schema, numeric=["d"])
    with pytest.raises(SchemaError, match="no feature columns"):
        resolve_features(mixed.schema, exclude=[c for c in mixed.columns])
    assert resolve_features(mixed.schema, numeric=["cat"]).numeric == ("cat",)  # numbers as text: checked at fit


def test_check_input_names_missing_columns(mixed):
    spec = resolve_features(mixed.schema, exclude=["id"])
    with pytest.raises(SchemaError, match="small"):
        spec.check_input(mixed.drop("small").schema)


def test_preprocessing_scales_narrow_ints_and_handles_nulls_and_unseen(spark, mixed, unseen, tmp_path):
    spec = resolve_features(mixed.schema, exclude=["id"])
    model = build_preprocessing(spec).fit(mixed)
    names = feature_names(model, spec)
    assert names == ["tiny", "small", "big", "f", "dec", "flag", "cat=x", "cat=__missing__", "cat=y", "cat=__other__"]

    matrix = _vectors(model, mixed)
    assert all(len(v) == len(names) for v in matrix)
    tiny = [v[0] for v in matrix]
    small = [v[1] for v in matrix]
    assert min(tiny) == 0.0 and max(tiny) == 1.0  # int8 scaled like any numeric
    assert min(small) == 0.0 and max(small) == 1.0  # int16 too
    assert all(0.0 <= x <= 1.0 for v in matrix for x in v[:6])  # nulls imputed, no NaN

    model.write().overwrite().save(str(tmp_path / "prep"))
    vec = _vectors(PipelineModel.load(str(tmp_path / "prep")), unseen)[0]
    assert vec[names.index("cat=__other__")] == 1.0
    assert sum(vec[6:]) == 1.0
    assert unseen_categories(model, spec, unseen) == {"cat": 1}
    assert unseen_categories(model, spec, mixed) == {"cat": 0}


@pytest.mark.parametrize("encoder", ["label", "inverse_frequency"])
def test_numeric_encoders_give_one_scaled_position_per_column(mixed, unseen, encoder):
    spec = resolve_features(mixed.schema, exclude=["id"])
    model = build_preprocessing(spec, encoder=encoder).fit(mixed)
    assert feature_names(model, spec) == ["tiny", "small", "big", "f", "dec", "flag", "cat"]
    cat = [v[6] for v in _vectors(model, mixed)]
    assert min(cat) == 0.0 and max(cat) == 1.0  # scaled with the numerics (minmax)
    if encoder == "label":
        assert cat == [0.0, 1.0, 0.5, 0.0]  # x=0, __missing__=1, y=2 (tie by value), then scaled
    assert unseen_categories(model, spec, unseen) == {"cat": 1}


def test_categorical_nulls_become_the_most_frequent_category(spark, mixed, tmp_path):
    spec = resolve_features(mixed.schema, exclude=["id"])
    model = build_preprocessing(spec, categorical_impute_strategy="most_frequent").fit(mixed)
    names = feature_names(model, spec)
    assert names[6:] == ["cat=x", "cat=y", "cat=__other__"]  # no __missing__ slot
    assert _vectors(model, mixed)[2][6:] == [1.0, 0.0, 0.0]  # row c had a null: now "x"

    tie = spark.createDataFrame([("b",), ("a",), (None,)], "c string")
    imputer = CategoricalImputer(inputCols=["c"], outputCols=["o"], strategy="most_frequent").fit(tie)
    assert imputer.fill_values_ == ["a"]  # a tie goes to the smallest value
    imputer.save(str(tmp_path / "imp"))
    assert CategoricalImputerModel.load(str(tmp_path / "imp")).fill_values_ == ["a"]


def test_numbers_held_as_strings(spark):
    train = spark.createDataFrame([("1", "1.5"), ("2", " 2 "), ("3", None), ("4", "8")], "id string, amount string")
    spec = resolve_features(train.schema, numeric=["amount"])
    model = build_preprocessing(spec).fit(train)
    assert [v[0] for v in _vectors(model, train)] == pytest.approx([0.0, 0.5 / 6.5, 0.5 / 6.5, 1.0])  # null: the median, 2
    # At scoring, a value that is not a number becomes null and is imputed like one.
    later = spark.createDataFrame([("5", "oops")], train.schema)
    assert _vectors(model, later)[0] == pytest.approx([0.5 / 6.5])


@pytest.mark.parametrize(
    "rows, schema, numeric, categorical, message",
    [
        ([("1", "a"), ("2", "b")], "x string, k string", ["x", "gone"], ["k"], r"\['gone'\] are not in the data"),
        (
            [("1", "a"), ("x2", "b"), ("x1", "c"), ("3", "d")],
            "x string, k string",
            ["x"],
            ["k"],
            "numeric column 'x' is a string column with 2 value\\(s\\) that are not numbers \\(e.g. 'x1'\\)",
        ),
        ([(None, "a"), (None, "b")], "x double, k string", ["x"], ["k"], "numeric column 'x' is entirely null"),
        ([(float("nan"), "a"), (None, "b")], "x double, k string", ["x"], ["k"], "numeric column 'x' is entirely null"),
        ([(1.0, None), (2.0, None)], "x double, k string", ["x"], ["k"], "categorical column 'k' is entirely null"),
    ],
)
def test_bad_columns_fail_fit_with_their_name(spark, rows, schema, numeric, categorical, message):
    df = spark.createDataFrame(rows, schema)
    with pytest.raises(SchemaError, match=message):
        build_preprocessing(FeatureSpec(tuple(numeric), tuple(categorical)), impute_strategy="most_frequent").fit(df)


def test_bad_options_fail_before_any_work(mixed):
    spec = resolve_features(mixed.schema, exclude=["id"])
    for kwargs, message in [
        ({"impute_strategy": "zero"}, "impute strategy must be one of"),
        ({"scaler": "zscore"}, "scaler must be one of"),
        ({"encoder": "target"}, "encoder must be one of"),
        ({"max_categories": 0}, "maxCategories must be >= 1"),
        ({"categorical_impute_strategy": "drop"}, "categorical impute strategy must be one of"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_preprocessing(spec, **kwargs)


_FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import SparkSession

    root, names = sys.argv[1], sys.argv[2:]
    spark = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
    data = spark.read.parquet(f"{root}/data")
    out = {}
    for name in names:
        model = PipelineModel.load(f"{root}/{name}")
        rows = model.transform(data).select("id", vector_to_array("__segae_features").alias("v")).orderBy("id").collect()
        out[name] = [list(r.v) for r in rows]
    with open(f"{root}/out.json", "w") as fh:
        json.dump(out, fh)
    spark.stop()
    """
)


def test_saved_pipelines_give_identical_output_in_a_fresh_process(mixed, unseen, tmp_path):
    """Every encoder and every scaler, saved here, loaded by a new Python process with its own Spark."""
    spec = resolve_features(mixed.schema, exclude=["id"])
    data = mixed.unionByName(unseen)
    data.write.parquet(str(tmp_path / "data"))
    options = {
        "one_hot": dict(encoder="one_hot", scaler="minmax", max_categories=1),
        "label": dict(encoder="label", scaler="standard", categorical_impute_strategy="most_frequent", impute_strategy="mean"),
        "inverse_frequency": dict(encoder="inverse_frequency", scaler="robust", impute_strategy="most_frequent"),
    }
    expected = {}
    for name, kwargs in options.items():
        model = build_preprocessing(spec, **kwargs).fit(mixed)
        model.save(str(tmp_path / name))
        expected[name] = _vectors(model, data)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    subprocess.run([sys.executable, "-c", _FRESH_PROCESS, str(tmp_path), *options], env=env, check=True, timeout=600)
    with open(tmp_path / "out.json") as fh:
        loaded = json.load(fh)
    assert loaded == expected
    assert all(not math.isnan(x) for vectors in loaded.values() for v in vectors for x in v)
