"""Autoencoder architectures (dense, batchnorm, ensemble, user Keras models)
behind one config entry point and one scoring interface."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from segae_spark.errors import ArtifactError, ConfigError
from segae_spark.models import (
    THRESHOLD_METRICS,
    ActivationLayer,
    BatchNormAutoencoderConfig,
    BatchNormLayer,
    DenseAutoencoderConfig,
    DenseLayer,
    EnsembleAutoencoderConfig,
    KerasEngine,
    NumpyAutoencoder,
    NumpyEnsemble,
    autoencoder_config_from_dict,
    build_batchnorm_autoencoder,
    engine_from_keras,
    engine_kind,
    keras_model_bytes,
    load_engine,
    load_scoring_engine,
    member_seed,
    row_errors,
    train_autoencoder_model,
    train_user_model,
)
from segae_spark.models.numpy_engine import NPZ_FORMAT_VERSION

keras = pytest.importorskip("keras")

ATOL = 1e-5  # the design's bound between the numpy engine and Keras

FAST = {"hidden_layers": [8, 3], "epochs": 3, "batch_size": 32}
CONFIGS = {
    "dense": {**FAST, "dropout": 0.1},
    "batchnorm": {"type": "batchnorm", **FAST, "activation": "elu"},
    "ensemble": {"type": "ensemble", "members": 3, "width_scales": [1.0, 0.5, 1.5],
                 "base": {"type": "batchnorm", **FAST, "epochs": 2}},
}


def _rows(n: int = 300, d: int = 7, seed: int = 1, scale: float = 2.0, shift: float = 3.0) -> np.ndarray:
    # Off-centre data gives the batch norms non-trivial moving statistics.
    return (np.random.default_rng(seed).normal(size=(n, d)) * scale + shift).astype(np.float32)


X = _rows()


@pytest.fixture(scope="module")
def trained() -> dict:
    """Each architecture trained twice with the same seed (for reproducibility)."""
    return {name: [train_autoencoder_model(X, config, seed=5) for _ in range(2)] for name, config in CONFIGS.items()}


# --------------------------------------------------------------- import cost
def test_numpy_engine_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "import segae_spark.models.numpy_engine, segae_spark.models.keras_engine, segae_spark.models.autoencoders\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"imported: {done.stdout} {done.stderr}"


# -------------------------------------------------------------------- config
def test_config_type_selects_the_architecture():
    assert autoencoder_config_from_dict({}) == DenseAutoencoderConfig()
    assert autoencoder_config_from_dict({"type": "dense", "epochs": 2}) == DenseAutoencoderConfig(epochs=2)
    bn = autoencoder_config_from_dict({"type": "batchnorm", "hidden_layers": [4, 2]})
    assert bn == BatchNormAutoencoderConfig(hidden_layers=(4, 2)) and bn != DenseAutoencoderConfig(hidden_layers=(4, 2))
    ensemble = autoencoder_config_from_dict(CONFIGS["ensemble"])
    assert isinstance(ensemble, EnsembleAutoencoderConfig)
    assert isinstance(ensemble.base, BatchNormAutoencoderConfig) and ensemble.width_scales == (1.0, 0.5, 1.5)
    assert EnsembleAutoencoderConfig().members == 3 and isinstance(EnsembleAutoencoderConfig().base, DenseAutoencoderConfig)
    assert autoencoder_config_from_dict(bn) is bn


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_config_round_trips_through_json(name):
    config = autoencoder_config_from_dict(CONFIGS[name])
    d = json.loads(json.dumps(config.to_dict()))
    assert d["type"] == name
    assert autoencoder_config_from_dict(d) == config


def test_ensemble_members_scale_widths_and_get_their_own_seeds():
    config = EnsembleAutoencoderConfig(members=3, base=DenseAutoencoderConfig(hidden_layers=(8, 3)),
                                       width_scales=[1.0, 0.75, 1.25])
    assert [config.member_config(m).hidden_layers for m in range(3)] == [(8, 3), (6, 2), (10, 4)]
    assert config.member_config(1).epochs == config.base.epochs
    seeds = {member_seed(s, m) for s in range(50) for m in range(5)}
    assert len(seeds) == 250 and member_seed(7, 1) == member_seed(7, 1)


@pytest.mark.parametrize(
    "d, message",
    [
        ({"type": "lstm"}, r"type 'lstm'.*'dense', 'batchnorm', 'ensemble'"),
        ({"type": "batchnorm", "hidden_layer": [4]}, r"unknown batchnorm .*\['hidden_layer'\]"),
        ({"type": "batchnorm", "dropout": 1.5}, "dropout"),
        ({"type": "ensemble", "member": 2}, r"\['member'\]"),
        ({"type": "ensemble", "members": 1}, "members must be >= 2"),
        ({"type": "ensemble", "members": 2.5}, "members must be an integer"),
        ({"type": "ensemble", "members": 2, "width_scales": [1.0]}, "width_scales has 1 value"),
        ({"type": "ensemble", "members": 2, "width_scales": [1.0, 0]}, r"width_scales\[1\]"),
        ({"type": "ensemble", "width_scales": "1,2,3"}, "width_scales must be a list"),
        ({"type": "ensemble", "base": {"type": "ensemble"}}, "base.type 'ensemble'"),
        ({"type": "ensemble", "base": {"epoch": 3}}, r"base: unknown dense .*\['epoch'\]"),
        ({"type": "ensemble", "base": {"learning_rate": -1}}, "base: learning_rate"),
        ({"type": "ensemble", "base": [8, 4]}, "base must be"),
        ("dense", "must be a mapping"),
    ],
)
def test_config_errors_name_the_key(d, message):
    with pytest.raises(ConfigError, match=message):
        autoencoder_config_from_dict(d)


def test_a_typed_dict_must_match_its_class():
    with pytest.raises(ConfigError, match="type 'batchnorm'.*DenseAutoencoderConfig"):
        DenseAutoencoderConfig.from_dict({"type": "batchnorm"})


# ------------------------------------------------------- numpy vs Keras
def _randomise_batch_norms(model, seed: int = 0) -> None:
    """Non-trivial gamma, beta and moving statistics, as after training."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.5, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 3.0, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.01, 9.0, n).astype("float32"))


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "selu"])
def test_numpy_engine_matches_keras_batch_norm_in_inference_mode(activation):
    config = BatchNormAutoencoderConfig(hidden_layers=(16, 8, 3), activation=activation, dropout=0.2)
    model = build_batchnorm_autoencoder(7, config, seed=3)
    _randomise_batch_norms(model)
    engine = NumpyAutoencoder.from_keras(model)
    assert engine.layer_types[:4] == ("dense", "batch_norm", "activation", "dense")
    np.testing.assert_allclose(engine.predict(X), np.asarray(model(X, training=False)), rtol=0, atol=ATOL)


