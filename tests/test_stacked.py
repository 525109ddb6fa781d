"""Stacked training: several autoencoders in one computation, each as if trained alone."""

import numpy as np
import pytest

from segae_spark.errors import ConfigError
from segae_spark.models import (
    BatchNormAutoencoderConfig,
    DenseAutoencoderConfig,
    EnsembleAutoencoderConfig,
    member_seed,
    train_autoencoder,
    train_ensemble,
    train_stacked,
)
from segae_spark.training.backends import _task_groups

keras = pytest.importorskip("keras")


def _rows(n, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize(
    "config",
    [
        DenseAutoencoderConfig(hidden_layers=(8, 3), epochs=5, batch_size=64, validation_split=0.0, l2=0.01),
        BatchNormAutoencoderConfig(hidden_layers=(8, 3), epochs=5, batch_size=64, validation_split=0.0),
    ],
    ids=["dense+l2", "batchnorm"],
)
def test_the_update_is_keras_fit(config):
    # One full batch per epoch: no shuffling involved, so Keras' fit and the
    # stacked loop must take the same Adam steps (L2 and batch moments included).
    x = _rows(64)
    ours = train_stacked([x], config, [3])[0]
    reference = config.build(6, 3)
    reference.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    history = reference.fit(x, x, epochs=5, batch_size=64, shuffle=False, verbose=0).history
    for got, want in zip(ours.model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(ours.history["loss"], history["loss"], rtol=1e-5)


def _grouped_and_alone(kind):
    # Different sizes (so some models sit steps out), dropout, validation and
    # an early stop while the others run on.
    config = kind(hidden_layers=(8, 3), epochs=12, batch_size=32, dropout=0.2, early_stopping_patience=1,
                  learning_rate=0.02)
    xs = [_rows(300, seed=1), _rows(120, seed=2), _rows(50, seed=3)]
    grouped = train_stacked(xs, config, [1, 2, 3], ["a", "b", "c"])
    assert min(r.epochs_run for r in grouped) < 12
    return [(train_autoencoder(x, config, k + 1, name="abc"[k]), grouped[k]) for k, x in enumerate(xs)]


def _close(a, b):
    """Weights equal to float32 rounding: TensorFlow's CPU matrix products may round differently
    for a group's shape than for one model's (bit for bit on some CPUs, ~1e-7 apart on an AMD EPYC)."""
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_a_dense_model_trains_the_same_alone_or_grouped():
    for alone, grouped in _grouped_and_alone(DenseAutoencoderConfig):
        _close(alone.model, grouped.model)
        for key, values in alone.history.items():
            np.testing.assert_allclose(values, grouped.history[key], rtol=1e-5)
        assert (alone.epochs_run, alone.best_epoch) == (grouped.epochs_run, grouped.best_epoch)
        assert alone.val_loss == pytest.approx(grouped.val_loss, rel=1e-5)


def test_a_batchnorm_model_trains_the_same_alone_or_grouped_up_to_rounding():
    for alone, grouped in _grouped_and_alone(BatchNormAutoencoderConfig):
        _close(alone.model, grouped.model)
        assert (alone.epochs_run, alone.best_epoch) == (grouped.epochs_run, grouped.best_epoch)


def test_ensemble_members_train_together_as_if_alone():
    base = DenseAutoencoderConfig(hidden_layers=(6, 2), epochs=3, batch_size=32)
    config = EnsembleAutoencoderConfig(members=3, base=base, width_scales=(1.0, 1.0, 2.0))
    x = _rows(200)
    result = train_ensemble(x, config, seed=5)
    for m, member in enumerate(result.members):
        alone = train_autoencoder(x, config.member_config(m), member_seed(5, m), name=f"member_{m}")
        _close(alone.model, member.model)


def test_grouped_models_must_share_their_width():
    with pytest.raises(ValueError, match="same number of features"):
        train_stacked([_rows(20, d=3), _rows(20, d=4)], DenseAutoencoderConfig(epochs=1), [0, 1])
    with pytest.raises(ValueError, match="one seed per"):
        train_stacked([_rows(20)], DenseAutoencoderConfig(epochs=1), [0, 1])
    with pytest.raises(ConfigError, match="validation_split"):
        train_stacked([_rows(20), _rows(5)], DenseAutoencoderConfig(epochs=1), [0, 1])


def test_training_tasks_keep_the_shared_model_alone_and_balance_the_rest():
    counts = {0: 9000, 1: 500, 2: 4000, 3: 4000, 4: 100}
    plan = {0: "segment_0", 1: "segment_1", 2: "segment_2", 3: "segment_3", 4: "shared"}
    tasks = _task_groups(plan, counts, max_rows=5000, own_slots=2)
    assert tasks == [["shared"], ["segment_0", "segment_1"], ["segment_2", "segment_3"]]  # 5500 vs 8000 rows
    assert _task_groups(plan, counts, 5000, own_slots=1) == [["shared"], ["segment_0", "segment_1", "segment_2", "segment_3"]]
    assert _task_groups({0: "shared", 1: "shared"}, counts, 5000, own_slots=4) == [["shared"]]
