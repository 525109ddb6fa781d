"""The synthetic transaction generator: schema, determinism, realism, validation."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, DoubleType, IntegerType, StringType

from segae_spark.data import generate_transactions
from segae_spark.errors import ConfigError

EXPECTED_SCHEMA = [
    ("transaction_id", StringType()),
    ("event_date", DateType()),
    ("merchant_category", StringType()),
    ("channel", StringType()),
    ("country", StringType()),
    ("card_type", StringType()),
    ("amount", DoubleType()),
    ("hour", IntegerType()),
    ("distance_from_home", DoubleType()),
    ("txn_count_24h", IntegerType()),
    ("account_age_days", IntegerType()),
    ("is_fraud", IntegerType()),
]
ROWS = 20_000


@pytest.fixture(scope="module")
def txns(spark):
    """20k rows with 5% fraud, collected once: most checks read the pandas copy."""
    return generate_transactions(spark, ROWS, seed=11, fraud_rate=0.05, start_date="2023-12-30", days=5).toPandas()


def test_schema_is_exact(spark):
    df = generate_transactions(spark, 10)
    assert [(f.name, f.dataType) for f in df.schema.fields] == EXPECTED_SCHEMA


def test_generated_in_the_jvm_without_python_udfs(spark):
    plan = generate_transactions(spark, 10)._jdf.queryExecution().executedPlan().toString()
    assert "EvalPython" not in plan and "MapInPandas" not in plan


def test_transaction_ids_are_unique(txns):
    assert txns.transaction_id.is_unique
    assert txns.transaction_id.str.match(r"^T\d{12}$").all()


def test_same_seed_gives_same_rows_whatever_the_partitioning(spark):
    one = generate_transactions(spark, 3_000, seed=5, num_partitions=1)
    seven = generate_transactions(spark, 3_000, seed=5, num_partitions=7)
    assert one.rdd.getNumPartitions() == 1 and seven.rdd.getNumPartitions() == 7
    assert one.exceptAll(seven).count() == 0 and seven.exceptAll(one).count() == 0
    assert sorted(one.collect()) == sorted(seven.collect())


def test_different_seed_gives_different_rows(spark):
    a = generate_transactions(spark, 1_000, seed=1).drop("transaction_id")
    b = generate_transactions(spark, 1_000, seed=2).drop("transaction_id")
    assert a.exceptAll(b).count() > 990


def test_fraud_share_follows_fraud_rate(spark, txns):
    assert txns.is_fraud.isin([0, 1]).all()
    assert txns.is_fraud.mean() == pytest.approx(0.05, abs=0.006)
    counts = generate_transactions(spark, 5_000, fraud_rate=0.0).agg(F.sum("is_fraud")).first()[0]
    assert counts == 0


def test_nulls_only_in_the_named_columns(txns):
    share = txns.isna().mean()
    assert share["distance_from_home"] == pytest.approx(0.02, abs=0.005)
    assert share["country"] == pytest.approx(0.01, abs=0.004)
    assert share["account_age_days"] == pytest.approx(0.01, abs=0.004)
    others = share.drop(["distance_from_home", "country", "account_age_days"])
    assert (others == 0).all()


def test_values_are_in_range(txns):
    assert (txns.amount > 0).all()
    assert (txns.amount.round(2) == txns.amount).all()
    assert txns.hour.between(0, 23).all()
    assert (txns.distance_from_home.dropna() >= 0).all()
    assert (txns.txn_count_24h >= 0).all()
    assert (txns.account_age_days.dropna() >= 0).all()
    first, last = dt.date(2023, 12, 30), dt.date(2024, 1, 3)
    assert set(txns.event_date) == {first + dt.timedelta(days=d) for d in range((last - first).days + 1)}


def test_categorical_domains(txns):
    assert set(txns.channel) == {"online", "in_store", "contactless", "atm"}
    assert set(txns.card_type) == {"debit", "credit", "premium", "business"}
    assert txns.merchant_category.nunique() == 10
    countries = txns.country.dropna()
    assert countries.nunique() == 8
    assert (countries == "US").mean() > 0.8


def test_segments_show_in_the_columns(txns):
    normal = txns[txns.is_fraud == 0]
    median_amount = normal.groupby("card_type").amount.median()
    # Business cards belong to travellers: large amounts, mostly abroad.
    assert median_amount["business"] > 5 * median_amount["debit"]
    abroad = normal.country.fillna("US") != "US"
    assert abroad[normal.card_type == "business"].mean() > 0.4
    assert abroad[normal.card_type == "debit"].mean() < 0.1
    # Online is a habit of some customers: young accounts shop online far more often.
    online = normal.channel == "online"
    young = normal.account_age_days < 500
    old = normal.account_age_days > 5000
    assert online[young].mean() > 3 * online[old].mean()


def test_frauds_are_unusual_for_their_group(txns):
    # Within each card type, frauds' log amounts sit far more often in the tails.
    log_amount = np.log(txns.amount)
    stats = log_amount[txns.is_fraud == 0].groupby(txns.card_type).agg(["mean", "std"])
    z = ((log_amount - txns.card_type.map(stats["mean"])) / txns.card_type.map(stats["std"])).abs()
    assert z[txns.is_fraud == 1].mean() > 2 * z[txns.is_fraud == 0].mean()
    assert (z[txns.is_fraud == 1] > 2.5).mean() > 10 * (z[txns.is_fraud == 0] > 2.5).mean()


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        ({"rows": 0}, "rows"),
        ({"rows": 2.5}, "rows"),
        ({"fraud_rate": 0.5}, "fraud_rate"),
        ({"fraud_rate": -0.01}, "fraud_rate"),
        ({"days": 0}, "days"),
        ({"start_date": "2024-13-01"}, "start_date"),
        ({"start_date": "yesterday"}, "start_date"),
        ({"num_partitions": 0}, "num_partitions"),
        ({"seed": "42"}, "seed"),
    ],
)
def test_bad_arguments_raise_config_error(spark, kwargs, parameter):
    args = {"rows": 10, **kwargs}
    with pytest.raises(ConfigError, match=parameter):
        generate_transactions(spark, **args)
