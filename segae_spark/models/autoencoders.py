"""One entry point for every autoencoder: config by ``type``, training, artifacts.

The autoencoder section of a config is a dict whose ``type`` selects the
architecture (``dense`` when absent):

- ``dense`` -- :class:`~segae_spark.models.dense.DenseAutoencoderConfig`;
- ``batchnorm`` -- :class:`~segae_spark.models.batchnorm.BatchNormAutoencoderConfig`;
- ``ensemble`` -- :class:`~segae_spark.models.ensemble.EnsembleAutoencoderConfig`;
- ``keras`` -- :class:`~segae_spark.models.user_keras.UserKerasConfig`, a user's own model;
- ``aegmm`` -- :class:`~segae_spark.models.aegmm.AEGMMConfig`, the AEGMM
  detector (autoencoder + Gaussian mixture, scored by sample energy).

:func:`autoencoder_config_from_dict` parses it, :func:`train_autoencoder_model`
trains it and returns a :class:`TrainedAutoencoder`: the numpy engine's
``.npz`` bytes (what executors score with), the ``.keras`` bytes (for users;
an ensemble's is one multi-output model, see :mod:`.ensemble`) and
JSON-ready training stats. :func:`train_user_model` does the same for a
user's own Keras model.

Keras and TensorFlow are imported inside the training functions only.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Mapping, Union

import numpy as np

from segae_spark.errors import ArtifactError, ConfigError
from segae_spark.models.aegmm import AEGMMConfig, AEGMMTrainingResult, train_aegmm
from segae_spark.models.batchnorm import BatchNormAutoencoderConfig
from segae_spark.models.dense import (
    DenseAutoencoderConfig,
    TrainingResult,
    _seed,
    fit_autoencoder,
)
from segae_spark.models.ensemble import EnsembleAutoencoderConfig, EnsembleTrainingResult, train_ensembles
from segae_spark.models.keras_engine import KerasEngine, ScoringEngine, numpy_engine_from_keras
from segae_spark.models.numpy_engine import NumpyAutoencoder, NumpyEnsemble
from segae_spark.models.stacked import train_stacked
from segae_spark.models.user_keras import UserKerasConfig

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "AUTOENCODER_TYPES",
    "AutoencoderConfig",
    "TrainedAutoencoder",
    "autoencoder_config_from_dict",
    "keras_model_bytes",
    "train_autoencoder_model",
    "train_autoencoder_models",
    "train_user_model",
]

AutoencoderConfig = Union[
    DenseAutoencoderConfig, BatchNormAutoencoderConfig, EnsembleAutoencoderConfig, UserKerasConfig, AEGMMConfig
]

AUTOENCODER_TYPES: dict[str, type] = {
    "dense": DenseAutoencoderConfig,
    "batchnorm": BatchNormAutoencoderConfig,
    "ensemble": EnsembleAutoencoderConfig,
    "keras": UserKerasConfig,
    "aegmm": AEGMMConfig,
}
"""Config class of each architecture, by the ``type`` key that selects it."""


def autoencoder_config_from_dict(d: Mapping | AutoencoderConfig) -> AutoencoderConfig:
    """The config an autoencoder dict describes, by its ``type`` (default ``dense``).

    ConfigError names an unknown type, unknown keys and bad values. A config
    object is returned unchanged.
    """
    if isinstance(d, tuple(AUTOENCODER_TYPES.values())):
        return d
    if not isinstance(d, Mapping):
        raise ConfigError(f"autoencoder config must be a mapping, got {type(d).__name__}")
    kind = d.get("type", "dense")
    if not isinstance(kind, str) or kind not in AUTOENCODER_TYPES:
        raise ConfigError(f"autoencoder type {kind!r} is not supported; expected one of {list(AUTOENCODER_TYPES)}")
    return AUTOENCODER_TYPES[kind].from_dict(d)


@dataclass
class TrainedAutoencoder:
    """A trained autoencoder, ready to store and to score.

    ``architecture`` is the config's ``type`` (``user`` for a user model).
    ``npz`` is the numpy engine's weights (:func:`~segae_spark.models.numpy_engine.load_engine`
    reads them), None only for a user model the numpy engine cannot run,
    whose executors score the ``keras`` bytes with
    :class:`~segae_spark.models.keras_engine.KerasEngine`. ``engine`` is the
    engine itself (``engine.row_errors(x, metric)``), for training-side
    errors and thresholds; ``model`` the trained Keras model (driver only).

    ``training`` is JSON-ready. For a single model: ``type``, ``seed``,
    ``rows``, ``val_rows``, ``epochs_run``, ``best_epoch``, ``train_loss``,
    ``val_loss`` (None without validation), ``seconds`` and ``history``
    (per-epoch ``loss`` / ``val_loss``). For an ensemble: ``type``, ``seed``,
    ``rows``, ``val_rows``, ``seconds`` (all members), ``epochs_run``,
    ``train_loss`` and ``val_loss`` as lists, one value per member, and
    ``members``: one single-model dict per member (with its own ``seed``).
    An AEGMM's is a single model's plus ``phi``, its mixture weights.
    """

    architecture: str
    npz: bytes | None
    keras: bytes
    training: dict
    engine: ScoringEngine = field(repr=False)
    model: Any = field(default=None, repr=False)

    @property
    def engine_kind(self) -> Literal["numpy", "keras"]:
        """Which engine scores this model on executors."""
        return "numpy" if self.npz is not None else "keras"


def train_autoencoder_model(x: np.ndarray, config: Mapping | AutoencoderConfig, seed: int) -> TrainedAutoencoder:
    """Train the architecture ``config`` selects on ``x`` (rows of normal data).

    ``config`` is a config object or its dict. Reproducible: the same data,
    config and seed give the same ``npz`` bytes. ConfigError / ValueError for
    bad settings or data, before TensorFlow work starts.
    """
    return train_autoencoder_models([x], config, [seed])[0]


def train_autoencoder_models(
    xs: list[np.ndarray], config: Mapping | AutoencoderConfig, seeds: list[int]
) -> list[TrainedAutoencoder]:
    """Train one model of ``config`` per matrix of ``xs`` (model ``k`` on ``xs[k]`` from ``seeds[k]``).

    Dense and batchnorm autoencoders (ensemble members included) train
    together (:mod:`.stacked`), which is much faster than one after another
    and gives each model exactly what training it alone would; user Keras
    models and AEGMMs, whose layers and loss the stacked trainer does not
    know, train one after another.
    """
    config = autoencoder_config_from_dict(config)
    seeds = [_seed(seed) for seed in seeds]
    if isinstance(config, UserKerasConfig):
        return [
            train_user_model(
                config.template(),
                x,
                seed=seed,
                epochs=config.epochs,
                batch_size=config.batch_size,
                validation_split=config.validation_split,
                early_stopping_patience=config.early_stopping_patience,
                learning_rate=config.learning_rate,
            )
            for x, seed in zip(xs, seeds)
        ]
    if isinstance(config, EnsembleAutoencoderConfig):
        return [_trained_ensemble(r, config, seed) for r, seed in zip(train_ensembles(xs, config, seeds), seeds)]
    if isinstance(config, AEGMMConfig):
        return [_trained_aegmm(train_aegmm(x, config, seed), config, seed) for x, seed in zip(xs, seeds)]
    out = []
    for single, seed in zip(train_stacked(xs, config, seeds), seeds):
        engine = NumpyAutoencoder.from_keras(single.model)
        training = {"type": config.type, **_stats(single, seed)}
        out.append(TrainedAutoencoder(config.type, engine.to_npz_bytes(), keras_model_bytes(single.model), training, engine, single.model))
    return out


def _trained_ensemble(result: EnsembleTrainingResult, config: EnsembleAutoencoderConfig, seed: int) -> TrainedAutoencoder:
    engine = NumpyEnsemble.from_keras(result.model)
    members = [_stats(r, s) for r, s in zip(result.members, result.seeds)]
    training = {
        "type": config.type,
        "seed": seed,
        "rows": members[0]["rows"],
        "val_rows": members[0]["val_rows"],
        "seconds": result.seconds,
        "epochs_run": [m["epochs_run"] for m in members],
        "train_loss": [m["train_loss"] for m in members],
        "val_loss": [m["val_loss"] for m in members],
        "members": members,
    }
    return TrainedAutoencoder(config.type, engine.to_npz_bytes(), keras_model_bytes(result.model), training, engine, result.model)


def _trained_aegmm(result: AEGMMTrainingResult, config: AEGMMConfig, seed: int) -> TrainedAutoencoder:
    model = result.training.model
    training = {"type": config.type, **_stats(result.training, seed), "phi": result.engine.gmm["phi"].tolist()}
    return TrainedAutoencoder(config.type, result.engine.to_npz_bytes(), keras_model_bytes(model), training, result.engine, model)


def train_user_model(
    model: "keras.Model",
    x: np.ndarray,
    *,
    seed: int,
    epochs: int = 40,
    batch_size: int = 256,
    validation_split: float = 0.1,
    early_stopping_patience: int = 5,
    learning_rate: float = 1e-3,
) -> TrainedAutoencoder:
    """Train a fresh copy of a user's Keras model ``x -> x_hat`` on ``x``.

    ``model`` is a template, compiled or not, trained or not: it is cloned
    with ``keras.models.clone_model`` (new weights, drawn after seeding, so
    the same seed gives the same model), and the clone is compiled with the
    template's optimizer (a fresh one from its config) and loss when the
    template is compiled, else with Adam(``learning_rate``) on MSE. The
    template itself is never modified, so one template serves every segment.
    Training is :func:`~segae_spark.models.dense.fit_autoencoder`'s (seeded
    validation split, early stopping).

    The result is scored in numpy when the numpy engine reads every layer
    (``npz`` set), else with Keras (``npz`` None).
    """
    if not (hasattr(model, "fit") and hasattr(model, "get_config") and hasattr(model, "layers")):
        raise ConfigError(f"a user model must be a Keras model, got {type(model).__name__}")
    compiled = bool(getattr(model, "compiled", False)) and getattr(model, "optimizer", None) is not None
    seed = _seed(seed)

    def build(n_features: int) -> "keras.Model":
        import keras

        try:
            clone = keras.models.clone_model(model)
        except Exception as exc:
            raise ConfigError(
                f"user model {getattr(model, 'name', '?')!r} cannot be cloned for training: {exc}"
            ) from None
        shape = getattr(clone, "input_shape", None)
        if isinstance(shape, tuple) and shape and isinstance(shape[-1], int) and shape[-1] != n_features:
            raise ConfigError(
                f"user model {getattr(model, 'name', '?')!r} takes {shape[-1]} features but the data has {n_features}"
            )
        if compiled:
            optimizer = type(model.optimizer).from_config(model.optimizer.get_config())
            clone.compile(optimizer=optimizer, loss=model.loss, jit_compile=False)
        else:
            clone.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="mse", jit_compile=False)
        return clone

    result = fit_autoencoder(
        x,
        build,
        seed,
        epochs=epochs,
        batch_size=batch_size,
        validation_split=validation_split,
        early_stopping_patience=early_stopping_patience,
        label=f"user model {getattr(model, 'name', '?')!r}",
    )
    try:
        engine: ScoringEngine = numpy_engine_from_keras(result.model)
        npz = engine.to_npz_bytes()
    except ArtifactError:
        engine, npz = KerasEngine(result.model), None
    training = {"type": "user", **_stats(result, seed), "engine": "numpy" if npz is not None else "keras"}
    return TrainedAutoencoder("user", npz, keras_model_bytes(result.model), training, engine, result.model)


def keras_model_bytes(model: "keras.Model") -> bytes:
    """The ``.keras`` file of a model, as bytes."""
    with tempfile.TemporaryDirectory(prefix="segae-keras-") as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        with open(path, "rb") as fh:
            return fh.read()


def _stats(result: TrainingResult, seed: int) -> dict:
    return {
        "seed": seed,
        "rows": result.rows,
        "val_rows": result.val_rows,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "train_loss": result.train_loss,
        "val_loss": result.val_loss,
        "seconds": result.seconds,
        "history": result.history,
    }
