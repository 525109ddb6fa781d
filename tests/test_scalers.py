"""ColumnScaler / ColumnScalerModel: scikit-learn parity, zero spread, nulls, persistence."""

import json

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

from segae_spark.errors import ConfigError, SchemaError
from segae_spark.features.scalers import ColumnScaler, ColumnScalerModel


@pytest.fixture(scope="module")
def data(spark):
    rng = np.random.default_rng(0)
    a = rng.lognormal(3, 1, 500)
    b = rng.normal(-2, 0.5, 500)
    rows = [(float(x), float(y), 7.0, int(i % 3)) for i, (x, y) in enumerate(zip(a, b))]
    return spark.createDataFrame(rows, "a double, b double, const double, small tinyint")


def _fit(data, method, **kw):
    cols = ["a", "b", "const", "small"]
    return ColumnScaler(inputCols=cols, outputCols=[f"s_{c}" for c in cols], method=method, **kw).fit(data)


def _matrix(df, prefix=""):
    rows = df.select(*[f"{prefix}{c}" for c in ("a", "b", "const", "small")]).collect()
    return np.array([list(r) for r in rows], dtype=np.float64)


@pytest.mark.parametrize("method, reference", [("minmax", MinMaxScaler()), ("standard", StandardScaler())])
def test_matches_scikit_learn(data, method, reference):
    ours = _matrix(_fit(data, method).transform(data), "s_")
    expected = reference.fit_transform(_matrix(data))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)


def test_robust_quartiles_are_scikit_learns(data):
    model = _fit(data, "robust")
    reference = RobustScaler().fit(_matrix(data))
    assert model.offset_ == reference.center_.tolist()  # exact quantiles, bit for bit
    np.testing.assert_allclose(_matrix(model.transform(data), "s_"), reference.transform(_matrix(data)), rtol=0, atol=1e-12)


def test_stages_saved_with_the_retired_relative_error_param_load(data, tmp_path):
    model = _fit(data, "robust")
    model.save(str(tmp_path / "s"))
    for crc in (tmp_path / "s" / "metadata").glob(".*.crc"):
        crc.unlink()  # the file is edited below
    (part,) = [p for p in (tmp_path / "s" / "metadata").iterdir() if p.name.startswith("part-")]
    metadata = json.loads(part.read_text())
    metadata["paramMap"]["relativeError"] = 0.001  # what robust scaling's percentile_approx used before
    part.write_text(json.dumps(metadata) + "\n")
    assert ColumnScalerModel.load(str(tmp_path / "s")).offset_ == model.offset_


def test_constant_column_maps_to_zero_and_changes_still_show(spark, data):
    model = _fit(data, "minmax")
    assert set(_matrix(model.transform(data), "s_")[:, 2]) == {0.0}
    later = spark.createDataFrame([(1.0, 1.0, 9.0, 1)], data.schema)
    assert _matrix(model.transform(later), "s_")[0, 2] == 2.0  # 9 - 7, scale 1: visible, not flattened


def test_errors_name_the_problem(spark, data):
    with pytest.raises(ConfigError, match="scaler must be one of"):
        _fit(data, "zscore")
    nulls = spark.createDataFrame([(None,), (None,)], "x double")
    with pytest.raises(SchemaError, match="'x' is entirely null"):
        ColumnScaler(inputCols=["x"], outputCols=["y"]).fit(nulls)
    with pytest.raises(SchemaError, match="nope"):
        ColumnScaler(inputCols=["nope"], outputCols=["y"]).fit(data)


@pytest.mark.parametrize("method", ["minmax", "standard", "robust"])
def test_fitted_scaler_round_trips_alone_and_inside_a_pipeline(data, tmp_path, method):
    model = _fit(data, method)
    assert isinstance(model, ColumnScalerModel) and len(model.offset_) == len(model.scale_) == 4
    model.save(str(tmp_path / "alone"))
    alone = ColumnScalerModel.load(str(tmp_path / "alone"))
    assert (alone.offset_, alone.scale_, alone.getOrDefault(alone.method)) == (model.offset_, model.scale_, method)
    expected = _matrix(model.transform(data), "s_")
    np.testing.assert_array_equal(_matrix(alone.transform(data), "s_"), expected)  # exact: literals round-trip

    pipeline = Pipeline(stages=[ColumnScaler(inputCols=["a"], outputCols=["s"], method=method)]).fit(data)
    pipeline.save(str(tmp_path / "p"))
    again = PipelineModel.load(str(tmp_path / "p"))
    assert again.transform(data).select("s").collect() == pipeline.transform(data).select("s").collect()
