"""PandasScorer: a saved model scores pandas frames without Spark, exactly as SegmentAEModel.transform does."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.feature import Imputer
from pyspark.sql import functions as F

from segae_spark.data import generate_transactions
from segae_spark.errors import ConfigError, SchemaError
from segae_spark.features.imputers import NumericImputerModel
from segae_spark.local_scoring import PandasScorer
from segae_spark.local_stages import parse_double
from segae_spark.model_files import MANIFEST, file_checksums, filesystem_of
from segae_spark.pipeline import SegmentAE, SegmentAEModel

TINY = {"hidden_layers": [6], "epochs": 1, "batch_size": 256}
NUMERIC = ["amount", "distance_from_home", "txn_count_24h", "account_age_days"]
CATEGORICAL = ["merchant_category", "channel", "country", "card_type"]

# Three small models that together use every encoder, scaler, numeric and
# categorical impute strategy, threshold rule and nearest-centroid segmenter;
# the input types cover numbers held as strings, decimals, booleans and
# integer codes used as categories. Two share one autoencoder (cheaper to train).
MODELS = {
    "one_hot-minmax": dict(
        encoder="one_hot", maxCategories=4, scaler="minmax", imputeStrategy="median",
        categoricalImputeStrategy="constant", clusterModel="kmeans",
        numericCols=NUMERIC + ["hour", "amount_text", "amount_dec", "weekend"], categoricalCols=CATEGORICAL,
    ),
    "label-standard": dict(
        encoder="label", scaler="standard", imputeStrategy="mean", categoricalImputeStrategy="most_frequent",
        clusterModel="minibatch_kmeans", numericCols=NUMERIC, categoricalCols=CATEGORICAL + ["hour"],
        thresholdMethod="quantile", thresholdMetric="mae", trainingMode="shared",
    ),
    "inverse_frequency-robust": dict(
        encoder="inverse_frequency", scaler="robust", imputeStrategy="most_frequent", clusterModel="agglomerative",
        excludeCols=["amount_text"], thresholdMethod="contamination", thresholdMetric="max_error", trainingMode="shared",
    ),
}  # fmt: skip
ONE = pytest.mark.parametrize("fitted", ["one_hot-minmax"], indirect=True)  # tests that need one model only


def _with_extra_columns(df):
    return df.withColumns(
        {
            "amount_text": F.col("amount").cast("string"),
            "amount_dec": F.col("amount").cast("decimal(12,2)"),
            "weekend": F.dayofweek("event_date").isin(1, 7),
        }
    )


def _every(n: int, salt: int):
    return F.abs(F.hash("transaction_id", F.lit(salt))) % n == 0


@pytest.fixture(scope="module")
def data(spark):
    """(training rows, scoring rows): the scoring rows add NaN, +-inf, odd strings, unseen and null categories."""
    train = _with_extra_columns(generate_transactions(spark, 2000, seed=21)).cache()
    odd_text = (
        F.when(_every(11, 1), F.lit("n/a")).when(_every(11, 2), F.lit(" 12.5 ")).when(_every(11, 3), F.lit("1e3"))
        .when(_every(11, 4), F.lit("Infinity")).when(_every(11, 5), F.lit("0x1p3")).when(_every(11, 6), F.lit("7d"))
        .when(_every(11, 7), F.lit(None)).otherwise(F.col("amount_text"))
    )  # fmt: skip
    score = (
        _with_extra_columns(generate_transactions(spark, 1000, seed=22))
        .withColumn(
            "distance_from_home",
            F.when(_every(13, 1), F.lit(float("nan")))
            .when(_every(13, 2), F.lit(float("inf")))
            .when(_every(13, 3), F.lit(float("-inf")))
            .otherwise(F.col("distance_from_home")),
        )
        .withColumn("amount_text", odd_text)
        .withColumn("merchant_category", F.when(_every(7, 8), F.lit("spaceship")).when(_every(7, 9), F.lit(None)).otherwise(F.col("merchant_category")))
        .withColumn("country", F.when(_every(9, 10), F.lit("ZZ")).otherwise(F.col("country")))
        .withColumn("hour", F.when(_every(10, 11), F.lit(99)).otherwise(F.col("hour")))
        .cache()
    )
    return train, score


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request, data, tmp_path_factory):
    """(fitted model, its saved directory) for each entry of MODELS."""
    train, _ = data
    model = SegmentAE(
        labelCol="is_fraud", nClusters=2, clusterRuns=1, autoencoder=TINY, maxRowsPerSegment=500, minRowsPerSegment=30,
        trainingBackend="local", seed=5, **MODELS[request.param],
    ).fit(train)  # fmt: skip
    path = str(tmp_path_factory.mktemp("local") / request.param)
    model.save(path)
    return model, path


def test_pandas_scores_equal_spark_transform(data, fitted):
    _, score = data
    model, path = fitted
    expected = model.transform(score).toPandas().set_index("transaction_id")
    got = PandasScorer.load(path).score(score.toPandas()).set_index("transaction_id")

    assert list(got.columns) == list(expected.columns)
    got = got.loc[expected.index]
    np.testing.assert_array_equal(got["segment"], expected["segment"])
    for column in ("anomaly_score", "threshold", "score_ratio"):
        np.testing.assert_allclose(got[column], expected[column], rtol=1e-9, atol=0)
    np.testing.assert_array_equal(got["is_anomaly"], expected["is_anomaly"])
    assert (got["model_id"] == model.model_id).all()
    for mine, theirs in zip(got["top_features"], expected["top_features"]):
        assert [f["feature"] for f in mine] == [f["feature"] for f in theirs]
        np.testing.assert_allclose([f["share"] for f in mine], [f["share"] for f in theirs], rtol=1e-9)
    assert expected["segment"].nunique() > 1 and expected["is_anomaly"].sum() > 0


@ONE
def test_renamed_output_columns_are_used_by_spark_and_pandas_scoring(data, fitted, tmp_path):
    """The output-name params (set to avoid a clash with input columns) travel with the saved model."""
    _, score = data
    model, _ = fitted
    names = {"segmentCol": "seg", "scoreCol": "err", "thresholdCol": "thr", "scoreRatioCol": "ratio",
             "predictionCol": "flag", "topFeaturesCol": "why"}  # fmt: skip
    renamed = model.copy({model.getParam(param): name for param, name in names.items()})
    path = str(tmp_path / "renamed")
    renamed.save(path)
    rows = score.limit(30)
    expected = model.transform(rows).toPandas()
    spark_cols = renamed.transform(rows).columns
    pandas_cols = list(PandasScorer.load(path).score(rows.toPandas()).columns)
    default_outputs = ["segment", "anomaly_score", "threshold", "score_ratio", "is_anomaly", "top_features"]
    renames = dict(zip(default_outputs, names.values()))
    want = {renames.get(c, c) for c in expected.columns}
    assert set(spark_cols) == want and set(pandas_cols) == want
    assert not set(default_outputs) & set(spark_cols)


@ONE
def test_scoring_imports_neither_spark_nor_tensorflow(data, fitted, tmp_path):
    _, score = data
    _, path = fitted
    rows = tmp_path / "rows.parquet"
    score.limit(50).toPandas().to_parquet(rows)
    script = textwrap.dedent(
        f"""
        import json, sys
        import pandas as pd
        from segae_spark.local_scoring import PandasScorer
        scored = PandasScorer.load({path!r}).score(pd.read_parquet({str(rows)!r}))
        print(json.dumps({{"rows": len(scored), "loaded": [m for m in ("pyspark", "tensorflow", "keras") if m in sys.modules]}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"rows": 50, "loaded": []}


def test_frames_built_by_hand_score_like_spark_rows(data, fitted):
    """Python values a user types (ints, None, Decimal, numbers as strings) give the same features as Spark's."""
    _, score = data
    _, path = fitted
    scorer = PandasScorer.load(path)
    pdf = score.limit(20).toPandas()
    by_hand = pdf.astype(object).where(pdf.notna(), None)
    np.testing.assert_array_equal(scorer.score_columns(by_hand).to_numpy(), scorer.score_columns(pdf).to_numpy())
    with pytest.raises(SchemaError, match=r"missing feature column\(s\) \['amount'\]"):
        scorer.score(pdf.drop(columns=["amount"]))


def test_strings_parse_as_spark_casts_them():
    assert parse_double(" 12.5 ") == 12.5 and parse_double("1e3") == 1000.0 and parse_double("7d") == 7.0
    assert parse_double("0x1p3") == 8.0 and parse_double("-.5") == -0.5 and parse_double("1.") == 1.0
    for text in ("n/a", "", "1e", ".", "1,5", "1_000", "\u00a012"):
        assert np.isnan(parse_double(text)), text


def _damaged_copy(path: str, tmp_path, change) -> str:
    copy = str(tmp_path / "copy")
    shutil.copytree(path, copy)
    change(copy)
    filesystem, root = filesystem_of(copy)
    manifest = json.load(open(f"{copy}/{MANIFEST}"))
    manifest["checksums"] = file_checksums(filesystem, root)
    json.dump(manifest, open(f"{copy}/{MANIFEST}", "w"))
    return copy


@ONE
def test_unsupported_models_are_refused_by_name(data, fitted, tmp_path):
    _, path = fitted

    def bisecting(copy):
        (meta,) = [f for f in os.listdir(f"{copy}/segmenter/metadata") if f.startswith("part-") and not f.endswith(".crc")]
        text = open(f"{copy}/segmenter/metadata/{meta}").read()
        classes = ("org.apache.spark.ml.clustering.KMeansModel", "segae_spark.clustering.centroids.CentroidSegmenterModel")
        for name in classes:
            text = text.replace(name, "org.apache.spark.ml.clustering.BisectingKMeansModel")
        open(f"{copy}/segmenter/metadata/{meta}", "w").write(text)

    with pytest.raises(ConfigError, match="bisecting_kmeans"):
        PandasScorer.load(_damaged_copy(path, tmp_path / "a", bisecting))
    keras_only = _damaged_copy(path, tmp_path / "b", lambda copy: os.remove(f"{copy}/models/segment_0.npz"))
    with pytest.raises(ConfigError, match="segment_0 .* user Keras model"):
        PandasScorer.load(keras_only)


@ONE
def test_models_saved_with_sparks_imputer_still_score_alike_in_spark_and_pandas(data, fitted, tmp_path):
    # Models saved before NumericImputer hold Spark's ImputerModel (median from percentile_approx).
    train, score = data
    model, _ = fitted
    stages = list(model.artifact.preprocessing.stages)
    i = next(j for j, stage in enumerate(stages) if isinstance(stage, NumericImputerModel))
    ours = stages[i]
    sparks = Imputer(inputCols=ours.getInputCols(), outputCols=ours.getOutputCols(), strategy="median")
    sparks = sparks.fit(PipelineModel(stages[:i]).transform(train))
    old = SegmentAEModel(dataclasses.replace(model.artifact, preprocessing=PipelineModel(stages[:i] + [sparks] + stages[i + 1 :])))
    model._copyValues(old)
    old.save(str(tmp_path / "old"))

    expected = SegmentAEModel.load(str(tmp_path / "old")).transform(score).toPandas().set_index("transaction_id")
    got = PandasScorer.load(str(tmp_path / "old")).score(score.toPandas()).set_index("transaction_id").loc[expected.index]
    np.testing.assert_array_equal(got["segment"], expected["segment"])
    np.testing.assert_allclose(got["anomaly_score"], expected["anomaly_score"], rtol=1e-9, atol=0)
