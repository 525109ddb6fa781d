"""Dense autoencoder (Keras, for training) and its numpy twin (for scoring)."""

from __future__ import annotations

import io
import json
import logging
import math
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from segae_spark.errors import ArtifactError, ConfigError
from segae_spark.models import (
    ACTIVATIONS,
    DENSE_ACTIVATIONS,
    THRESHOLD_METRICS,
    DenseAutoencoderConfig,
    NumpyAutoencoder,
    build_dense_autoencoder,
    feature_errors,
    row_errors,
    train_autoencoder,
)

keras = pytest.importorskip("keras")

ATOL = 1e-5  # the design's bound between the numpy engine and Keras


def _randomise_biases(model, seed: int = 0) -> None:
    """Keras starts biases at zero; random ones make the comparison meaningful."""
    rng = np.random.default_rng(seed)
    weights = model.get_weights()
    model.set_weights([w if w.ndim == 2 else rng.normal(0, 0.5, w.shape).astype("float32") for w in weights])


def _rows(n: int = 300, d: int = 7, seed: int = 1, scale: float = 2.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, d)) * scale).astype(np.float32)


# --------------------------------------------------------------- import cost
def test_scoring_modules_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "import segae_spark.models.numpy_engine, segae_spark.models.reconstruction, segae_spark.models\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"imported: {done.stdout} {done.stderr}"


def test_every_config_activation_is_computed_by_the_numpy_engine():
    assert {"silu" if a == "swish" else a for a in DENSE_ACTIVATIONS} <= set(ACTIVATIONS)


# -------------------------------------------------------------------- config
def test_config_round_trips_through_json():
    config = DenseAutoencoderConfig(hidden_layers=(12, 6, 3), activation="tanh", dropout=0.1, epochs=7)
    d = json.loads(json.dumps(config.to_dict()))
    assert d["hidden_layers"] == [12, 6, 3]
    assert DenseAutoencoderConfig.from_dict(d) == config
    assert DenseAutoencoderConfig.from_dict({}) == DenseAutoencoderConfig()


def test_config_normalises_json_types():
    config = DenseAutoencoderConfig.from_dict({"hidden_layers": [8, 4], "learning_rate": 1, "l2": 0})
    assert config.hidden_layers == (8, 4)
    assert isinstance(config.learning_rate, float) and config.learning_rate == 1.0


def test_config_names_unknown_keys():
    with pytest.raises(ConfigError, match=r"epoch.*hidden_layer") as info:
        DenseAutoencoderConfig.from_dict({"hidden_layer": [8], "epoch": 3})
    assert "hidden_layers" in str(info.value)  # the allowed keys are listed


@pytest.mark.parametrize(
    "key, value",
    [
        ("hidden_layers", []),
        ("hidden_layers", [16, 0]),
        ("hidden_layers", "32,16"),
        ("hidden_layers", [8.5]),
        ("activation", "mish"),
        ("output_activation", "softmax"),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("l2", -1e-4),
        ("l2", float("nan")),
        ("learning_rate", 0),
        ("epochs", 0),
        ("epochs", True),
        ("batch_size", 2.5),
        ("validation_split", 1.0),
        ("early_stopping_patience", -1),
    ],
)
def test_config_rejects_bad_values_naming_the_parameter(key, value):
    with pytest.raises(ConfigError, match=key):
        DenseAutoencoderConfig.from_dict({key: value})


def test_config_validates_direct_construction_too():
    with pytest.raises(ConfigError, match="batch_size"):
        DenseAutoencoderConfig(batch_size=0)


# ---------------------------------------------------------- build / engine
def test_build_mirrors_the_encoder():
    model = build_dense_autoencoder(10, DenseAutoencoderConfig(hidden_layers=(32, 16, 8), dropout=0.2), seed=0)
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    assert [layer.units for layer in dense] == [32, 16, 8, 16, 32, 10]
    assert dense[2].name == "bottleneck" and dense[-1].name == "reconstruction"
    assert sum(type(layer).__name__ == "Dropout" for layer in model.layers) == 5
    again = build_dense_autoencoder(10, DenseAutoencoderConfig(hidden_layers=(32, 16, 8), dropout=0.2), seed=0)
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("activation", DENSE_ACTIVATIONS)
def test_numpy_engine_matches_keras(activation):
    config = DenseAutoencoderConfig(hidden_layers=(16, 8, 3), activation=activation, dropout=0.3)
    model = build_dense_autoencoder(7, config, seed=3)
    _randomise_biases(model)
    x = _rows()
    engine = NumpyAutoencoder.from_keras(model)
    got = engine.predict(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, np.asarray(model(x, training=False)), rtol=0, atol=ATOL)
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=0, atol=ATOL)


