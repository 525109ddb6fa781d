"""Autoencoders: Keras models for training, a numpy engine for scoring.

Importing this package does not import TensorFlow or Keras: ``dense`` imports
them inside its functions, and ``numpy_engine`` / ``reconstruction`` (the
executors' scoring path) never do.
"""

from segae_spark.models.dense import (
    DENSE_ACTIVATIONS,
    DenseAutoencoderConfig,
    TrainingResult,
    build_dense_autoencoder,
    train_autoencoder,
)
from segae_spark.models.numpy_engine import ACTIVATIONS, NumpyAutoencoder
from segae_spark.models.reconstruction import THRESHOLD_METRICS, feature_errors, row_errors

__all__ = [
    "ACTIVATIONS",
    "DENSE_ACTIVATIONS",
    "DenseAutoencoderConfig",
    "NumpyAutoencoder",
    "THRESHOLD_METRICS",
    "TrainingResult",
    "build_dense_autoencoder",
    "feature_errors",
    "row_errors",
    "train_autoencoder",
]
