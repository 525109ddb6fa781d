"""Every bad input gets one clear line naming the column, file or parameter (issue 6).

Each test feeds the `segae-spark` command (or, where a policy rather than an
error is the answer, the Python API) one kind of bad input and checks what the
user sees: exit code 2, exactly one stderr line, no traceback, and the name of
the offending thing. Training cases use a few hundred rows and one-epoch
autoencoders on the driver, or fail in validation before any training.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from segae_spark.cli import main
from segae_spark.compat import arrow_to_dataframe, to_arrow
from segae_spark.errors import ArtifactError

# Tiny but real: two segments, one epoch, trained on the driver.
TINY_CONFIG = """
clustering: {n_clusters: 2, runs: 1}
autoencoder: {hidden_layers: [4], epochs: 1, batch_size: 64}
training: {backend: local, min_rows_per_segment: 5, max_rows_per_segment: 200}
"""


# ----------------------------------------------------------------- helpers
def _cli(capsys, *argv: str) -> tuple[int, list[str]]:
    """Run the command quietly: (exit code, non-empty stderr lines)."""
    capsys.readouterr()
    code = main([*argv, "--quiet"])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def _user_error(capsys, *argv: str) -> str:
    """Run a command that must fail on its input; return its one error line."""
    code, lines = _cli(capsys, *argv)
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    assert lines[0].startswith(f"segae-spark {argv[0]}: error: "), lines[0]
    return lines[0]


def _score_error(capsys, model_dir, input_path, output_path) -> str:
    return _user_error(capsys, "score", "--model-dir", str(model_dir), "--input", str(input_path), "--output", str(output_path))


def _parquet(table: pa.Table, path: Path) -> str:
    """A Parquet table directory holding ``table`` (written by pyarrow: no Spark job)."""
    path.mkdir()
    pq.write_table(table, path / "part-00000.parquet")
    return str(path)


def _with(table: pa.Table, name: str, values) -> pa.Table:
    """``table`` with column ``name`` replaced by (or, if new, extended with) ``values``."""
    array = values if isinstance(values, pa.Array) else pa.array(values)
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, array)
    return table.append_column(name, array)


def _config(tmp_path: Path, text: str = TINY_CONFIG) -> str:
    path = tmp_path / "train.yaml"
    path.write_text(text)
    return str(path)


def _copy_model(saved_model_dir: str, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(saved_model_dir, target)
    return target


def _manifest(model_dir: Path) -> dict:
    return json.loads((model_dir / "manifest.json").read_text())


def _write_manifest(model_dir: Path, manifest: dict) -> None:
    (model_dir / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def sample(transactions) -> pa.Table:
    """60 transactions as a pyarrow Table (the scoring cases' input)."""
    return to_arrow(transactions.limit(60))


@pytest.fixture(scope="module")
def sample_path(sample, tmp_path_factory) -> str:
    """``sample`` as a Parquet table: a good input for the cases about a bad model directory."""
    return _parquet(sample, tmp_path_factory.mktemp("bad_input") / "sample")


@pytest.fixture(scope="module")
def small_train(transactions) -> pa.Table:
    """300 unlabelled transactions (the training cases' input)."""
    return to_arrow(transactions.limit(300).drop("is_fraud"))


# ------------------------------------------------------- 1. missing column
def test_feature_column_missing_at_scoring(saved_model_dir, sample, tmp_path, capsys):
    table = _parquet(sample.drop_columns(["amount"]), tmp_path / "in")
    line = _score_error(capsys, saved_model_dir, table, tmp_path / "out")
    assert "missing feature column(s) ['amount']" in line
    assert not (tmp_path / "out").exists()


# --------------------------------------------- 2. numbers held as strings
def test_numeric_column_holding_strings(saved_model_dir, sample, small_train, tmp_path, capsys):
    # Scoring: the model learned amount as a number; a string column is refused by name.
    table = _parquet(_with(sample, "amount", ["abc"] * sample.num_rows), tmp_path / "in")
    line = _score_error(capsys, saved_model_dir, table, tmp_path / "out")
    assert "amount: string (trained as double)" in line

    # Training: a column named numeric whose strings do not parse is refused, with an example value.
    amounts = [str(a) for a in small_train.column("amount").to_pylist()]
    amounts[7] = "abc"
    train = _parquet(_with(small_train, "amount", amounts), tmp_path / "train")
    config = _config(tmp_path, TINY_CONFIG + "features: {numeric: [amount, hour], categorical: [channel]}\n")
    line = _user_error(capsys, "train", "--input", train, "--model-dir", str(tmp_path / "m"), "--config", config)
    assert f"training input {train}" in line
    assert "numeric column 'amount' is a string column with 1 value(s) that are not numbers (e.g. 'abc')" in line


# --------------------------------------------------------- 3. NaN and inf
def test_nan_and_inf_are_scored_as_missing_values(spark, fitted_model, sample):
    """Policy (README, "Bad input"): NaN, +inf and -inf in a numeric column count as null and are imputed."""
    variants = {"null": None, "nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
    row = sample.slice(0, 1)
    table = pa.concat_tables(
        [_with(_with(row, "amount", pa.array([v], pa.float64())), "variant", [name]) for name, v in variants.items()]
    )
    scored = fitted_model.transform(arrow_to_dataframe(spark, table)).select("variant", "segment", "anomaly_score").collect()
    by_variant = {r["variant"]: r for r in scored}
    assert set(by_variant) == set(variants)
    for name in ("nan", "inf", "-inf"):
        assert math.isfinite(by_variant[name]["anomaly_score"])
        assert by_variant[name]["segment"] == by_variant["null"]["segment"]
        assert by_variant[name]["anomaly_score"] == by_variant["null"]["anomaly_score"]


def test_a_column_of_only_nan_and_inf_is_unusable_for_training(spark):
    from segae_spark.errors import SchemaError
    from segae_spark.features.casting import FeatureCaster

    df = spark.createDataFrame(
        [(float("nan"), 1.0), (float("inf"), 2.0), (float("-inf"), 3.0), (None, 4.0)], "broken double, fine double"
    )
    caster = FeatureCaster(numericCols=["broken", "fine"], numericOutputCols=["b", "f"])
    with pytest.raises(SchemaError, match="numeric column 'broken' is entirely null") as raised:
        caster.fit(df)
    assert "'fine'" not in str(raised.value)


# -------------------------------------------------- 4. all-null column
def test_all_null_column_at_training(small_train, tmp_path, capsys):
    rows = small_train.num_rows
    table = _with(_with(small_train, "empty_num", pa.nulls(rows, pa.float64())), "empty_cat", pa.nulls(rows, pa.string()))
    train = _parquet(table, tmp_path / "train")
    line = _user_error(capsys, "train", "--input", train, "--model-dir", str(tmp_path / "m"), "--config", _config(tmp_path))
    assert "numeric column 'empty_num' is entirely null" in line
    assert "categorical column 'empty_cat' is entirely null" in line
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------- 5. empty table
def test_empty_table_at_training_is_refused(small_train, tmp_path, capsys):
    train = _parquet(small_train.slice(0, 0), tmp_path / "train")
    line = _user_error(capsys, "train", "--input", train, "--model-dir", str(tmp_path / "m"), "--config", _config(tmp_path))
    assert f"training input {train}: the training data has 0 rows; need at least 2" in line


def test_empty_table_at_scoring_writes_an_empty_output(saved_model_dir, sample, tmp_path, capsys):
    """Policy: an empty input (a quiet day) scores to an empty output table, not an error."""
    table = _parquet(sample.slice(0, 0), tmp_path / "in")
    out = tmp_path / "out"
    code, lines = _cli(capsys, "score", "--model-dir", saved_model_dir, "--input", table, "--output", str(out))
    assert code == 0 and not lines, lines
    scored = DeltaTable(str(out)).to_pyarrow_table()
    assert scored.num_rows == 0
    assert {"segment", "anomaly_score", "threshold", "is_anomaly"} <= set(scored.column_names)


# ------------------------------------------------------ 6. unseen category
def test_unseen_category_is_scored_by_the_encoders_policy(spark, fitted_model, saved_model_dir, sample, tmp_path, capsys):
    """Policy: a category training never saw goes to the one-hot ``__other__`` slot and is scored."""
    rows = sample.num_rows
    new = _with(_with(sample, "channel", ["teleport"] * rows), "merchant_category", ["spaceship"] * rows)
    counts = fitted_model.unseen_categories(arrow_to_dataframe(spark, new))
    assert counts == {"merchant_category": rows, "channel": rows, "country": 0, "card_type": 0}
    out = tmp_path / "out"
    code, lines = _cli(capsys, "score", "--model-dir", saved_model_dir, "--input", _parquet(new, tmp_path / "in"), "--output", str(out))
    assert code == 0 and not lines, lines
    scored = DeltaTable(str(out)).to_pandas()
    assert len(scored) == rows
    assert np.isfinite(scored["anomaly_score"]).all()


# ----------------------------------------------------- 7. constant column
def test_constant_column_is_kept_with_a_warning_naming_it(spark, small_train):
    """Policy: a constant column trains (scale 1, so a new value still shows) and a warning names it."""
    from segae_spark.features.preprocessing import build_preprocessing
    from segae_spark.features.scalers import ColumnScalerModel
    from segae_spark.features.schema import resolve_features

    df = arrow_to_dataframe(spark, _with(small_train, "constant", [5.0] * small_train.num_rows))
    spec = resolve_features(df.schema, exclude=["transaction_id", "event_date"])
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    library = logging.getLogger("segae_spark")
    library.addHandler(handler)
    try:
        model = build_preprocessing(spec).fit(df)  # what SegmentAE.fit fits first
    finally:
        library.removeHandler(handler)
    warnings = [r.getMessage() for r in records]
    assert len(warnings) == 1 and "feature column 'constant' is constant (every value 5.0)" in warnings[0], warnings
    # Sane: the training value maps to 0 and another value shows (Spark's scalers would give 0.5 for both).
    scaler = next(s for s in model.stages if isinstance(s, ColumnScalerModel))
    i = scaler.getInputCols().index("__segae_imp_constant")
    assert (scaler.offset_[i], scaler.scale_[i]) == (5.0, 1.0)


# ------------------------------------------- 8. one class in evaluation
def test_label_with_one_class_in_evaluation(spark, saved_model_dir, sample, tmp_path, capsys):
    """Policy: metrics are computed, ROC-AUC / PR-AUC are null, and a warning names the label column."""
    rows = sample.num_rows
    table = _parquet(_with(sample, "is_fraud", pa.array([0] * rows, pa.int32())), tmp_path / "in")
    metrics = tmp_path / "metrics.json"
    code, lines = _cli(
        capsys, "evaluate", "--model-dir", saved_model_dir, "--input", table, "--label-col", "is_fraud", "--json", str(metrics)
    )
    assert code == 0
    assert len(lines) == 1 and "WARNING label column 'is_fraud' holds one class only" in lines[0], lines
    result = json.loads(metrics.read_text())
    assert result["global"]["roc_auc"] is None and result["global"]["pr_auc"] is None
    assert result["global"]["rows"] == rows

    # No labelled row at all is an error: there is nothing to measure.
    from segae_spark.errors import SchemaError
    from segae_spark.evaluation import evaluate

    scored = spark.createDataFrame(
        [(0, 0.1, 0.5, 0, None), (1, 0.9, 0.5, 1, None)], "segment int, anomaly_score double, threshold double, is_anomaly int, is_fraud int"
    )
    with pytest.raises(SchemaError, match="label column 'is_fraud' has no labelled rows"):
        evaluate(scored, "is_fraud")


# --------------------------------------------- 9. more clusters than rows
def test_more_clusters_than_training_rows(small_train, tmp_path, capsys):
    train = _parquet(small_train.slice(0, 5), tmp_path / "train")
    config = _config(tmp_path, TINY_CONFIG.replace("n_clusters: 2", "n_clusters: 10"))
    line = _user_error(capsys, "train", "--input", train, "--model-dir", str(tmp_path / "m"), "--config", config)
    assert "nClusters (config clustering.n_clusters) = 10, more than the training data's 5 rows" in line


# ---------------------------------------------- 10. missing / bad manifest
def test_model_directory_without_manifest(saved_model_dir, sample_path, tmp_path, capsys):
    model = _copy_model(saved_model_dir, tmp_path)
    (model / "manifest.json").unlink()
    line = _score_error(capsys, model, sample_path, tmp_path / "out")
    assert f"{model} is not a segae-spark model directory: manifest.json not found" in line


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda m: "{ this is not json", "manifest.json is not valid JSON"),
        (lambda m: json.dumps(["a", "list"]), "manifest.json must hold a JSON object"),
        (lambda m: json.dumps({k: v for k, v in m.items() if k not in ("models", "checksums")}), "lacks key(s) ['checksums', 'models']"),
        (lambda m: json.dumps({**m, "segments": "three"}), "key 'segments' must be a list"),
        (lambda m: json.dumps({**m, "features": {"numeric": []}}), "features lacks key(s) ['categorical', 'names']"),
    ],
    ids=["not-json", "not-an-object", "missing-keys", "wrong-type", "missing-feature-keys"],
)
def test_model_directory_with_corrupted_manifest(saved_model_dir, sample_path, tmp_path, capsys, damage, expected):
    model = _copy_model(saved_model_dir, tmp_path)
    (model / "manifest.json").write_text(damage(_manifest(model)))
    line = _score_error(capsys, model, sample_path, tmp_path / "out")
    assert expected in line and str(model) in line