def test_numpy_engine_reads_batch_norm_without_scale_or_centre():
    inputs = keras.Input((5,))
    h = keras.layers.Dense(6, activation="tanh")(inputs)
    h = keras.layers.BatchNormalization(scale=False, center=False, epsilon=0.01)(h)
    h = keras.layers.Activation("swish")(h)
    model = keras.Model(inputs, keras.layers.Dense(5)(h))
    bn = model.layers[2]
    bn.moving_mean.assign(np.linspace(-1, 1, 6).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.1, 2, 6).astype("float32"))
    engine = NumpyAutoencoder.from_keras(model)
    assert engine.activations == ("tanh", "silu", "linear")
    x = _rows(d=5)
    np.testing.assert_allclose(engine.predict(x), np.asarray(model(x, training=False)), rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_trained_engine_matches_keras(trained, name):
    result = trained[name][0]
    outputs = result.model.predict(X, verbose=0)
    engine = result.engine
    if name == "ensemble":
        assert isinstance(engine, NumpyEnsemble) and engine.n_members == 3
        assert len(outputs) == 3
        for got, want in zip(engine.reconstructions(X), outputs):
            np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
        # The score is the mean of member errors, computed from Keras' outputs too.
        want_errors = np.mean([row_errors(X, o, "mse") for o in outputs], axis=0)
    else:
        assert isinstance(engine, NumpyAutoencoder)
        np.testing.assert_allclose(engine.predict(X), outputs, rtol=0, atol=ATOL)
        want_errors = row_errors(X, outputs, "mse")
    np.testing.assert_allclose(engine.row_errors(X, "mse"), want_errors, rtol=1e-5, atol=ATOL)


def test_trained_batch_norm_has_moved_its_statistics(trained):
    engine = trained["batchnorm"][0].engine
    norms = [layer for layer in engine.layers if layer.kind == "batch_norm"]
    assert len(norms) == 3
    assert max(np.abs(layer.moving_mean).max() for layer in norms) > 0.1
    assert max(np.abs(layer.moving_variance - 1).max() for layer in norms) > 0.1


# ------------------------------------------------------------ training
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_seed_gives_identical_engine_bytes(trained, name):
    first, second = trained[name]
    assert first.npz == second.npz
    assert first.training["train_loss"] == second.training["train_loss"]


def test_training_stats_are_json_ready(trained):
    single = trained["batchnorm"][0].training
    assert (single["type"], single["rows"], single["val_rows"], single["epochs_run"], single["seed"]) == (
        "batchnorm", 300, 30, 3, 5)
    assert len(single["history"]["loss"]) == 3 and single["seconds"] > 0
    ensemble = trained["ensemble"][0].training
    assert ensemble["type"] == "ensemble" and ensemble["epochs_run"] == [2, 2, 2]
    assert len(ensemble["train_loss"]) == 3 and len({m["seed"] for m in ensemble["members"]}) == 3
    json.dumps(single), json.dumps(ensemble)
    assert all(trained[name][0].engine_kind == "numpy" for name in CONFIGS)


def test_ensemble_members_have_their_scaled_widths(trained):
    members = trained["ensemble"][0].engine.members
    assert [m.layers[0].kernel.shape[1] for m in members] == [8, 4, 12]


def test_a_different_seed_gives_a_different_model():
    a = train_autoencoder_model(X[:100], {"hidden_layers": [4], "epochs": 1}, seed=1)
    b = train_autoencoder_model(X[:100], {"hidden_layers": [4], "epochs": 1}, seed=2)
    assert a.npz != b.npz


# ---------------------------------------------------------- npz format
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_npz_round_trip_per_architecture(trained, name):
    result = trained[name][0]
    with np.load(io.BytesIO(result.npz), allow_pickle=False) as npz:
        assert int(npz["format_version"]) == NPZ_FORMAT_VERSION == 2
        assert str(npz["kind"]) == ("ensemble" if name == "ensemble" else "autoencoder")
    loaded = load_engine(result.npz)
    assert type(loaded) is type(result.engine)
    assert loaded.to_npz_bytes() == result.npz
    for metric in THRESHOLD_METRICS:
        np.testing.assert_array_equal(loaded.row_errors(X, metric), result.engine.row_errors(X, metric))
    np.testing.assert_array_equal(loaded.feature_errors(X), result.engine.feature_errors(X))


def test_version_1_npz_still_loads():
    rng = np.random.default_rng(0)
    k0, b0 = rng.normal(size=(4, 2)).astype("float32"), rng.normal(size=2).astype("float32")
    k1, b1 = rng.normal(size=(2, 4)).astype("float32"), rng.normal(size=4).astype("float32")
    buf = io.BytesIO()
    np.savez(buf, format_version=np.array(1, dtype=np.int64), kernel_0=k0, bias_0=b0, kernel_1=k1, bias_1=b1,
             activations=np.array(["tanh", "linear"]))
    x = _rows(d=4)
    want = np.tanh(x @ k0 + b0) @ k1 + b1
    for engine in (load_engine(buf.getvalue()), NumpyAutoencoder.from_npz_bytes(buf.getvalue())):
        assert isinstance(engine, NumpyAutoencoder) and engine.layer_types == ("dense", "dense")
        np.testing.assert_allclose(engine.predict(x), want, rtol=1e-5, atol=ATOL)
    # Written back, it is a version-2 archive with the same layers.
    again = load_engine(engine.to_npz_bytes())
    np.testing.assert_array_equal(again.predict(x), engine.predict(x))


def test_single_and_ensemble_loaders_refuse_each_others_archives(trained):
    with pytest.raises(ArtifactError, match="ensemble of 3 .*load_engine"):
        NumpyAutoencoder.from_npz_bytes(trained["ensemble"][0].npz)
    with pytest.raises(ArtifactError, match="single autoencoder"):
        NumpyEnsemble.from_npz_bytes(trained["dense"][0].npz)


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


V2 = {"format_version": np.array(2), "kind": np.array("autoencoder")}
ONE_DENSE = {"layer_types": np.array(["dense"]), "activations": np.array(["relu"]),
             "kernel_0": np.eye(2), "bias_0": np.zeros(2)}


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({**V2, "kind": np.array("forest"), **ONE_DENSE}, "kind 'forest'"),
        ({"format_version": np.array(2), **ONE_DENSE}, "'kind'"),
        ({**V2, **ONE_DENSE, "layer_types": np.array(["conv"])}, r"layer_types\[0\] is 'conv'"),
        ({**V2, **{k: v for k, v in ONE_DENSE.items() if k != "bias_0"}}, r"missing \['bias_0'\]"),
        ({**V2, **ONE_DENSE, "gamma_0": np.ones(2)}, r"unexpected arrays \['gamma_0'\]"),
        ({**V2, "layer_types": np.array(["dense", "batch_norm"]), "activations": np.array(["relu", ""]),
          "kernel_0": np.eye(2), "bias_0": np.zeros(2), "gamma_1": np.ones(3), "beta_1": np.zeros(3),
          "moving_mean_1": np.zeros(3), "moving_variance_1": np.ones(3), "epsilon_1": np.array(1e-3)},
         "batch_norm has 3 features but layer 0 outputs 2"),
        ({**V2, "kind": np.array("ensemble"), "members": np.array(2),
          **{f"member_0/{k}": v for k, v in ONE_DENSE.items()}}, "member_1/layer_types"),
        ({**V2, "layer_types": np.array(["activation"]), "activations": np.array(["relu"])}, "at least one Dense"),
    ],
)
def test_load_engine_rejects_malformed_version_2_archives(arrays, message):
    with pytest.raises(ArtifactError, match=message):
        load_engine(_npz(**arrays))


