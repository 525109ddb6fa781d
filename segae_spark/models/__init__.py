"""Autoencoders: Keras models for training, numpy (or Keras) engines for scoring.

Importing this package does not import TensorFlow or Keras: the training
modules (``dense``, ``batchnorm``, ``ensemble``, ``aegmm``, ``autoencoders``)
and ``keras_engine`` import them inside their functions, and
``numpy_engine`` / ``numpy_aegmm`` / ``reconstruction`` (the executors'
scoring path) never do. ``aegmm_layers`` (the AEGMM's TensorFlow loss and
Keras layers) is not imported here at all.

Training: ``autoencoder_config_from_dict`` (the ``type`` key picks ``dense``,
``batchnorm``, ``ensemble``, ``keras`` or ``aegmm``) and
``train_autoencoder_model`` (or ``train_user_model`` for a user's Keras
model) give a ``TrainedAutoencoder``. Scoring: ``load_engine`` (numpy, from
``.npz`` bytes) or ``load_scoring_engine`` (numpy when there is an ``.npz``,
else Keras), whose engines all expose ``row_errors(x, metric)`` and
``feature_errors(x)`` (an AEGMM's row error is its sample energy, whatever
the metric).
"""

from segae_spark.models.aegmm import AEGMMConfig, build_aegmm, train_aegmm
from segae_spark.models.autoencoders import (
    AUTOENCODER_TYPES,
    AutoencoderConfig,
    TrainedAutoencoder,
    autoencoder_config_from_dict,
    keras_model_bytes,
    train_autoencoder_model,
    train_user_model,
)
from segae_spark.models.batchnorm import BatchNormAutoencoderConfig, build_batchnorm_autoencoder
from segae_spark.models.dense import (
    DENSE_ACTIVATIONS,
    DenseAutoencoderConfig,
    StackAutoencoderConfig,
    TrainingResult,
    build_dense_autoencoder,
    fit_autoencoder,
)
from segae_spark.models.ensemble import EnsembleAutoencoderConfig, build_ensemble_model, member_seed, train_ensemble
from segae_spark.models.keras_engine import (
    KerasEngine,
    ScoringEngine,
    engine_from_keras,
    engine_kind,
    load_scoring_engine,
    numpy_engine_from_keras,
)
from segae_spark.models.numpy_engine import (
    ACTIVATIONS,
    ActivationLayer,
    BatchNormLayer,
    DenseLayer,
    NumpyAutoencoder,
    NumpyEnsemble,
    load_engine,
)
from segae_spark.models.numpy_aegmm import NumpyAEGMM
from segae_spark.models.reconstruction import THRESHOLD_METRICS, feature_errors, row_errors
from segae_spark.models.stacked import train_autoencoder, train_stacked

__all__ = [
    "ACTIVATIONS",
    "AEGMMConfig",
    "AUTOENCODER_TYPES",
    "ActivationLayer",
    "AutoencoderConfig",
    "BatchNormAutoencoderConfig",
    "BatchNormLayer",
    "DENSE_ACTIVATIONS",
    "DenseAutoencoderConfig",
    "DenseLayer",
    "EnsembleAutoencoderConfig",
    "KerasEngine",
    "NumpyAEGMM",
    "NumpyAutoencoder",
    "NumpyEnsemble",
    "ScoringEngine",
    "StackAutoencoderConfig",
    "THRESHOLD_METRICS",
    "TrainedAutoencoder",
    "TrainingResult",
    "autoencoder_config_from_dict",
    "build_aegmm",
    "build_batchnorm_autoencoder",
    "build_dense_autoencoder",
    "build_ensemble_model",
    "engine_from_keras",
    "engine_kind",
    "feature_errors",
    "fit_autoencoder",
    "keras_model_bytes",
    "load_engine",
    "load_scoring_engine",
    "member_seed",
    "numpy_engine_from_keras",
    "row_errors",
    "train_aegmm",
    "train_autoencoder",
    "train_stacked",
    "train_autoencoder_model",
    "train_ensemble",
    "train_user_model",
]
