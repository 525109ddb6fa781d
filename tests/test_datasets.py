"""Benchmark dataset loaders and the SegmentAE evaluation protocol.

Tests on the real files skip when ../shared/datasets is absent; the others
write tiny files of the same layouts into a temporary folder.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from segae_spark.data.datasets import (
    DATASETS,
    DEFAULT_ROOT,
    NSL_KDD_COLUMNS,
    benchmark_pandas,
    feature_columns,
    load_dataset,
    protocol_ids,
    protocol_split,
    read_pandas,
)
from segae_spark.errors import ConfigError, TableNotFoundError

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), DEFAULT_ROOT)
needs_data = pytest.mark.skipif(not os.path.isdir(ROOT), reason=f"benchmark datasets not found at {ROOT}")


# ---------------------------------------------------------------- errors
def test_unknown_name_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match="unknown dataset 'nope'.*htru2"):
        load_dataset(None, "nope")


def test_split_only_for_nsl_kdd(tmp_path):
    with pytest.raises(ConfigError, match="nsl_kdd split"):
        read_pandas("nsl_kdd", str(tmp_path), split="valid")
    with pytest.raises(ConfigError, match="takes no split"):
        read_pandas("htru2", str(tmp_path), split="test")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(TableNotFoundError, match=r"32_shuttle\.npz"):
        read_pandas("shuttle", str(tmp_path))
    with pytest.raises(TableNotFoundError, match=r"KDDTest\+\.txt"):
        read_pandas("nsl_kdd", str(tmp_path), split="test")


# ---------------------------------------------------------------- file layouts (tiny copies)
def test_htru2_with_cr_line_endings(tmp_path):
    (tmp_path / "htru2").mkdir()
    rows = ["1.5,2.5,0", "3.5,4.5,1", "5.5,6.5,0"]
    (tmp_path / "htru2" / "HTRU_2.csv").write_bytes(('"IP_Mean","DM-SNR_Mean","class"\r\n' + "\r".join(rows)).encode())
    pdf, label = read_pandas("htru2", str(tmp_path))
    assert label == "class"
    assert list(pdf.columns) == ["id", "IP_Mean", "DM_SNR_Mean", "class"]
    assert pdf["id"].tolist() == [0, 1, 2] and pdf["class"].tolist() == [0, 1, 0]
    assert pdf["DM_SNR_Mean"].tolist() == [2.5, 4.5, 6.5]


def test_nsl_kdd_layout(tmp_path):
    (tmp_path / "nsl_kdd").mkdir()
    features = ["0", "tcp", "http", "SF"] + ["1"] * 37
    lines = [",".join(features + [attack, "20"]) for attack in ("normal", "neptune", "normal")]
    (tmp_path / "nsl_kdd" / "KDDTest+.txt").write_text("\n".join(lines) + "\n")
    pdf, label = read_pandas("nsl_kdd", str(tmp_path), split="test")
    assert len(NSL_KDD_COLUMNS) == 41
    assert list(pdf.columns) == ["id", *NSL_KDD_COLUMNS, "label"]
    assert pdf[label].tolist() == [0, 1, 0]
    assert pdf["service"].tolist() == ["http"] * 3 and pdf["dst_host_srv_rerror_rate"].tolist() == [1] * 3


def test_adbench_npz_layout(tmp_path):
    (tmp_path / "adbench").mkdir()
    np.savez(tmp_path / "adbench" / "6_cardio.npz", X=np.arange(12, dtype=np.uint8).reshape(4, 3), y=np.array([0, 1, 0, 0]))
    pdf, label = read_pandas("cardio", str(tmp_path))
    assert label == "y" and list(pdf.columns) == ["id", "x0", "x1", "x2", "y"]
    assert pdf["x2"].dtype == np.float64 and pdf["x2"].tolist() == [2.0, 5.0, 8.0, 11.0]


# ---------------------------------------------------------------- the protocol
def test_protocol_ids_sizes_disjoint_deterministic():
    rng = np.random.default_rng(0)
    ids = rng.permutation(1000) + 10
    labels = (rng.random(1000) < 0.1).astype(int)
    train, test = protocol_ids(ids, labels)
    normals, anomalies = int((labels == 0).sum()), int(labels.sum())
    assert len(train) == int(0.75 * normals)
    assert len(test) == normals - len(train) + anomalies
    assert not set(train) & set(test)
    assert set(train) | set(test) == set(ids)
    assert set(ids[labels == 1]) <= set(test) and not set(ids[labels == 1]) & set(train)
    again = protocol_ids(ids[::-1], labels[::-1])  # input order does not matter
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert not np.array_equal(train, protocol_ids(ids, labels, seed=1)[0])


def test_protocol_split_in_spark(spark):
    import pandas as pd

    pdf = pd.DataFrame({"id": np.arange(200), "v": np.arange(200) * 0.5, "y": (np.arange(200) % 10 == 0).astype(int)})
    df = spark.createDataFrame(pdf).repartition(3)
    train, test = protocol_split(df, "y")
    train_ids = sorted(r[0] for r in train.select("id").collect())
    test_ids = sorted(r[0] for r in test.select("id").collect())
    expected = protocol_ids(pdf["id"].to_numpy(), pdf["y"].to_numpy())
    assert train_ids == expected[0].tolist() and test_ids == expected[1].tolist()
    assert len(train_ids) == 135 and len(test_ids) == 45 + 20
    assert train.filter("y = 1").count() == 0


# ---------------------------------------------------------------- the real files
@needs_data
@pytest.mark.parametrize(
    "name, split, rows, features, anomalies",
    [
        ("nsl_kdd", "train", 25_192, 41, 11_743),
        ("nsl_kdd", "test", 22_544, 41, 12_833),
        ("htru2", None, 17_898, 8, 1_639),
        ("default_credit_card", None, 30_000, 23, 6_636),
        ("cardio", None, 1_831, 21, 176),
        ("shuttle", None, 49_097, 9, 3_511),
    ],
)
def test_documented_counts(name, split, rows, features, anomalies):
    pdf, label = read_pandas(name, ROOT, split)
    assert len(pdf) == rows
    assert len(feature_columns(pdf.columns, label)) == features
    assert int(pdf[label].sum()) == anomalies
    assert pdf["id"].tolist() == list(range(rows))


@needs_data
def test_load_dataset_spark_types(spark):
    df, label = load_dataset(spark, "default_credit_card", ROOT)
    types = dict(df.dtypes)
    assert label == "default_payment_next_month" and types[label] == "int"
    assert types["SEX"] == types["EDUCATION"] == types["MARRIAGE"] == "string"
    assert "ID" not in types and types["id"] == "bigint"
    assert df.count() == 30_000


@needs_data
def test_protocol_on_real_data(spark):
    df, label = load_dataset(spark, "cardio", ROOT)
    train, test = protocol_split(df, label)
    assert (train.count(), test.count()) == (1_241, 590)
    assert test.filter(f"{label} = 1").count() == 176
    pd_train, pd_test, _ = benchmark_pandas("cardio", ROOT)
    assert sorted(r[0] for r in train.select("id").collect()) == pd_train["id"].tolist()
    assert sorted(r[0] for r in test.select("id").collect()) == pd_test["id"].tolist()
    # NSL-KDD: every normal of the train file trains, the whole test file tests.
    kdd_train, kdd_test, kdd_label = benchmark_pandas("nsl_kdd", ROOT)
    assert (len(kdd_train), len(kdd_test), int(kdd_train[kdd_label].sum())) == (13_449, 22_544, 0)


def test_dataset_names():
    assert len(DATASETS) == 11 and DATASETS[0] == "nsl_kdd"