# ------------------------------------------------------ scoring interface
def _ensemble() -> NumpyEnsemble:
    rng = np.random.default_rng(3)

    def member(width: int) -> NumpyAutoencoder:
        return NumpyAutoencoder([
            DenseLayer(rng.normal(size=(5, width)), rng.normal(size=width), "linear"),
            BatchNormLayer(rng.uniform(0.5, 2, width), rng.normal(size=width), rng.normal(size=width),
                           rng.uniform(0.1, 3, width), 1e-3),
            ActivationLayer("relu"),
            (rng.normal(size=(width, 5)), rng.normal(size=5), "linear"),
        ])

    return NumpyEnsemble([member(3), member(4), member(2)])


@pytest.mark.parametrize("metric", THRESHOLD_METRICS)
def test_ensemble_row_error_is_the_mean_of_member_row_errors(metric):
    ensemble = _ensemble()
    x = _rows(d=5)
    members = [m.row_errors(x, metric) for m in ensemble.members]
    got = ensemble.row_errors(x, metric)
    assert got.dtype == np.float64 and got.shape == (300,)
    np.testing.assert_allclose(got, np.mean(members, axis=0), rtol=1e-13)
    if metric == "rmse":  # not the error of the mean reconstruction
        assert not np.allclose(got, row_errors(x, ensemble.predict(x), metric))


