"""Segmenters: the five clusterers, K by silhouette, persistence and bad inputs."""

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import FAST_AUTOENCODER
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import functions as F

from segae_spark.clustering import (
    CLUSTERERS,
    DEFAULT_RUNS,
    CentroidSegmenterModel,
    MiniBatchKMeansSegmenter,
    fit_segmenter,
    load_segmenter,
    segmenters,
    to_n_clusters,
)
from segae_spark.clustering.centroids import nearest_center
from segae_spark.clustering.sample import hash_sample, sample_matrix
from segae_spark.clustering.segmenters import improves
from segae_spark.errors import ArtifactError, ConfigError

SAMPLE_ROWS = 600  # the sample-fitted clusterers see a part of the 1,200 rows, as on real data


def _frame(spark, x):
    rows = [(i, [float(v) for v in row]) for i, row in enumerate(x)]
    return spark.createDataFrame(rows, "id INT, x ARRAY<DOUBLE>").select("id", array_to_vector("x").alias("features"))


@pytest.fixture(scope="module")
def blobs(spark):
    """1,200 rows around 4 well-separated centres in 5 dimensions."""
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0, 0, 0], [6, 0, 0, 0, 0], [0, 6, 0, 6, 0], [6, 6, 6, 0, 6]], dtype=float)
    x = np.concatenate([c + rng.normal(0, 0.6, (300, 5)) for c in centres])
    return _frame(spark, x).repartition(2).cache()


def _fit(df, model, n_clusters=4, runs=1, **kwargs):
    """One run per fit keeps the tests quick; the default (3) is for the inertia test."""
    return fit_segmenter(
        df, "features", "segment", model=model, n_clusters=n_clusters, seed=5, sample_size=SAMPLE_ROWS, runs=runs, **kwargs
    )


def _assignments(model, df) -> dict[int, int]:
    return dict(model.transform(df).select("id", "segment").collect())


def _matrix(df) -> tuple[np.ndarray, np.ndarray]:
    rows = df.select("id", vector_to_array("features").alias("x")).orderBy("id").collect()
    return np.array([r.id for r in rows]), np.array([r.x for r in rows])


@pytest.mark.parametrize("model", CLUSTERERS)
def test_every_clusterer_is_reproducible_with_a_fixed_seed(blobs, model):
    first = _fit(blobs, model)
    again = _fit(blobs, model)
    assert first.algorithm == model and first.n_segments == 4 and first.k_selection is None
    labels = _assignments(first.model, blobs)
    assert labels == _assignments(again.model, blobs)
    assert len(labels) == blobs.count() and set(labels.values()) == {0, 1, 2, 3}


@pytest.mark.parametrize("model", ["minibatch_kmeans", "agglomerative"])
def test_sample_fitted_clusterers_do_not_depend_on_row_order(blobs, model):
    shuffled = blobs.orderBy(F.rand(1)).repartition(3)
    assert _assignments(_fit(blobs, model).model, blobs) == _assignments(_fit(shuffled, model).model, blobs)


def test_the_sample_is_bounded_seeded_and_order_independent(blobs):
    sample = sample_matrix(hash_sample(blobs, "features", 100, seed=5), "features")
    shuffled = sample_matrix(hash_sample(blobs.orderBy(F.rand(2)).repartition(5), "features", 100, seed=5), "features")
    other_seed = sample_matrix(hash_sample(blobs, "features", 100, seed=6), "features")
    assert sample.shape == (100, 5) and sample.dtype == np.float64
    np.testing.assert_array_equal(sample, shuffled)
    assert not np.array_equal(sample, other_seed)


def test_spark_kmeans_inertia_is_within_5_percent_of_scikit_learn(spark):
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(1)
    centres = rng.uniform(0, 10, (6, 4))
    x = np.concatenate([c + rng.normal(0, 1.5, (250, 4)) for c in centres])
    df = _frame(spark, x).repartition(2)
    spark_model = _fit(df, "kmeans", n_clusters=6, runs=DEFAULT_RUNS).model
    _, matrix = _matrix(df)
    centers = np.array(spark_model.clusterCenters())
    spark_inertia = np.square(matrix - centers[nearest_center(matrix, centers)]).sum()
    sklearn_inertia = KMeans(n_clusters=6, n_init=10, random_state=0).fit(x).inertia_
    assert spark_inertia <= 1.05 * sklearn_inertia
    assert spark_model.summary.trainingCost == pytest.approx(spark_inertia, rel=1e-6)