# ---------------------------------------------------- 11. checksum mismatch
def test_weights_file_with_wrong_checksum(saved_model_dir, sample_path, tmp_path, capsys):
    model = _copy_model(saved_model_dir, tmp_path)
    weights = sorted((model / "models").glob("*.npz"))[0]
    weights.write_bytes(weights.read_bytes() + b"tampered")
    line = _score_error(capsys, model, sample_path, tmp_path / "out")
    assert f"models/{weights.name}" in line and "checksum" in line


# ------------------------------------------------ 12. another schema
def test_model_trained_on_another_schema(saved_model_dir, sample, tmp_path, capsys):
    other = _parquet(pa.table({"id": [1], "value": [2.0], "kind": ["x"]}), tmp_path / "other")
    line = _score_error(capsys, saved_model_dir, other, tmp_path / "out")
    assert "missing feature column(s) ['amount', 'hour', 'distance_from_home'" in line

    retyped = _parquet(_with(sample, "hour", [dt.date(2024, 1, 1)] * sample.num_rows), tmp_path / "retyped")
    line = _score_error(capsys, saved_model_dir, retyped, tmp_path / "out")
    assert "hour: date (trained as int)" in line


# ------------------------------------------------ 13. newer format version
def test_artifact_of_a_newer_format_version(saved_model_dir, sample_path, tmp_path, capsys):
    model = _copy_model(saved_model_dir, tmp_path)
    manifest = _manifest(model)
    manifest["format_version"] += 1
    _write_manifest(model, manifest)
    line = _score_error(capsys, model, sample_path, tmp_path / "out")
    assert f"{model} has model format version {manifest['format_version']}" in line and "reads up to" in line