def test_ensemble_feature_errors_are_the_mean_of_member_feature_errors():
    ensemble = _ensemble()
    x = _rows(d=5)
    got = ensemble.feature_errors(x)
    assert got.shape == (300, 5) and got.dtype == np.float64
    np.testing.assert_allclose(got, np.mean([m.feature_errors(x) for m in ensemble.members], axis=0), rtol=1e-13)
    np.testing.assert_allclose(got.mean(axis=1), ensemble.row_errors(x, "mse"), rtol=1e-12)


def test_scores_do_not_depend_on_the_batch():
    ensemble = _ensemble()
    x = _rows(n=501, d=5)
    whole = ensemble.row_errors(x, "mae")
    for batch_size in (1, 64, 500):
        np.testing.assert_array_equal(ensemble.row_errors(x, "mae", batch_size=batch_size), whole)
    np.testing.assert_array_equal(ensemble.row_errors(x[::-1], "mae")[::-1], whole)
    np.testing.assert_array_equal(ensemble.row_errors(x[7:8], "mae"), whole[7:8])


def test_engines_check_metric_and_members():
    ensemble = _ensemble()
    with pytest.raises(ConfigError, match="'mape'"):
        ensemble.row_errors(_rows(d=5), "mape")
    with pytest.raises(ValueError, match=r"member 1 maps 3 -> 3 features but member 0 maps 5 -> 5"):
        NumpyEnsemble([ensemble.members[0], NumpyAutoencoder([(np.eye(3), np.zeros(3), "relu")])])
    with pytest.raises(ValueError, match="batch_norm moving_variance has 2 values but gamma has 3"):
        NumpyAutoencoder([(np.eye(3), np.zeros(3), "relu"),
                          BatchNormLayer(np.ones(3), np.zeros(3), np.zeros(3), np.ones(2), 1e-3)])


