"""SegmentAE / SegmentAEModel: fit, transform, persistence, Pipeline use."""

import json

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.sql import functions as F

from segae_spark.errors import ArtifactError, ConfigError, SchemaError
from segae_spark.pipeline import SegmentAE, SegmentAEModel


def _scores(df, id_col="transaction_id"):
    return {r[id_col]: (r.segment, r.anomaly_score, r.is_anomaly) for r in df.select(id_col, "segment", "anomaly_score", "is_anomaly").collect()}


def test_transform_adds_columns_and_keeps_rows(transactions, fitted_model):
    scored = fitted_model.transform(transactions)
    assert scored.columns == transactions.columns + [
        "segment", "anomaly_score", "threshold", "score_ratio", "is_anomaly", "top_features", "model_id", "scored_at"
    ]  # fmt: skip
    assert scored.count() == transactions.count()
    assert scored.select("transaction_id").distinct().count() == transactions.count()
    stats = scored.agg(F.min("anomaly_score"), F.countDistinct("segment"), F.sum("is_anomaly")).first()
    assert stats[0] >= 0 and stats[1] == 3 and 0 < stats[2] < transactions.count()
    bad = scored.filter((F.col("anomaly_score") > F.col("threshold")) != (F.col("is_anomaly") == 1)).count()
    assert bad == 0
    assert scored.filter((F.col("score_ratio") > 1) != (F.col("is_anomaly") == 1)).count() == 0


def test_rows_carry_their_top_features_model_id_and_scoring_time(transactions, fitted_model):
    names = fitted_model.feature_names
    rows = fitted_model.reconstruction(transactions.limit(200)).select("feature_errors", "top_features", "model_id", "scored_at").collect()
    assert {r.model_id for r in rows} == {fitted_model.model_id}
    assert len({r.scored_at for r in rows}) == 1  # one stamp per transform call
    for r in rows:
        errors = np.asarray(r.feature_errors)
        shares = [t.share for t in r.top_features]
        assert len(shares) == 3 and shares == sorted(shares, reverse=True)
        assert r.top_features[0].feature == names[int(np.argmax(errors))]
        assert shares[0] == pytest.approx(errors.max() / errors.sum())

    narrow = fitted_model.copy(
        {fitted_model.topFeatures: 0, fitted_model.modelIdCol: "", fitted_model.passthroughCols: ["transaction_id"]}
    ).transform(transactions)
    assert narrow.columns == ["transaction_id", "segment", "anomaly_score", "threshold", "score_ratio", "is_anomaly", "scored_at"]
    assert narrow.count() == transactions.count()
    with pytest.raises(SchemaError, match="passthroughCols"):
        fitted_model.copy({fitted_model.passthroughCols: ["no_such_column"]}).transform(transactions)
    with pytest.raises(ConfigError, match="topFeatures"):
        fitted_model.copy({fitted_model.topFeatures: -1}).transform(transactions)


def test_thresholds_follow_the_ratio(fitted_model):
    summary = fitted_model.segment_summary()
    assert [s["segment"] for s in summary] == [0, 1, 2]
    for s in summary:
        assert s["threshold"] == pytest.approx(2.0 * s["train_errors"]["mean"])
    copy = fitted_model.copy()
    copy.setThresholdRatio(4.0)
    assert copy.thresholds[0] == pytest.approx(2 * fitted_model.thresholds[0])


def test_scores_do_not_depend_on_row_order_or_partitioning(transactions, fitted_model):
    base = _scores(fitted_model.transform(transactions))
    shuffled = transactions.orderBy(F.rand(3)).repartition(5)
    again = _scores(fitted_model.transform(shuffled))
    assert base.keys() == again.keys()
    for key, (seg, score, flag) in base.items():
        seg2, score2, flag2 = again[key]
        assert seg == seg2 and flag == flag2 and score == pytest.approx(score2, rel=1e-6, abs=1e-9)


def test_save_load_gives_identical_scores(transactions, fitted_model, saved_model_dir):
    loaded = SegmentAEModel.load(saved_model_dir)
    assert loaded.model_id == fitted_model.model_id
    assert loaded.getOrDefault(loaded.thresholdRatio) == 2.0
    assert _scores(loaded.transform(transactions)) == _scores(fitted_model.transform(transactions))
    manifest = json.load(open(f"{saved_model_dir}/manifest.json"))
    assert manifest["format_version"] == 1 and manifest["model_id"] == fitted_model.model_id
    assert manifest["features"]["size"] == len(fitted_model.feature_names)
    assert {"pyspark", "numpy", "keras"} <= set(manifest["versions"])
    assert all(f"models/{s['model']}.npz" in manifest["checksums"] for s in manifest["segments"])


