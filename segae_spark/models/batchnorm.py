"""The batch-normalised autoencoder (``type: batchnorm``): config and Keras architecture.

Each hidden block is ``Dense(width)`` without activation or bias (the
normalisation's ``beta`` is the bias), ``BatchNormalization``, then
``Activation`` and, when ``dropout > 0``, ``Dropout``; the output layer is the
dense autoencoder's. The fields, their validation and the training loop are
the dense autoencoder's (:class:`~segae_spark.models.dense.StackAutoencoderConfig`,
:func:`~segae_spark.models.dense.train_autoencoder`). The numpy engine reads
the trained model layer by layer, normalisation in inference mode included.

Keras is imported inside :func:`build_batchnorm_autoencoder` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from segae_spark.errors import ConfigError
from segae_spark.models.dense import StackAutoencoderConfig, _block_plan, _int, _output_layer, _regularizer, _seed

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["BATCHNORM_MOMENTUM", "BatchNormAutoencoderConfig", "build_batchnorm_autoencoder"]

BATCHNORM_MOMENTUM = 0.9
"""Momentum of the moving statistics. Keras' default (0.99) suits long
trainings; a segment's model often runs only a few hundred steps, and with
0.99 its moving mean and variance, which inference uses, would still lean
towards their initial values (0 and 1)."""


@dataclass(frozen=True)
class BatchNormAutoencoderConfig(StackAutoencoderConfig):
    """Architecture and training settings of the batch-normalised autoencoder.

    Same fields, defaults and validation as
    :class:`~segae_spark.models.dense.DenseAutoencoderConfig`.
    """

    type: ClassVar[str] = "batchnorm"
    label: ClassVar[str] = "batchnorm autoencoder"

    def build(self, n_features: int, seed: int, name: str | None = None) -> "keras.Model":
        return build_batchnorm_autoencoder(n_features, self, seed, name=name)


def build_batchnorm_autoencoder(
    n_features: int, config: BatchNormAutoencoderConfig, seed: int, name: str | None = None
) -> "keras.Model":
    """The uncompiled Keras model for ``n_features`` inputs; seeded like the dense one."""
    n_features = _int("n_features", n_features, low=1)
    seed = _seed(seed)
    if not isinstance(config, BatchNormAutoencoderConfig):
        raise ConfigError(f"config must be a BatchNormAutoencoderConfig, got {type(config).__name__}")
    import keras

    widths, names, seeds = _block_plan(config, seed)
    regularizer = _regularizer(config)

    layers: list = [keras.Input(shape=(n_features,), dtype="float32", name="features")]
    for i, (width, block) in enumerate(zip(widths, names)):
        layers += [
            keras.layers.Dense(
                width,
                activation=None,
                use_bias=False,
                kernel_initializer=keras.initializers.GlorotUniform(seed=seeds[2 * i]),
                kernel_regularizer=regularizer(),
                name=block,
            ),
            keras.layers.BatchNormalization(momentum=BATCHNORM_MOMENTUM, name=f"{block}_bn"),
            keras.layers.Activation(config.activation, name=f"{block}_activation"),
        ]
        if config.dropout > 0:
            layers.append(keras.layers.Dropout(config.dropout, seed=seeds[2 * i + 1], name=f"{block}_dropout"))
    layers.append(_output_layer(n_features, config, seeds[-1]))
    return keras.Sequential(layers, name=name or "batchnorm_autoencoder")
