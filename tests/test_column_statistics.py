"""Order-independent column statistics and the numeric imputer built on them: exact against numpy and scikit-learn."""

import math

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from sklearn.impute import SimpleImputer

from segae_spark.errors import ConfigError, SchemaError
from segae_spark.features import column_statistics
from segae_spark.features.column_statistics import exact_medians, exact_quantiles, means_and_stds, most_frequent_values
from segae_spark.features.imputers import NumericImputer, NumericImputerModel

PROBABILITIES = [0.0, 0.1, 0.25, 0.5, 0.75, 0.999, 1.0]


@pytest.fixture(scope="module")
def columns():
    rng = np.random.default_rng(3)
    n = 3001
    skewed = rng.lognormal(3, 2, n)
    ties = rng.integers(0, 5, n).astype(np.float64)  # a few values, each many times
    tiny = rng.normal(0, 1e-300, n)  # a range near the smallest doubles
    holes = rng.normal(10, 3, n)
    holes[rng.random(n) < 0.2] = np.nan
    even = rng.lognormal(0, 1, n)
    even[0] = np.nan  # 3,000 values: the median is the mean of the two middle ones
    return {"skewed": skewed, "ties": ties, "tiny": tiny, "holes": holes, "even": even}


@pytest.fixture(scope="module")
def frame(spark, columns):
    names = list(columns)
    rows = []
    for i in range(len(columns["skewed"])):
        row = [float(columns[c][i]) for c in names]
        # Null in Spark for every tenth missing value, NaN for the others: both are missing.
        rows.append(tuple(None if (math.isnan(v) and i % 10 == 0) else v for v in row) + (None,))
    schema = ", ".join(f"{c} double" for c in names) + ", empty double"
    return spark.createDataFrame(rows, schema).repartition(5)


def _numpy(values):
    values = values[~np.isnan(values)]
    return np.quantile(values, PROBABILITIES).tolist()


def _medians(columns):
    return [float(np.median(values[~np.isnan(values)])) for values in columns.values()]


def test_quantiles_and_medians_are_numpys_exactly(frame, columns):
    found = exact_quantiles(frame, [*columns, "empty"], PROBABILITIES)
    assert found[-1] is None
    for name, values in zip(columns, found):
        assert values == _numpy(columns[name]), name  # bit for bit
    assert exact_medians(frame, [*columns, "empty"]) == _medians(columns) + [None]


def test_quantiles_stay_exact_when_brackets_are_narrowed_in_passes(frame, columns, monkeypatch):
    # Few values per collect and few buckets per pass force several narrowing passes on 3,001 rows.
    # A budget of 150 values per collect makes brackets wait for later rounds.
    monkeypatch.setattr(column_statistics, "COLLECT_AT_MOST", 100)
    monkeypatch.setattr(column_statistics, "COLLECT_BUDGET", 150)
    monkeypatch.setattr(column_statistics, "BUCKETS", 8)
    calls = {"_narrow": 0, "_rank_values": 0}
    for name in calls:
        def counted(*args, _real=getattr(column_statistics, name), _name=name):
            calls[_name] += 1
            return _real(*args)

        monkeypatch.setattr(column_statistics, name, counted)
    found = exact_quantiles(frame, list(columns), PROBABILITIES)
    assert calls["_narrow"] >= 2 and calls["_rank_values"] >= 2
    for name, values in zip(columns, found):
        assert values == _numpy(columns[name]), name
    assert exact_medians(frame, list(columns)) == _medians(columns)


def test_means_and_stds_match_numpy_and_not_the_order_of_partitions(spark, frame, columns):
    found = means_and_stds(frame, [*columns, "empty"])
    assert found[-1] is None
    for name, (mean, std) in zip(columns, found):
        values = columns[name][~np.isnan(columns[name])]
        assert mean == pytest.approx(np.mean(values), rel=1e-12, abs=1e-310), name
        assert std == pytest.approx(np.std(values), rel=1e-9, abs=1e-310), name
    # The same partitions, numbered in reverse: partial sums are added exactly, so nothing moves.
    rows = [(float(v),) for v in columns["skewed"]]
    chunks = [rows[i::4] for i in range(4)]
    in_order = spark.sparkContext.parallelize([r for c in chunks for r in c], 4).toDF("x double")
    reversed_ = spark.sparkContext.parallelize([r for c in reversed(chunks) for r in c], 4).toDF("x double")
    assert means_and_stds(in_order, ["x"]) == means_and_stds(reversed_, ["x"])


def test_most_frequent_prefers_the_smallest_of_tied_values(spark):
    nan = float("nan")
    df = spark.createDataFrame([(3.0, None), (1.0, None), (3.0, None), (1.0, None), (nan, None), (nan, None), (nan, None)], "a double, b double")
    assert most_frequent_values(df, ["a", "b"]) == [1.0, None]  # NaN is missing, not a value


@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent"])
def test_numeric_imputer_fills_as_scikit_learns_simple_imputer(frame, columns, strategy):
    names = list(columns)
    model = NumericImputer(inputCols=names, outputCols=[f"o_{c}" for c in names], strategy=strategy).fit(frame)
    reference = SimpleImputer(strategy=strategy).fit(np.column_stack([columns[c] for c in names]))
    if strategy == "mean":
        np.testing.assert_allclose(model.surrogates_, reference.statistics_, rtol=1e-12, atol=1e-310)
    else:
        assert model.surrogates_ == reference.statistics_.tolist()  # exact
    filled = np.array(model.transform(frame).select(*[f"o_{c}" for c in names]).collect(), dtype=np.float64)
    assert not np.isnan(filled).any()
    holes = columns["holes"]
    expected = np.where(np.isnan(holes), model.surrogates_[names.index("holes")], holes)
    assert np.sort(filled[:, names.index("holes")]).tolist() == np.sort(expected).tolist()


def test_numeric_imputer_round_trips_and_refuses_bad_input(spark, frame, tmp_path):
    model = NumericImputer(inputCols=["holes"], outputCols=["o"]).fit(frame)
    Pipeline(stages=[NumericImputer(inputCols=["holes"], outputCols=["o"])]).fit(frame).save(str(tmp_path / "p"))
    again = PipelineModel.load(str(tmp_path / "p")).stages[0]
    assert isinstance(again, NumericImputerModel) and again.surrogates_ == model.surrogates_
    assert again.transform(frame).select("o").collect() == model.transform(frame).select("o").collect()
    with pytest.raises(SchemaError, match=r"\['empty'\] hold no value"):
        NumericImputer(inputCols=["empty"], outputCols=["o"]).fit(frame)
    with pytest.raises(ConfigError, match="numeric impute strategy must be one of"):
        NumericImputer(inputCols=["holes"], outputCols=["o"], strategy="zero").fit(frame)