# ---------------------------------------------- 14. input that is no table
def test_input_path_that_is_not_a_table(saved_model_dir, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a table\n")
    line = _score_error(capsys, saved_model_dir, text, tmp_path / "out")
    assert f"{text} is not a table" in line

    empty = tmp_path / "empty"
    empty.mkdir()
    line = _score_error(capsys, saved_model_dir, empty, tmp_path / "out")
    assert f"{empty} is a directory with no _delta_log and no .parquet or .csv files" in line

    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet at all\n")
    line = _score_error(capsys, saved_model_dir, fake, tmp_path / "out")
    assert str(fake) in line and "cannot be read as parquet" in line

    missing = tmp_path / "nowhere"
    line = _score_error(capsys, saved_model_dir, missing, tmp_path / "out")
    assert f"no table at {missing}" in line


# ---------------------------------------------- 15. output == input
def test_output_path_equal_to_input_path(saved_model_dir, sample, tmp_path, capsys):
    table = _parquet(sample, tmp_path / "in")
    before = sorted(os.listdir(table))
    line = _score_error(capsys, saved_model_dir, table, table)
    assert f"output {table} is the input table" in line
    line = _score_error(capsys, saved_model_dir, table, os.path.join(table, "scored"))
    assert "inside the input" in line
    assert sorted(os.listdir(table)) == before


# --------------------------------------------- 16. unknown config key
def test_config_file_with_an_unknown_key(tmp_path, capsys):
    config = _config(tmp_path, TINY_CONFIG + "treshold: {ratio: 2.0}\n")
    line = _user_error(capsys, "train", "--input", str(tmp_path / "in"), "--model-dir", str(tmp_path / "m"), "--config", config)
    assert config in line and "unknown config key 'treshold'" in line

    score_config = tmp_path / "score.yaml"
    score_config.write_text("score: {model_dir: m, input: i, output: o, partition: day}\n")
    line = _user_error(capsys, "score", "--config", str(score_config))
    assert str(score_config) in line and "unknown config key 'score.partition'" in line


# ------------------------------------------------- 17. safe artifacts
def _pickle_bomb_npz(arrays: dict[str, np.ndarray], victim: str, marker: Path) -> bytes:
    """``arrays`` with ``victim`` replaced by an object array whose unpickling creates ``marker``."""

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    bomb = np.empty(1, dtype=object)
    bomb[0] = Payload()
    buffer = io.BytesIO()
    np.savez(buffer, **{**arrays, victim: bomb})  # savez pickles object arrays
    return buffer.getvalue()


@pytest.mark.parametrize("target", ["weights", "train_errors"])
def test_pickle_payload_in_a_model_directory_is_never_loaded(saved_model_dir, sample_path, tmp_path, capsys, target):
    from segae_spark.pipeline import SegmentAEModel

    model = _copy_model(saved_model_dir, tmp_path)
    path = sorted((model / "models").glob("*.npz"))[0] if target == "weights" else model / "train_errors.npz"
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    victim = sorted(arrays)[-1]

    # The payload is live: loading it with pickle allowed runs it.
    control = tmp_path / "control-marker"
    with np.load(io.BytesIO(_pickle_bomb_npz(arrays, victim, control)), allow_pickle=True) as archive:
        archive[victim]
    assert control.exists()

    marker = tmp_path / "pwned-marker"
    blob = _pickle_bomb_npz(arrays, victim, marker)
    path.write_bytes(blob)
    manifest = _manifest(model)
    relative = path.relative_to(model).as_posix()
    manifest["checksums"][relative] = hashlib.sha256(blob).hexdigest()  # the checksum check passes
    _write_manifest(model, manifest)

    with pytest.raises(ArtifactError, match=f"{relative}.*pickle"):
        SegmentAEModel.load(str(model))
    line = _score_error(capsys, model, sample_path, tmp_path / "out")
    assert relative in line and "pickle" in line
    assert not marker.exists()