# ------------------------------------------------------------ user models
def _dense_user_model() -> "keras.Model":
    inputs = keras.Input((6,))
    h = keras.layers.Dense(4, activation="tanh")(inputs)
    h = keras.layers.Dropout(0.2)(h)
    return keras.Model(inputs, keras.layers.Dense(6)(h), name="user_dense")


def _conv_user_model() -> "keras.Model":
    inputs = keras.Input((6,))
    h = keras.layers.Reshape((6, 1))(inputs)
    h = keras.layers.Conv1D(2, 3, padding="same", activation="relu")(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(6)(h), name="user_conv")


@keras.saving.register_keras_serializable(package="segae_tests")
class Doubler(keras.layers.Layer):
    def call(self, x):
        return x * 2.0


def _custom_user_model() -> "keras.Model":
    inputs = keras.Input((6,))
    return keras.Model(inputs, keras.layers.Dense(6)(Doubler()(keras.layers.Dense(3)(inputs))), name="user_custom")


def test_a_dense_only_user_model_is_scored_in_numpy():
    model = _dense_user_model()
    assert engine_kind(model) == "numpy"
    engine = engine_from_keras(model)
    x = _rows(d=6)
    assert isinstance(engine, NumpyAutoencoder)
    np.testing.assert_allclose(engine.predict(x), model.predict(x, verbose=0), rtol=0, atol=ATOL)


@pytest.mark.parametrize("make", [_conv_user_model, _custom_user_model])
def test_other_user_models_fall_back_to_keras_and_score_like_predict(make):
    model = make()
    assert engine_kind(model) == "keras"
    x = _rows(d=6)
    want = model.predict(x, verbose=0)
    engine = KerasEngine.from_keras_bytes(keras_model_bytes(model))
    assert engine.n_features == 6 and engine.n_members == 1
    for metric in THRESHOLD_METRICS:
        np.testing.assert_allclose(engine.row_errors(x, metric), row_errors(x, want, metric), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(engine.predict(x), want, rtol=0, atol=ATOL)
    assert engine.row_errors(x[:0]).shape == (0,)
    with pytest.raises(ValueError, match=r"\(n, 6\)"):
        engine.row_errors(x[:, :5])


def test_keras_engine_reads_a_saved_ensemble(trained):
    result = trained["ensemble"][0]
    engine = load_scoring_engine(keras=result.keras)
    assert isinstance(engine, KerasEngine) and engine.n_members == 3
    np.testing.assert_allclose(engine.row_errors(X, "rmse"), result.engine.row_errors(X, "rmse"), rtol=1e-5, atol=ATOL)
    assert isinstance(load_scoring_engine(npz=result.npz, keras=result.keras), NumpyEnsemble)


def test_keras_engine_rejects_bad_bytes():
    with pytest.raises(ArtifactError, match="cannot be loaded"):
        KerasEngine.from_keras_bytes(b"not a keras file")
    with pytest.raises(ArtifactError, match="neither"):
        load_scoring_engine()


def test_train_user_model_clones_compiles_and_picks_the_engine():
    x = _rows(n=120, d=6, shift=0.0, scale=1.0)
    template = _dense_user_model()
    before = [w.copy() for w in template.get_weights()]
    a = train_user_model(template, x, seed=3, epochs=2, batch_size=32)
    b = train_user_model(template, x, seed=3, epochs=2, batch_size=32)
    assert a.engine_kind == "numpy" and a.npz == b.npz and a.training["epochs_run"] == 2
    assert a.model is not template and type(a.model.optimizer).__name__ == "Adam"
    for w, w0 in zip(template.get_weights(), before):
        np.testing.assert_array_equal(w, w0)  # the template is left untouched

    conv = _conv_user_model()
    conv.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mae")
    c = train_user_model(conv, x, seed=3, epochs=1, batch_size=32, validation_split=0.0)
    assert c.engine_kind == "keras" and c.npz is None and isinstance(c.engine, KerasEngine)
    assert type(c.model.optimizer).__name__ == "SGD" and c.training["engine"] == "keras"
    np.testing.assert_allclose(c.engine.predict(x), c.model.predict(x, verbose=0), rtol=0, atol=ATOL)


def test_train_user_model_checks_the_input_width():
    with pytest.raises(ConfigError, match="takes 6 features but the data has 5"):
        train_user_model(_dense_user_model(), _rows(n=50, d=5), seed=0, epochs=1)
