"""The AEGMM detector (``type: aegmm``): its config, its Keras model and its training.

DAGMM (Zong et al., "Deep Autoencoding Gaussian Mixture Model for
Unsupervised Anomaly Detection", ICLR 2018), as alibi-detect's
``OutlierAEGMM`` builds it: an autoencoder whose latent code, joined with two
reconstruction features, feeds a Gaussian mixture, all trained together.
A row's score is its sample energy under the mixture (see
:mod:`.numpy_aegmm`, which scores it on executors without TensorFlow).

Model: encoder ``Dense(encoder_layers, activation) -> Dense(latent_dim)``;
decoder the mirror image, ending in a linear ``Dense`` as wide as the input;
``z = [z_c, relative distance, cosine]``; density network
``Dense(density_layers, activation) + Dropout(density_dropout)`` after each,
then ``Dense(n_gmm, softmax)`` giving the memberships ``gamma``.

Loss of a batch: mean squared reconstruction error ``+ w_energy *`` mean
sample energy ``+ w_cov_diag *`` the sum over components of ``1 /
diag(cov + eps I)``, the mixture ``phi, mu, cov`` being estimated from the
batch's ``z`` and ``gamma`` (dropout on). The GMM part is computed in float64
(:mod:`.aegmm_layers`), with the numpy engine's safeguards.

Training loop (a ``tf.GradientTape`` loop, one compiled call per epoch and
batch size, Keras' Adam): each epoch shuffles the training rows with
``numpy.random.default_rng([seed, epoch])`` and splits them into
``ceil(rows / batch_size)`` near-equal batches, so no batch is a handful of
rows whose covariance would be degenerate. With ``validation_split > 0``
a seeded hold-out (:func:`~segae_spark.models.dense.split_rows`) is scored
after each epoch with the same loss in inference mode (dropout off, its own
mixture), and early stopping follows Keras' ``EarlyStopping`` (patience,
best weights restored). Then the final mixture is estimated from all the
rows given (training and validation) with the numpy engine, the one
scoring uses, and written into the Keras model's :class:`GMMEnergy` layer.

Determinism: every initializer and dropout layer has its own seed derived
from the model's seed, shuffles are seeded and TensorFlow runs with op
determinism, so the same rows, config and seed give the same weights, bit
for bit. Unlike dense and batchnorm models, AEGMMs are not trained as a
stack (:mod:`.stacked`): each trains on its own, one after another.

Keras and TensorFlow are imported inside the training functions only.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

from segae_spark.errors import ConfigError
from segae_spark.models.dense import (
    DENSE_ACTIVATIONS,
    TrainingResult,
    _float,
    _int,
    _int_tuple,
    _seed,
    _training_matrix,
    check_training_fields,
    config_fields,
    logger,
    split_rows,
    validation_rows,
)
from segae_spark.models.numpy_aegmm import NumpyAEGMM, fit_mixture
from segae_spark.models.numpy_engine import NumpyAutoencoder

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["AEGMMConfig", "AEGMMTrainingResult", "build_aegmm", "train_aegmm"]

_MIXTURE_BATCH_ROWS = 8192


@dataclass(frozen=True)
class AEGMMConfig:
    """Architecture and training settings of the AEGMM detector (``type: aegmm``).

    Defaults follow DAGMM and alibi-detect's example: ``n_gmm`` 2 mixture
    components, ``tanh`` activations, a density network of one hidden layer
    of 10 with dropout 0.5 (the paper's estimation network), ``w_energy``
    0.1 and ``w_cov_diag`` 0.005 (the paper's lambda_1 and lambda_2). The
    latent code is two-dimensional (``latent_dim`` 2; ``z`` then has 4
    columns with the two reconstruction features), not DAGMM's 1: on the
    36 features of the synthetic transactions 1 gave a global AEGMM a
    ROC-AUC of 0.71-0.80, 2 gave 0.78-0.88 and 8 gave 0.87-0.92, so wide
    tables should raise it. The training settings are the dense
    autoencoder's (Adam at ``learning_rate``, ``epochs``, ``batch_size``, a
    seeded ``validation_split`` hold-out and ``early_stopping_patience``);
    ``batch_size`` must be at least 2, since each batch estimates a mixture.
    """

    type: ClassVar[str] = "aegmm"
    label: ClassVar[str] = "AEGMM"

    n_gmm: int = 2
    encoder_layers: tuple[int, ...] = (32, 16)
    latent_dim: int = 2
    activation: str = "tanh"
    density_layers: tuple[int, ...] = (10,)
    density_dropout: float = 0.5
    w_energy: float = 0.1
    w_cov_diag: float = 0.005
    learning_rate: float = 1e-3
    epochs: int = 40
    batch_size: int = 256
    validation_split: float = 0.1
    early_stopping_patience: int = 5

    def __post_init__(self) -> None:
        def set_(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)  # the dataclass is frozen

        set_("n_gmm", _int("n_gmm", self.n_gmm, low=1))
        set_("encoder_layers", _int_tuple("encoder_layers", self.encoder_layers))
        set_("latent_dim", _int("latent_dim", self.latent_dim, low=1))
        if self.activation not in DENSE_ACTIVATIONS:
            raise ConfigError(f"activation {self.activation!r} is not supported; expected one of {list(DENSE_ACTIVATIONS)}")
        set_("density_layers", _int_tuple("density_layers", self.density_layers))
        set_("density_dropout", _float("density_dropout", self.density_dropout, low=0.0, high=1.0, high_open=True))
        set_("w_energy", _float("w_energy", self.w_energy, low=0.0))
        set_("w_cov_diag", _float("w_cov_diag", self.w_cov_diag, low=0.0))
        check_training_fields(self, set_, min_batch_size=2)  # a batch of 1 has no covariance

    @classmethod
    def from_dict(cls, d: Mapping) -> "AEGMMConfig":
        """Build from a mapping (a YAML/JSON section); missing keys take defaults."""
        return cls(**config_fields(cls, d))

    def to_dict(self) -> dict:
        """JSON-ready dict with its ``type``; ``from_dict(to_dict())`` gives an equal config."""
        d = {"type": self.type, **asdict(self)}
        d["encoder_layers"] = list(self.encoder_layers)
        d["density_layers"] = list(self.density_layers)
        return d


@dataclass
class AEGMMTrainingResult:
    """A trained AEGMM: what the training did (``training.model`` is the Keras
    model, mixture included) and its numpy engine."""

    training: TrainingResult
    engine: NumpyAEGMM


def build_aegmm(n_features: int, config: AEGMMConfig, seed: int) -> "keras.Model":
    """The Keras AEGMM for ``n_features`` inputs, its mixture not yet fitted.

    A functional model ``aegmm`` whose input ``features`` gives the dict
    ``{"reconstruction", "z", "gamma", "energy"}``; its sub-models
    ``encoder``, ``decoder`` and ``density`` are Sequential stacks of Dense
    (and Dropout) layers, and the layers ``reconstruction_features`` and
    ``energy`` come from :mod:`.aegmm_layers`. Initial weights and dropout
    draws depend on ``seed`` only.
    """
    n_features = _int("n_features", n_features, low=1)
    seed = _seed(seed)
    if not isinstance(config, AEGMMConfig):
        raise ConfigError(f"config must be an AEGMMConfig, got {type(config).__name__}")
    import keras

    from segae_spark.models.aegmm_layers import GMMEnergy, ReconstructionFeatures

    n_seeds = 2 * (len(config.encoder_layers) + 1) + 2 * len(config.density_layers) + 1
    seeds = iter(int(s) % (2**31 - 1) for s in np.random.SeedSequence(seed).generate_state(n_seeds))

    def dense(width: int, activation: str, name: str):
        return keras.layers.Dense(
            width, activation=activation, kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)), name=name
        )

    encoder = keras.Sequential(
        [keras.Input((n_features,), dtype="float32")]
        + [dense(w, config.activation, f"encoder_{i}") for i, w in enumerate(config.encoder_layers)]
        + [dense(config.latent_dim, "linear", "latent")],
        name="encoder",
    )
    widths = list(reversed(config.encoder_layers))
    decoder = keras.Sequential(
        [keras.Input((config.latent_dim,), dtype="float32")]
        + [dense(w, config.activation, f"decoder_{i}") for i, w in enumerate(widths)]
        + [dense(n_features, "linear", "reconstruction")],
        name="decoder",
    )
    density_layers: list = [keras.Input((config.latent_dim + 2,), dtype="float32")]
    for i, width in enumerate(config.density_layers):
        density_layers.append(dense(width, config.activation, f"density_{i}"))
        density_layers.append(keras.layers.Dropout(config.density_dropout, seed=next(seeds), name=f"density_{i}_dropout"))
    density_layers.append(dense(config.n_gmm, "softmax", "memberships"))
    density = keras.Sequential(density_layers, name="density")

    inputs = keras.Input((n_features,), dtype="float32", name="features")
    z_c = encoder(inputs)
    x_hat = decoder(z_c)
    features = ReconstructionFeatures(name="reconstruction_features")([inputs, x_hat])
    z = keras.layers.Concatenate(dtype="float64", name="z")([z_c, features])
    gamma = density(z)
    energy = GMMEnergy(config.n_gmm, name="energy")(z)
    return keras.Model(inputs, {"reconstruction": x_hat, "z": z, "gamma": gamma, "energy": energy}, name="aegmm")


def train_aegmm(x: np.ndarray, config: AEGMMConfig, seed: int) -> AEGMMTrainingResult:
    """Train an AEGMM on the rows ``x`` (see the module doc); reproducible for a seed.

    Bad settings (ConfigError) and bad data (ValueError) are reported before
    TensorFlow work starts. A loss that stops being finite (TensorFlow's
    Cholesky gives NaNs, not an error, for a covariance that is not positive
    definite) and a final mixture whose covariance is not positive definite
    are reported as ConfigError.
    """
    if not isinstance(config, AEGMMConfig):
        raise ConfigError(f"config must be an AEGMMConfig, got {type(config).__name__}")
    seed = _seed(seed)
    x = _training_matrix(x)
    n_rows, n_features = x.shape
    n_val = validation_rows(n_rows, config.validation_split)

    start = time.perf_counter()
    model = build_aegmm(n_features, config, seed)
    x_train, x_val = split_rows(x, seed, n_val)
    history = _Trainer(model, config).fit(x_train, x_val, seed)

    losses, val_losses = history["loss"], history.get("val_loss", [])
    best = int(np.argmin(val_losses)) if val_losses else len(losses) - 1
    train_loss, val_loss = losses[best], (val_losses[best] if val_losses else None)
    try:
        engine = fit_mixture(
            *(NumpyAutoencoder.from_keras(model.get_layer(name)) for name in ("encoder", "decoder", "density")),
            x,
            _MIXTURE_BATCH_ROWS,
        )
    except ValueError as exc:
        raise ConfigError(f"the AEGMM's mixture cannot be estimated: {exc}; {_HINT}") from None
    energy_layer = model.get_layer("energy")
    for name, value in engine.gmm.items():
        getattr(energy_layer, name).assign(value)
    seconds = time.perf_counter() - start
    logger.info(
        "%s trained: rows=%d (val %d) features=%d epochs=%d/%d best_epoch=%d train_loss=%.6g val_loss=%s "
        "phi=%s seconds=%.1f",
        config.label, n_rows, n_val, n_features, len(losses), config.epochs, best + 1, train_loss,
        "n/a" if val_loss is None else f"{val_loss:.6g}", np.round(engine.gmm["phi"], 4).tolist(), seconds,
    )
    result = TrainingResult(
        model=model,
        epochs_run=len(losses),
        train_loss=train_loss,
        val_loss=val_loss,
        seconds=round(seconds, 3),
        rows=n_rows,
        val_rows=n_val,
        best_epoch=best,
        history=history,
    )
    return AEGMMTrainingResult(result, engine)


_HINT = "lower learning_rate, raise w_cov_diag or scale the features"


class _Trainer:
    """The joint loss and its Adam steps over the encoder, decoder and density network."""

    def __init__(self, model: "keras.Model", config: AEGMMConfig):
        import keras
        import tensorflow as tf

        from segae_spark.models import aegmm_layers

        self.tf, self.ops, self.config = tf, aegmm_layers, config
        self.encoder, self.decoder, self.density = (model.get_layer(n) for n in ("encoder", "decoder", "density"))
        self.variables = [v for part in (self.encoder, self.decoder, self.density) for v in part.trainable_variables]
        self.optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
        self.optimizer.build(self.variables)
        self._steps = tf.function(self._train_steps, reduce_retracing=True)
        self._validation_loss = tf.function(lambda x: self._loss(x, training=False), reduce_retracing=True)

    def _loss(self, x, training: bool):
        tf, ops, config = self.tf, self.ops, self.config
        z_c = self.encoder(x, training=training)
        x_hat = self.decoder(z_c, training=training)
        z = tf.concat([tf.cast(z_c, tf.float64), ops.reconstruction_features(x, x_hat)], axis=1)
        gamma = self.density(tf.cast(z, tf.float32), training=training)
        phi, mu, cov = ops.gmm_params(z, gamma)
        energy = tf.reduce_mean(ops.sample_energy(z, phi, mu, cov))
        mse = tf.cast(tf.reduce_mean(tf.square(x - x_hat)), tf.float64)
        return mse + config.w_energy * energy + config.w_cov_diag * ops.covariance_penalty(cov)

    def _train_steps(self, data, index):
        """Adam steps over the batches ``data[index[s]]`` in order; returns the row-weighted loss sum."""
        tf = self.tf
        total = tf.constant(0.0, tf.float64)
        rows = tf.cast(tf.shape(index)[1], tf.float64)
        for s in tf.range(tf.shape(index)[0]):
            with tf.GradientTape() as tape:
                loss = self._loss(tf.gather(data, index[s]), training=True)
            gradients = tape.gradient(loss, self.variables)
            self.optimizer.apply_gradients(zip(gradients, self.variables))
            total += loss * rows
        return total

    def fit(self, x_train: np.ndarray, x_val: np.ndarray | None, seed: int) -> dict[str, list[float]]:
        """Train for ``epochs`` or until early stopping; the best validation epoch's weights are kept."""
        tf, config = self.tf, self.config
        data = tf.constant(x_train)
        n = len(x_train)
        batches = math.ceil(n / config.batch_size)
        history: dict[str, list[float]] = {"loss": []} | ({"val_loss": []} if x_val is not None else {})
        best, wait, best_weights = math.inf, 0, None
        for epoch in range(config.epochs):
            order = np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)
            parts = np.array_split(order, batches)  # sizes q + 1 first, then q
            total = 0.0
            for size in sorted({len(p) for p in parts}, reverse=True):
                index = np.stack([p for p in parts if len(p) == size])
                total += float(self._steps(data, tf.constant(index)))
            loss = total / n
            history["loss"].append(loss)
            if not math.isfinite(loss):
                raise ConfigError(f"AEGMM training diverged (loss={loss} at epoch {epoch + 1}); {_HINT}")
            if x_val is None:
                continue
            val_loss = float(self._validation_loss(tf.constant(x_val)))
            history["val_loss"].append(val_loss)
            if not math.isfinite(val_loss):
                raise ConfigError(f"AEGMM training diverged (val_loss={val_loss} at epoch {epoch + 1}); {_HINT}")
            # Keras' EarlyStopping: count, reset on improvement, stop at patience.
            wait += 1
            if val_loss < best:
                best, wait, best_weights = val_loss, 0, [v.numpy() for v in self.variables]
            elif wait >= config.early_stopping_patience and epoch > 0:
                break
        if best_weights is not None:
            for variable, value in zip(self.variables, best_weights):
                variable.assign(value)
        return history