@pytest.mark.parametrize("output_activation", ["sigmoid", "tanh", "softplus"])
def test_numpy_engine_matches_keras_output_activations(output_activation):
    config = DenseAutoencoderConfig(hidden_layers=(6, 2), activation="elu", output_activation=output_activation)
    model = build_dense_autoencoder(5, config, seed=0)
    _randomise_biases(model, seed=1)
    x = _rows(d=5, scale=4.0)
    np.testing.assert_allclose(
        NumpyAutoencoder.from_keras(model).predict(x), np.asarray(model(x, training=False)), rtol=0, atol=ATOL
    )


def test_engine_reads_a_users_functional_model_with_nested_parts():
    encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="swish")], name="enc")
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(4, activation=None, use_bias=False)(encoder(inputs))
    model = keras.Model(inputs, outputs)
    engine = NumpyAutoencoder.from_keras(model)
    assert engine.activations == ("silu", "linear")
    x = _rows(d=4)
    np.testing.assert_allclose(engine.predict(x), np.asarray(model(x)), rtol=0, atol=ATOL)


def test_a_rows_output_does_not_depend_on_its_batch():
    # Scoring must not depend on how rows fall into Arrow batches: bit-identical
    # outputs for any batch size and row order (float32 BLAS would not give this).
    model = build_dense_autoencoder(7, DenseAutoencoderConfig(activation="gelu"), seed=0)
    _randomise_biases(model)
    engine = NumpyAutoencoder.from_keras(model)
    x = _rows(n=1001)
    whole = engine.predict(x)
    for batch_size in (1, 7, 64, 1000):
        np.testing.assert_array_equal(engine.predict(x, batch_size=batch_size), whole)
    np.testing.assert_array_equal(engine.predict(x[::-1])[::-1], whole)
    np.testing.assert_array_equal(engine.predict(x[13:14]), whole[13:14])
    assert engine.predict(x[:0]).shape == (0, 7)
    assert engine.predict(x.astype(np.float64)).dtype == np.float32


def test_engine_rejects_wrong_input_shapes():
    engine = NumpyAutoencoder([(np.eye(3, dtype=np.float32), np.zeros(3, np.float32), "relu")])
    assert engine.n_features == 3
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        engine.predict(np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        engine.predict(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        engine.predict(np.zeros((4, 3), np.float32), batch_size=0)


def test_engine_rejects_inconsistent_layers():
    k = np.ones((3, 2), np.float32)
    with pytest.raises(ValueError, match="bias has 3 values"):
        NumpyAutoencoder([(k, np.zeros(3, np.float32), "relu")])
    with pytest.raises(ValueError, match="layer 1: kernel expects 3 inputs but layer 0 outputs 2"):
        NumpyAutoencoder([(k, np.zeros(2, np.float32), "relu"), (np.ones((3, 3), np.float32), np.zeros(3), "relu")])
    with pytest.raises(ValueError, match="'mish' is not supported"):
        NumpyAutoencoder([(k, np.zeros(2, np.float32), "mish")])
    with pytest.raises(ValueError, match="non-finite"):
        NumpyAutoencoder([(k * np.nan, np.zeros(2, np.float32), "relu")])


def test_from_keras_names_an_unsupported_layer():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3), keras.layers.LayerNormalization(name="ln"), keras.layers.Dense(4)]
    )
    with pytest.raises(ArtifactError, match="'ln' \\(LayerNormalization\\)"):
        NumpyAutoencoder.from_keras(model)


def test_from_keras_rejects_custom_activations():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation=lambda t: t * 2, name="odd")])
    with pytest.raises(ArtifactError, match="'odd'.*activation"):
        NumpyAutoencoder.from_keras(model)


def test_from_keras_catches_a_graph_that_is_not_a_chain():
    shared = keras.layers.Dense(4, activation="tanh")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, shared(shared(inputs)))  # one layer, called twice
    with pytest.raises(ArtifactError, match="not a plain chain"):
        NumpyAutoencoder.from_keras(model)


# --------------------------------------------------------------- npz format
def _engine() -> NumpyAutoencoder:
    model = build_dense_autoencoder(7, DenseAutoencoderConfig(hidden_layers=(5, 2), activation="selu"), seed=0)
    _randomise_biases(model)
    return NumpyAutoencoder.from_keras(model)


