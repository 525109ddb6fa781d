"""Category encoders: values, unseen categories, the one-hot cap, persistence."""

import numpy as np
import pytest
from pyspark.ml.functions import vector_to_array

from segae_spark.errors import ConfigError, SchemaError
from segae_spark.features.encoders import (
    CappedOneHotEncoder,
    CappedOneHotEncoderModel,
    InverseFrequencyEncoder,
    InverseFrequencyEncoderModel,
    LabelEncoder,
    LabelEncoderModel,
    category_encoder,
)

# channel: web x5, shop x3, atm x1, app x1, null x1 -> 11 rows; "app" < "atm" breaks the tie.
CHANNELS = ["web"] * 5 + ["shop"] * 3 + ["atm", "app", None]


@pytest.fixture(scope="module")
def train(spark):
    rows = [(i, channel, "k" if i % 2 else "j") for i, channel in enumerate(CHANNELS)]
    return spark.createDataFrame(rows, "id int, channel string, kind string")


@pytest.fixture(scope="module")
def later(spark):
    rows = [(0, "web", "j"), (1, "app", "j"), (2, "teleport", "j"), (3, "teleport", "zz"), (4, None, "k")]
    return spark.createDataFrame(rows, "id int, channel string, kind string")


def _encoded(model, df):
    """(channel, kind) encodings of each row of ``df``, in id order, from one collect."""
    out = model.transform(df).orderBy("id")
    if isinstance(model, CappedOneHotEncoderModel):
        return [tuple(list(v) for v in r) for r in out.select(vector_to_array("e_channel"), vector_to_array("e_kind")).collect()]
    return [tuple(r) for r in out.select("e_channel", "e_kind").collect()]


def _channel(model, df):
    return [channel for channel, _ in _encoded(model, df)]


def _fit(encoder_class, train, **kw):
    return encoder_class(inputCols=["channel", "kind"], outputCols=["e_channel", "e_kind"], **kw).fit(train)


def test_inverse_frequency_follows_segmentae(train, later):
    model = _fit(InverseFrequencyEncoder, train)
    # SegmentAE (atlantic's AutoIFrequencyEncoder): log1p(len(X) / count); an unseen
    # category counts as the rarest training category.
    rows = len(CHANNELS)
    expected = {"web": np.log1p(rows / 5), "shop": np.log1p(rows / 3), "app": np.log1p(rows / 1), "atm": np.log1p(rows / 1)}
    assert model.rows_ == rows
    assert model.categories_[0] == ["web", "shop", "app", "atm"] and model.counts_[0] == [5, 3, 1, 1]
    assert _channel(model, train)[:10] == [expected[c] for c in CHANNELS[:10]]
    assert expected["atm"] > expected["shop"] > expected["web"]  # the rare stand out
    unseen = np.log1p(rows / 1)
    assert _channel(model, later) == [expected["web"], expected["app"], unseen, unseen, unseen]  # null: as unseen


def test_label_codes_rank_by_frequency_and_reserve_one_for_unseen(train, later):
    model = _fit(LabelEncoder, train)
    assert _channel(model, train)[:10] == [0.0] * 5 + [1.0] * 3 + [3.0, 2.0]  # app=2, atm=3: tie by value
    assert _channel(model, later) == [0.0, 2.0, 4.0, 4.0, 4.0]  # 4 = len(categories_)


def test_one_hot_folds_rare_categories_into_other(train, later):
    model = _fit(CappedOneHotEncoder, train, maxCategories=2)
    assert model.feature_names(["channel", "kind"]) == [
        "channel=web", "channel=shop", "channel=__other__", "kind=j", "kind=k", "kind=__other__",
    ]
    web, shop, other = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
    assert _channel(model, train)[:10] == [web] * 5 + [shop] * 3 + [other, other]  # atm, app folded
    j, k = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    assert _encoded(model, later) == [(web, j), (other, j), (other, j), (other, other), (other, k)]


def test_unseen_counts_per_column(train, later):
    for encoder in (LabelEncoder, InverseFrequencyEncoder, CappedOneHotEncoder):
        # "app" is folded into __other__ by the one-hot cap but was seen: not counted.
        model = _fit(encoder, train, **({"maxCategories": 1} if encoder is CappedOneHotEncoder else {}))
        assert model.unseen_counts(later) == {"channel": 2, "kind": 1}  # nulls are not unseen values
    assert model.unseen_counts(train) == {"channel": 0, "kind": 0}


@pytest.mark.parametrize("kind", ["one_hot", "label", "inverse_frequency"])
def test_sql_case_and_python_lookup_encode_alike(train, later, monkeypatch, kind):
    """Small tables are encoded by a CASE in the JVM, large ones by the pandas UDF: same values either way."""
    import segae_spark.features.encoders as encoders

    model = category_encoder(kind, ["channel", "kind"], ["e_channel", "e_kind"], max_categories=3).fit(train)
    in_sql = _encoded(model, later) + _encoded(model, train)
    for limit in (0, 1):  # 0: every column through Python; 1: columns split between the two paths
        monkeypatch.setattr(encoders, "JVM_LOOKUP_MAX_CATEGORIES", limit)
        assert _encoded(model, later) + _encoded(model, train) == in_sql
    plan = model.transform(later)._jdf.queryExecution().optimizedPlan().toString()
    assert "BatchEvalPython" in plan or "ArrowEvalPython" in plan  # the limit of 0 did send it through Python
    monkeypatch.undo()
    plan = model.transform(later)._jdf.queryExecution().optimizedPlan().toString()
    assert "ArrowEvalPython" not in plan and "BatchEvalPython" not in plan


@pytest.mark.parametrize("kind", ["one_hot", "label", "inverse_frequency"])
def test_models_round_trip_through_save_and_load(train, later, tmp_path, kind):
    model = category_encoder(kind, ["channel", "kind"], ["e_channel", "e_kind"], max_categories=2).fit(train)
    model.save(str(tmp_path / kind))
    loaded = type(model).load(str(tmp_path / kind))
    assert loaded.uid == model.uid
    assert (loaded.categories_, loaded.counts_, loaded.rows_) == (model.categories_, model.counts_, model.rows_)
    assert _encoded(loaded, later) == _encoded(model, later)


def test_model_classes_match_the_kind(train):
    assert isinstance(category_encoder("label", ["kind"], ["e"], 5).fit(train), LabelEncoderModel)
    assert isinstance(category_encoder("inverse_frequency", ["kind"], ["e"], 5).fit(train), InverseFrequencyEncoderModel)


def test_errors_name_the_problem(spark, train):
    with pytest.raises(ConfigError, match="encoder must be one of"):
        category_encoder("target", ["kind"], ["e"], 5)
    with pytest.raises(ConfigError, match="maxCategories must be >= 1"):
        CappedOneHotEncoder(inputCols=["kind"], outputCols=["e"], maxCategories=0).fit(train)
    with pytest.raises(SchemaError, match="nope"):
        LabelEncoder(inputCols=["nope"], outputCols=["e"]).fit(train)
    nulls = spark.createDataFrame([(1, None), (2, None)], "id int, c string")
    with pytest.raises(SchemaError, match=r"\['c'\] are entirely null"):
        InverseFrequencyEncoder(inputCols=["c"], outputCols=["e"]).fit(nulls)


def test_identifier_like_columns_are_refused(train, monkeypatch):
    monkeypatch.setattr("segae_spark.features.frequencies.MAX_DISTINCT_CATEGORIES", 3)
    with pytest.raises(SchemaError, match=r"\['channel'\] have more than 3 distinct values"):
        _fit(LabelEncoder, train)