@pytest.mark.parametrize("model", ["minibatch_kmeans", "agglomerative"])
def test_sample_fitted_models_send_every_row_to_its_nearest_centroid(blobs, model):
    fitted = _fit(blobs, model).model
    assert isinstance(fitted, CentroidSegmenterModel)
    ids, x = _matrix(blobs)
    centers = np.array(fitted.clusterCenters())
    expected = np.square(x[:, None, :] - centers[None, :, :]).sum(axis=2).argmin(axis=1)
    labels = _assignments(fitted, blobs)
    assert [labels[i] for i in ids] == expected.tolist()


def test_a_tie_goes_to_the_lowest_centroid_index():
    centers = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 5.0]])
    assert nearest_center(np.array([[0.0, 0.0], [-0.9, 0.0], [0.0, 3.0]]), centers).tolist() == [0, 1, 2]


def test_costs_that_differ_by_rounding_alone_tie():
    # One KMeans fit's cost in two runs of the same job: Spark sums it over partitions in task-completion order.
    cost, again = float.fromhex("0x1.c2e04ed5f79b9p+12"), float.fromhex("0x1.c2e04ed5f79b8p+12")
    assert not improves(again, cost) and not improves(cost, again)
    assert improves(cost * 0.999, cost) and not improves(cost * 1.001, cost)
    assert improves(cost, float("inf"))
    # A Gaussian mixture's cost is its negative log-likelihood.
    assert improves(-1001.0, -1000.0) and not improves(np.nextafter(-1000.0, -np.inf), -1000.0)


def test_of_starts_reaching_the_same_optimum_the_first_is_kept(monkeypatch):
    # Starts 1 and 3 end at the same clustering (numbered differently); 3's cost is lower only by rounding.
    cost = float.fromhex("0x1.c2e04ed5f79b9p+12")
    fits = [SimpleNamespace(summary=SimpleNamespace(trainingCost=c)) for c in (cost, cost * 1.05, np.nextafter(cost, 0))]
    starts = iter(fits)
    monkeypatch.setattr(segmenters, "KMeans", lambda **params: SimpleNamespace(fit=lambda df: next(starts)))
    assert segmenters._fit_best("kmeans", 3, None, "features", "segment", 1, SAMPLE_ROWS, runs=3) is fits[0]


_FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    from pyspark.sql import SparkSession
    from segae_spark.clustering import load_segmenter

    root, names = sys.argv[1], sys.argv[2:]
    spark = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
    data = spark.read.parquet(f"{root}/data")
    out = {}
    for name in names:
        model = load_segmenter(f"{root}/{name}")
        out[name] = {"class": type(model).__name__, "segments": dict(model.transform(data).select("id", "segment").collect())}
    with open(f"{root}/out.json", "w") as fh:
        json.dump(out, fh)
    spark.stop()
    """
)


def test_every_segmenter_loads_back_in_a_fresh_process_with_identical_output(blobs, tmp_path):
    """Each clusterer, saved here, loaded and applied by a new Python process with its own Spark."""
    blobs.write.parquet(str(tmp_path / "data"))
    expected = {}
    for model in CLUSTERERS:
        fitted = _fit(blobs, model).model
        fitted.write().overwrite().save(str(tmp_path / model))
        expected[model] = {"class": type(fitted).__name__, "segments": {str(k): v for k, v in _assignments(fitted, blobs).items()}}
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    subprocess.run([sys.executable, "-c", _FRESH_PROCESS, str(tmp_path), *CLUSTERERS], env=env, check=True, timeout=600)
    with open(tmp_path / "out.json") as fh:
        assert json.load(fh) == expected


def test_saved_centroids_are_parquet_and_json_only(blobs, tmp_path):
    fitted = _fit(blobs, "minibatch_kmeans").model
    fitted.save(str(tmp_path / "segmenter"))
    files = {p.suffix for p in (tmp_path / "segmenter").rglob("*") if p.is_file() and not p.name.startswith((".", "_"))}
    assert files == {".parquet", ".txt"}  # the metadata is one line of JSON
    metadata = json.loads(next((tmp_path / "segmenter" / "metadata").glob("part-*")).read_text())
    assert metadata["class"] == "segae_spark.clustering.centroids.CentroidSegmenterModel"
    assert (metadata["numClusters"], metadata["numFeatures"]) == (4, 5)
    assert metadata["paramMap"]["predictionCol"] == "segment"


@pytest.mark.parametrize("model", ["kmeans", "minibatch_kmeans"])
def test_auto_k_picks_the_number_of_blobs(blobs, model):
    fit = _fit(blobs, model, n_clusters="auto", k_range=(2, 7))
    selection = fit.k_selection
    assert fit.n_segments == 4 and selection["chosen"] == 4
    assert [s["k"] for s in selection["scores"]] == [2, 3, 4, 5, 6, 7]
    best = max(selection["scores"], key=lambda s: s["silhouette"])
    assert best["k"] == 4 and selection["sample_rows"] == SAMPLE_ROWS
    assert json.loads(json.dumps(fit.to_dict())) == fit.to_dict()  # goes into the manifest as it is


def test_bad_settings_name_the_parameter(spark, blobs):
    with pytest.raises(ConfigError, match=r"clusterModel .* one of \('kmeans', 'bisecting_kmeans', 'gaussian_mixture', 'minibatch_kmeans', 'agglomerative'\), got 'dbscan'"):
        _fit(blobs, "dbscan")
    with pytest.raises(ConfigError, match="nClusters .*clustering.n_clusters.* >= 2"):
        _fit(blobs, "kmeans", n_clusters=1)
    with pytest.raises(ConfigError, match="nClustersRange"):
        _fit(blobs, "kmeans", n_clusters="auto", k_range=(5, 3))
    with pytest.raises(ConfigError, match="clusterSampleSize"):
        fit_segmenter(blobs, "features", "segment", sample_size=10)
    with pytest.raises(ConfigError, match="nClusters .* 'auto', got 'four'"):
        to_n_clusters("four")
    three_points = _frame(spark, np.repeat(np.eye(3), 20, axis=0))
    with pytest.raises(ConfigError, match="nClusters .* = 4, more than the 3 distinct feature vectors"):
        _fit(three_points, "kmeans")
    with pytest.raises(ConfigError, match="k=4 clusters asked for; raise sampleSize"):
        MiniBatchKMeansSegmenter(featuresCol="features", k=4, sampleSize=100).fit(three_points)


def test_clustering_config_keys_become_segmentae_params():
    from segae_spark.config import to_params, validate_config
    from segae_spark.pipeline import SegmentAE

    config = {"clustering": {"model": "gaussian_mixture", "n_clusters": "auto", "k_range": [2, 6], "sample_size": 5000, "runs": 1}}
    params = to_params(validate_config(config))
    assert params == {"clusterModel": "gaussian_mixture", "nClusters": "auto", "nClustersRange": [2, 6], "clusterSampleSize": 5000, "clusterRuns": 1}
    estimator = SegmentAE(**params)
    assert estimator.getOrDefault(estimator.nClusters) == "auto"
    assert SegmentAE().getOrDefault("nClustersRange") == [2, 10]
    with pytest.raises(ConfigError, match="nClusters .* got 'four'"):
        SegmentAE(nClusters="four")
    with pytest.raises(ConfigError, match="clustering.n_clusters"):
        validate_config({"clustering": {"n_clusters": 2.5}})


def test_only_known_segmenter_classes_load(spark, blobs, tmp_path):
    from pyspark.ml.feature import StandardScaler

    StandardScaler(inputCol="features", outputCol="s").fit(blobs).save(str(tmp_path / "scaler"))
    with pytest.raises(ArtifactError, match="StandardScalerModel.* not a segmenter"):
        load_segmenter(str(tmp_path / "scaler"))
    with pytest.raises(ArtifactError, match="no readable Spark ML metadata"):
        load_segmenter(str(tmp_path / "nothing here"))


def test_segmentae_with_a_sample_fitted_clusterer_and_auto_k(transactions, tmp_path):
    from segae_spark.pipeline import SegmentAE, SegmentAEModel

    model = SegmentAE(
        labelCol="is_fraud",
        clusterModel="agglomerative",
        nClusters="auto",
        nClustersRange=[2, 4],
        clusterSampleSize=1000,
        autoencoder={**FAST_AUTOENCODER, "epochs": 2},
        maxRowsPerSegment=500,
        minRowsPerSegment=50,
        seed=3,
    ).fit(transactions)
    clustering = model.artifact.training["clustering"]
    assert clustering["model"] == "agglomerative" and clustering["k_selection"]["chosen"] in (2, 3, 4)
    assert [s["segment"] for s in model.segment_summary()] == list(range(clustering["segments"]))
    scored = model.transform(transactions)
    assert scored.count() == transactions.count()
    model.save(str(tmp_path / "model"))
    loaded = SegmentAEModel.load(str(tmp_path / "model"))
    assert isinstance(loaded.artifact.segmenter, CentroidSegmenterModel)
    assert loaded.getOrDefault(loaded.nClusters) == "auto"
    pairs = lambda m: sorted(m.transform(transactions).select("transaction_id", "segment").collect())  # noqa: E731
    assert pairs(loaded) == pairs(model)