def test_npz_round_trip_gives_identical_outputs():
    engine = _engine()
    data = engine.to_npz_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        assert {"kernel_0", "bias_0", "kernel_2", "bias_2", "activations"} <= set(npz.files)
        assert npz["activations"].dtype.kind == "U"
        assert list(npz["activations"]) == ["selu", "selu", "selu", "linear"]
    loaded = NumpyAutoencoder.from_npz_bytes(data)
    x = _rows()
    np.testing.assert_array_equal(loaded.predict(x), engine.predict(x))
    assert loaded.to_npz_bytes() == data  # reproducible bytes: stable checksums
    assert {info.date_time for info in zipfile.ZipFile(io.BytesIO(data)).infolist()} == {(1980, 1, 1, 0, 0, 0)}


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


RELU = np.array(["relu"])


@pytest.mark.parametrize(
    "data, message",
    [
        (b"definitely not a zip file", "not a readable .npz"),
        (b"", "not a readable .npz"),
        (_npz(kernel_0=np.eye(2)), "no 'activations'"),
        (_npz(kernel_0=np.eye(2), bias_0=np.zeros(2), activations=np.array(["relu", "relu"])), "missing"),
        (_npz(kernel_0=np.eye(2), bias_0=np.zeros(3), activations=np.array(["relu"])), "inconsistent"),
        (_npz(kernel_0=np.eye(2), bias_0=np.zeros(2), activations=np.array([1])), "unicode"),
        (_npz(kernel_0=np.eye(2), bias_0=np.zeros(2), activations=RELU, extra=np.zeros(1)), "extra"),
        (_npz(kernel_0=np.eye(2), bias_0=np.zeros(2), activations=RELU, format_version=np.array(9)), "format_version"),
        (_npz(kernel_0=np.eye(2), bias_0=np.zeros(2), activations=RELU.astype(object)), "unreadable member"),
    ],
)
def test_from_npz_bytes_rejects_malformed_content(data, message):
    with pytest.raises(ArtifactError, match=message):
        NumpyAutoencoder.from_npz_bytes(data)


def test_from_npz_bytes_rejects_truncated_and_non_npz():
    data = _engine().to_npz_bytes()
    with pytest.raises(ArtifactError):
        NumpyAutoencoder.from_npz_bytes(data[: len(data) // 2])
    buf = io.BytesIO()
    np.save(buf, np.eye(2))
    with pytest.raises(ArtifactError, match="single .npy"):
        NumpyAutoencoder.from_npz_bytes(buf.getvalue())
    with pytest.raises(ArtifactError, match="bytes"):
        NumpyAutoencoder.from_npz_bytes("kernel_0")


# ------------------------------------------------------------------ training
SMALL = DenseAutoencoderConfig(hidden_layers=(8, 3), epochs=3, batch_size=32, dropout=0.1)


def test_training_is_reproducible_for_a_seed():
    x = _rows(n=200, d=6, scale=1.0)
    a = train_autoencoder(x, SMALL, seed=7)
    b = train_autoencoder(x, SMALL, seed=7)
    c = train_autoencoder(x, SMALL, seed=8)
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert a.train_loss == b.train_loss and a.val_loss == b.val_loss
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(a.model.get_weights(), c.model.get_weights()))


def test_training_reports_what_it_did(caplog):
    x = _rows(n=200, d=6, scale=1.0)
    with caplog.at_level(logging.INFO, logger="segae_spark"):
        result = train_autoencoder(x, SMALL, seed=0)
    assert (result.rows, result.val_rows, result.epochs_run) == (200, 20, 3)
    assert result.val_loss == min(result.history["val_loss"])  # best weights restored
    assert math.isfinite(result.train_loss) and result.seconds > 0
    lines = [r.getMessage() for r in caplog.records if r.name == "segae_spark"]
    assert len(lines) == 1 and "rows=200" in lines[0] and "epochs=3/3" in lines[0]


def test_early_stopping_stops_and_restores_the_best_epoch():
    config = DenseAutoencoderConfig(hidden_layers=(4, 2), epochs=200, batch_size=8, learning_rate=0.05,
                                    early_stopping_patience=1, validation_split=0.3)
    result = train_autoencoder(_rows(n=40, d=4, scale=1.0), config, seed=0)
    assert result.epochs_run < 200
    assert result.val_loss == min(result.history["val_loss"])


def test_training_without_validation_runs_every_epoch():
    config = DenseAutoencoderConfig(hidden_layers=(4,), epochs=2, validation_split=0.0)
    result = train_autoencoder(_rows(n=20, d=3), config, seed=0)
    assert result.epochs_run == 2 and result.val_loss is None and result.val_rows == 0


def test_autoencoder_learns_the_normal_rows():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(2, 8))
    normal = (rng.normal(size=(1500, 2)) @ mixing + 0.05 * rng.normal(size=(1500, 8))).astype(np.float32)
    normal /= normal.std(axis=0)
    held_out = normal[1200:]
    # Same per-column scale, but the columns no longer move together.
    foreign = (rng.normal(size=(300, 8))).astype(np.float32)
    config = DenseAutoencoderConfig(hidden_layers=(16, 2), activation="tanh", epochs=10, batch_size=32,
                                    learning_rate=3e-3)
    result = train_autoencoder(normal[:1200], config, seed=0)
    engine = NumpyAutoencoder.from_keras(result.model)
    normal_error = row_errors(held_out, engine.predict(held_out)).mean()
    foreign_error = row_errors(foreign, engine.predict(foreign)).mean()
    assert normal_error < 0.25 * foreign_error, (normal_error, foreign_error)