def test_damaged_or_foreign_model_dirs_are_refused(saved_model_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(saved_model_dir, copy)
    npz = next((copy / "models").glob("*.npz"))
    npz.write_bytes(npz.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ArtifactError, match="changed files"):
        SegmentAEModel.load(str(copy))
    with pytest.raises(ArtifactError, match="manifest.json not found"):
        SegmentAEModel.load(str(tmp_path))
    with pytest.raises(ArtifactError, match="already holds a model"):
        SegmentAEModel.load(saved_model_dir).save(saved_model_dir)


def test_same_seed_same_model_whatever_the_row_order(transactions, fitted_model):
    estimator = SegmentAE(
        labelCol="is_fraud", nClusters=3, autoencoder={"hidden_layers": [16, 8], "epochs": 8, "batch_size": 128},
        maxRowsPerSegment=1500, minRowsPerSegment=50, thresholdRatio=2.0, seed=11,
    )
    again = estimator.fit(transactions.orderBy(F.rand(5)).repartition(3))
    assert again.model_id == fitted_model.model_id


def test_works_inside_a_pipeline_and_persists(spark, transactions, tmp_path):
    small = transactions.limit(1500)
    stage = SegmentAE(labelCol="is_fraud", nClusters=2, autoencoder={"hidden_layers": [4], "epochs": 2}, maxRowsPerSegment=300, minRowsPerSegment=20)
    model = Pipeline(stages=[stage]).fit(small)
    model.save(str(tmp_path / "pipe"))
    reloaded = PipelineModel.load(str(tmp_path / "pipe"))
    assert isinstance(reloaded.stages[0], SegmentAEModel)
    assert _scores(reloaded.transform(small)) == _scores(model.transform(small))
    SegmentAE(nClusters=5, thresholdRatio=3.0).save(str(tmp_path / "est"))
    est = SegmentAE.load(str(tmp_path / "est"))
    assert est.getOrDefault(est.nClusters) == 5 and est.getOrDefault(est.thresholdRatio) == 3.0


def test_bad_inputs_fail_before_work(transactions, fitted_model):
    with pytest.raises(SchemaError, match="labelCol 'nope'"):
        SegmentAE(labelCol="nope").fit(transactions)
    with pytest.raises(ConfigError, match="thresholdMetric"):
        SegmentAE(thresholdMetric="huber").fit(transactions)
    with pytest.raises(ConfigError, match="n_clusters"):
        SegmentAE(labelCol="is_fraud", nClusters=1).fit(transactions)
    with pytest.raises(SchemaError, match="amount"):
        fitted_model.transform(transactions.drop("amount"))
    scored = fitted_model.transform(transactions)
    with pytest.raises(SchemaError, match="already has output column"):
        fitted_model.transform(scored)


def test_unseen_categories_are_counted_and_still_scored(transactions, fitted_model):
    new = transactions.limit(10).withColumn("channel", F.lit("teleport"))
    counts = fitted_model.unseen_categories(new)
    assert counts["channel"] == 10 and sum(counts.values()) == 10
    assert fitted_model.transform(new).count() == 10


def test_segmentae_verbs_change_thresholds_without_retraining(transactions, fitted_model):
    base = fitted_model.detections(transactions)
    doubled = fitted_model.detections(transactions, threshold_ratio=4.0)
    t_base = dict(base.groupBy("segment").agg(F.first("threshold")).collect())
    t_doubled = dict(doubled.groupBy("segment").agg(F.first("threshold")).collect())
    assert all(t_doubled[s] == pytest.approx(2 * t_base[s]) for s in t_base)
    assert doubled.filter("is_anomaly = 1").count() < base.filter("is_anomaly = 1").count()

    metrics = fitted_model.evaluation(transactions, "is_fraud", threshold_ratio=4.0)
    assert set(metrics["global"]) >= {"roc_auc", "pr_auc", "precision", "recall", "f1", "accuracy", "rows", "tp", "fp"}
    assert metrics["global"]["rows"] == transactions.count()
    assert [s["segment"] for s in metrics["segments"]] == [0, 1, 2]
    assert fitted_model.getOrDefault(fitted_model.thresholdRatio) == 2.0  # the model itself is unchanged


def test_reconstruction_gives_per_feature_errors(transactions, fitted_model):
    rows = fitted_model.reconstruction(transactions.limit(50)).collect()
    width = len(fitted_model.feature_names)
    for r in rows:
        assert len(r.feature_errors) == width
        assert sum(r.feature_errors) / width == pytest.approx(r.anomaly_score, rel=1e-9)
    mae = fitted_model.reconstruction(transactions.limit(5), threshold_metric="max_error").collect()
    assert all(max(r.feature_errors) ** 0.5 == pytest.approx(r.anomaly_score, rel=1e-9) for r in mae)
    with pytest.raises(ConfigError, match="threshold_metric"):
        fitted_model.reconstruction(transactions, threshold_metric="huber")


def test_quantile_and_contamination_thresholds(transactions, fitted_model):
    normals = transactions.filter("is_fraud = 0")
    model = fitted_model.copy({fitted_model.thresholdMethod: "contamination", fitted_model.contamination: 0.05})
    flagged = model.transform(normals).agg(F.avg("is_anomaly")).first()[0]
    assert 0.02 < flagged < 0.10  # ~5 % of normal rows, the train sample being most of them
    q = fitted_model.copy({fitted_model.thresholdMethod: "quantile", fitted_model.thresholdQuantile: 0.95})
    assert q.thresholds == model.thresholds  # 0.95 quantile == 1 - 0.05 contamination


def _scored_in_spark_and_numpy(model, df, monkeypatch):
    """(rows scored with features and segments from numpy, the same rows with both from Spark), by id."""
    import segae_spark.pipeline as pipeline

    columns = ["transaction_id", "segment", "anomaly_score", "score_ratio", "is_anomaly", "top_features"]
    in_numpy = {r[0]: tuple(r) for r in model.transform(df).select(columns).collect()}
    monkeypatch.setattr(pipeline, "nearest_centroids", lambda segmenter: None)  # the path bisecting/GMM take
    in_spark = {r[0]: tuple(r) for r in model.transform(df).select(columns).collect()}
    return in_numpy, in_spark


def test_features_and_segments_assembled_in_numpy_equal_spark_vectors(transactions, fitted_model, monkeypatch):
    assert "__segae_x" not in fitted_model.arrow_transform(transactions).source.columns  # no vectors leave the JVM
    in_numpy, in_spark = _scored_in_spark_and_numpy(fitted_model, transactions, monkeypatch)
    assert "__segae_x" in fitted_model.arrow_transform(transactions).source.columns
    assert in_numpy == in_spark  # one-hot + KMeans: bit for bit, segments included
    segmenter = fitted_model.artifact.segmenter
    features = fitted_model.artifact.preprocessing.transform(transactions)
    spark_segments = {r[0]: r[1] for r in segmenter.transform(features).select("transaction_id", segmenter.getPredictionCol()).collect()}
    assert {key: row[1] for key, row in in_numpy.items()} == spark_segments
    assert len(set(spark_segments.values())) == 3


def test_label_encoding_and_sampled_centroids_also_assemble_in_numpy(transactions, monkeypatch):
    model = SegmentAE(
        labelCol="is_fraud", encoder="label", scaler="standard", clusterModel="minibatch_kmeans", nClusters=3,
        autoencoder={"hidden_layers": [8], "epochs": 2}, maxRowsPerSegment=400, seed=5,
    ).fit(transactions)  # fmt: skip
    in_numpy, in_spark = _scored_in_spark_and_numpy(model, transactions, monkeypatch)
    assert in_numpy == in_spark


def test_every_numeric_type_with_nulls_assembles_in_numpy_as_in_spark(transactions, monkeypatch):
    # Narrow and wide integers, float32 and double with nulls and NaN, a
    # decimal and numbers held as strings: imputed, scaled and assembled, the
    # numpy path gives Spark's bits, and a narrow passthrough list still works.
    every_seventh = F.abs(F.hash("transaction_id")) % 7 == 0
    df = transactions.select(
        "transaction_id", "channel", "is_fraud",
        F.when(~every_seventh, F.col("hour").cast("smallint")).alias("hour_i16"),
        F.col("txn_count_24h").cast("tinyint").alias("txn_i8"),
        F.col("account_age_days").cast("bigint").alias("age_i64"),
        F.when(every_seventh, F.lit(float("nan"))).otherwise(F.col("distance_from_home")).cast("float").alias("dist_f32"),
        F.when(F.abs(F.hash("transaction_id")) % 5 == 0, None).otherwise(F.col("amount")).alias("amount"),
        F.col("amount").cast("decimal(12,2)").alias("amount_dec"),
        F.when(~every_seventh, F.col("hour").cast("string")).alias("hour_str"),
    )  # fmt: skip
    model = SegmentAE(
        labelCol="is_fraud", scaler="robust", imputeStrategy="mean", nClusters=2, categoricalCols=["channel"],
        numericCols=["hour_i16", "txn_i8", "age_i64", "dist_f32", "amount", "amount_dec", "hour_str"],
        autoencoder={"hidden_layers": [6], "epochs": 2}, maxRowsPerSegment=400, seed=11,
    ).fit(df)  # fmt: skip
    in_numpy, in_spark = _scored_in_spark_and_numpy(model, df, monkeypatch)
    assert in_numpy == in_spark
    passthrough = model.copy({model.passthroughCols: ["transaction_id"]}).transform(df)
    assert passthrough.columns[0] == "transaction_id" and "amount" not in passthrough.columns
    assert passthrough.count() == df.count()


def test_shared_mode_and_small_segment_fallback(transactions, tmp_path):
    common = dict(labelCol="is_fraud", nClusters=3, autoencoder={"hidden_layers": [8], "epochs": 2}, maxRowsPerSegment=400, seed=3)
    shared = SegmentAE(trainingMode="shared", trainingBackend="local", **common).fit(transactions)
    assert {s["model"] for s in shared.segment_summary()} == {"shared"}
    assert set(shared.artifact.models) == {"shared"}
    assert shared.artifact.models["shared"].training["rows"] == sum(min(400, s["rows"]) for s in shared.segment_summary())

    fallback = SegmentAE(minRowsPerSegment=10_000, **common).fit(transactions)
    assert {s["model"] for s in fallback.segment_summary()} == {"shared"}
    fallback.save(str(tmp_path / "m"))
    manifest = json.load(open(tmp_path / "m" / "manifest.json"))
    assert {s["model"] for s in manifest["segments"]} == {"shared"}
    assert {s["threshold_from"] for s in manifest["segments"]} == {"all rows of shared"}
    assert len({s["train_errors"]["mean"] for s in manifest["segments"]}) == 1  # one pool of errors, one threshold
    assert fallback.transform(transactions).count() == transactions.count()


@pytest.mark.parametrize(
    "autoencoder",
    [
        {"type": "batchnorm", "hidden_layers": [8, 4], "epochs": 2},
        {"type": "ensemble", "members": 2, "base": {"hidden_layers": [8], "epochs": 2}, "width_scales": [1.0, 0.5]},
    ],
)
def test_other_architectures_train_score_and_reload(transactions, autoencoder, tmp_path):
    small = transactions.limit(2000)
    model = SegmentAE(labelCol="is_fraud", nClusters=2, autoencoder=autoencoder, maxRowsPerSegment=500, minRowsPerSegment=20).fit(small)
    path = str(tmp_path / "m")
    model.save(path)
    assert _scores(SegmentAEModel.load(path).transform(small)) == _scores(model.transform(small))
    assert json.load(open(f"{path}/manifest.json"))["training"]["autoencoder"]["type"] == autoencoder["type"]


@pytest.mark.parametrize("normalised, engine", [(False, "numpy"), (True, "keras")])
def test_user_keras_model_per_segment(transactions, fitted_model, tmp_path, normalised, engine):
    """A user's own Keras model: numpy scoring when every layer is supported, else Keras on executors."""
    import keras

    width = len(fitted_model.feature_names)
    inputs = keras.Input((width,))
    hidden = keras.layers.Dense(6, activation="tanh")(inputs)
    if normalised:
        hidden = keras.layers.LayerNormalization()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(width)(hidden))
    path = str(tmp_path / "user.keras")
    model.save(path)

    small = transactions.limit(2000)
    fitted = SegmentAE(
        labelCol="is_fraud", nClusters=2, autoencoder={"type": "keras", "path": path, "epochs": 2},
        maxRowsPerSegment=400, minRowsPerSegment=20,
    ).fit(small)
    assert {m.training["engine"] for m in fitted.artifact.models.values()} == {engine}
    fitted.save(str(tmp_path / "m"))
    assert _scores(SegmentAEModel.load(str(tmp_path / "m")).transform(small)) == _scores(fitted.transform(small))
    with pytest.raises(ConfigError, match="does not exist"):
        SegmentAE(labelCol="is_fraud", autoencoder={"type": "keras", "path": str(tmp_path / "nope.keras")}).fit(small)