@pytest.mark.parametrize(
    "x, error, message",
    [
        (np.zeros(10), ValueError, "2-D"),
        (np.zeros((1, 3)), ValueError, "at least 2 rows"),
        (np.zeros((5, 0)), ValueError, "no feature columns"),
        (np.array([[1.0, np.nan], [1.0, 2.0], [0.0, 1.0]]), ValueError, r"non-finite.*column\(s\) \[1\]"),
        (np.array([[1e39, 0.0], [1.0, 2.0]]), ValueError, "float32 range"),
        (np.array([["a", "b"], ["c", "d"]]), ValueError, "numeric"),
        (np.zeros((5, 2)), ConfigError, "validation_split=0.1 of 5 rows"),
    ],
)
def test_training_rejects_bad_data_before_starting(x, error, message):
    with pytest.raises(error, match=message):
        train_autoencoder(x, DenseAutoencoderConfig(epochs=1), seed=0)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, None, True])
def test_training_rejects_bad_seeds(seed):
    with pytest.raises(ConfigError, match="seed"):
        train_autoencoder(np.zeros((20, 2)), DenseAutoencoderConfig(epochs=1), seed=seed)


# --------------------------------------------------------- reconstruction
X = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
X_HAT = np.array([[1.0, 0.0, 0.0], [1.0, -1.0, 2.0]])  # differences [0, 2, 3] and [-1, 1, -2]


@pytest.mark.parametrize(
    "metric, expected",
    [
        ("mse", [13 / 3, 6 / 3]),
        ("mae", [5 / 3, 4 / 3]),
        ("rmse", [math.sqrt(13 / 3), math.sqrt(2.0)]),
        ("max_error", [3.0, 2.0]),
    ],
)
def test_row_errors_by_hand(metric, expected):
    got = row_errors(X, X_HAT, metric)
    assert got.dtype == np.float64 and got.shape == (2,)
    np.testing.assert_allclose(got, expected, rtol=1e-15)


def test_row_errors_default_is_mse_and_metrics_are_segmentaes():
    assert THRESHOLD_METRICS == ("mse", "mae", "rmse", "max_error")
    np.testing.assert_array_equal(row_errors(X, X_HAT), row_errors(X, X_HAT, "mse"))


def test_feature_errors_by_hand():
    np.testing.assert_array_equal(feature_errors(X, X_HAT), [[0.0, 4.0, 9.0], [1.0, 1.0, 4.0]])
    np.testing.assert_allclose(feature_errors(X, X_HAT).mean(axis=1), row_errors(X, X_HAT, "mse"))


def test_float32_errors_are_accumulated_in_float64():
    rng = np.random.default_rng(0)
    x = (1e4 + rng.normal(size=(50, 400))).astype(np.float32)
    x_hat = (x + rng.normal(scale=1e-3, size=x.shape)).astype(np.float32)
    exact = ((x.astype(np.float64) - x_hat.astype(np.float64)) ** 2).mean(axis=1)
    got = row_errors(x, x_hat, "mse")
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, exact, rtol=1e-12)


def test_row_errors_rejects_unknown_metrics_and_shapes():
    with pytest.raises(ConfigError, match=r"'mape'.*'mse', 'mae', 'rmse', 'max_error'"):
        row_errors(X, X_HAT, "mape")
    with pytest.raises(ValueError, match="must match"):
        row_errors(X, X_HAT[:, :2])
    with pytest.raises(ValueError, match="2-D"):
        feature_errors(X[0], X_HAT[0])
