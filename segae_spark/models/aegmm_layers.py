"""The AEGMM's TensorFlow side: its loss terms and the two custom Keras layers of its model.

The math is :mod:`.numpy_aegmm`'s, written with the same operations in the
same order and in float64, with the same safeguards (covariance epsilon,
floored mixture weights, capped relative distance), so that training, the
saved Keras model and numpy scoring agree. Importing this module imports
TensorFlow and Keras: only AEGMM training imports it (lazily), and a
process that loads a saved AEGMM ``.keras`` file must import it first, since
that registers :class:`ReconstructionFeatures` and :class:`GMMEnergy` with
Keras (``keras.saving.load_model(path, safe_mode=True)`` then reads the file
without running any other code). Scoring never imports it.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from segae_spark.models.numpy_aegmm import COVARIANCE_EPSILON, MAX_RELATIVE_DISTANCE, MIN_PHI, NORM_EPSILON

__all__ = [
    "GMMEnergy",
    "ReconstructionFeatures",
    "covariance_penalty",
    "gmm_params",
    "reconstruction_features",
    "sample_energy",
]

_LOG_2PI = math.log(2.0 * math.pi)


def reconstruction_features(
    x, x_hat, norm_epsilon: float = NORM_EPSILON, max_relative_distance: float = MAX_RELATIVE_DISTANCE
):
    """``[relative Euclidean distance, cosine similarity]`` per row, float64 ``(n, 2)``."""
    x = tf.cast(x, tf.float64)
    x_hat = tf.cast(x_hat, tf.float64)
    norm_x = tf.sqrt(tf.reduce_sum(tf.square(x), axis=1))
    norm_hat = tf.sqrt(tf.reduce_sum(tf.square(x_hat), axis=1))
    distance = tf.sqrt(tf.reduce_sum(tf.square(x - x_hat), axis=1))
    relative = tf.minimum(distance / (norm_x + norm_epsilon), tf.constant(max_relative_distance, tf.float64))
    cosine = tf.reduce_sum(x * x_hat, axis=1) / (norm_x * norm_hat + norm_epsilon)
    return tf.stack([relative, cosine], axis=1)


def gmm_params(z, gamma):
    """``(phi, mu, cov)`` from soft memberships, as :func:`.numpy_aegmm.gmm_params` (float64)."""
    z = tf.cast(z, tf.float64)
    gamma = tf.cast(gamma, tf.float64)
    n = tf.cast(tf.shape(z)[0], tf.float64)
    phi = tf.maximum(tf.reduce_sum(gamma, axis=0) / n, MIN_PHI)
    weight = n * phi
    mu = tf.matmul(gamma, z, transpose_a=True) / weight[:, None]
    centred = z[:, None, :] - mu[None, :, :]
    cov = tf.einsum("nk,nki,nkj->kij", gamma, centred, centred) / weight[:, None, None]
    return phi, mu, cov


def _regularised(cov, covariance_epsilon: float):
    return cov + covariance_epsilon * tf.eye(tf.shape(cov)[-1], dtype=tf.float64)


def sample_energy(z, phi, mu, cov, covariance_epsilon: float = COVARIANCE_EPSILON):
    """``-log(sum_k phi_k N(z | mu_k, cov_k + eps I))`` per row, float64 ``(n,)`` (log-sum-exp)."""
    z = tf.cast(z, tf.float64)
    factor = tf.linalg.cholesky(_regularised(tf.cast(cov, tf.float64), covariance_epsilon))
    log_det = 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(factor)), axis=1)
    centred = z[None, :, :] - tf.cast(mu, tf.float64)[:, None, :]  # (K, n, D)
    v = tf.linalg.triangular_solve(factor, tf.transpose(centred, [0, 2, 1]), lower=True)  # (K, D, n)
    dims = tf.cast(tf.shape(z)[1], tf.float64)
    log_phi = tf.math.log(tf.maximum(tf.cast(phi, tf.float64), MIN_PHI))
    logits = log_phi[:, None] - 0.5 * (tf.reduce_sum(tf.square(v), axis=1) + dims * _LOG_2PI + log_det[:, None])
    return -tf.reduce_logsumexp(logits, axis=0)


def covariance_penalty(cov, covariance_epsilon: float = COVARIANCE_EPSILON):
    """``sum_k sum_i 1 / (cov_k + eps I)_ii``: DAGMM's guard against collapsing components."""
    return tf.reduce_sum(1.0 / tf.linalg.diag_part(_regularised(cov, covariance_epsilon)))


@keras.saving.register_keras_serializable(package="segae_spark")
class ReconstructionFeatures(keras.layers.Layer):
    """``[x, x_hat] -> [relative Euclidean distance, cosine similarity]``, float64 ``(n, 2)``."""

    def __init__(self, norm_epsilon: float = NORM_EPSILON, max_relative_distance: float = MAX_RELATIVE_DISTANCE, **kwargs):
        kwargs.setdefault("dtype", "float64")
        super().__init__(**kwargs)
        self.norm_epsilon = float(norm_epsilon)
        self.max_relative_distance = float(max_relative_distance)

    def call(self, inputs):
        x, x_hat = inputs
        return reconstruction_features(x, x_hat, self.norm_epsilon, self.max_relative_distance)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 2)

    def get_config(self) -> dict:
        return {**super().get_config(), "norm_epsilon": self.norm_epsilon, "max_relative_distance": self.max_relative_distance}


@keras.saving.register_keras_serializable(package="segae_spark")
class GMMEnergy(keras.layers.Layer):
    """``z -> sample energy`` under a fixed mixture held as non-trainable float64 weights.

    Training sets ``phi``, ``mu`` and ``cov`` once, after the networks are
    trained, from all the training rows; the saved model then scores like
    the numpy engine.
    """

    def __init__(self, n_gmm: int, covariance_epsilon: float = COVARIANCE_EPSILON, **kwargs):
        kwargs.setdefault("dtype", "float64")
        super().__init__(**kwargs)
        self.n_gmm = int(n_gmm)
        self.covariance_epsilon = float(covariance_epsilon)

    def build(self, input_shape):
        dims = int(input_shape[-1])
        k = self.n_gmm
        self.phi = self.add_weight(
            shape=(k,), initializer=keras.initializers.Constant(1.0 / k), trainable=False, dtype="float64", name="phi"
        )
        self.mu = self.add_weight(shape=(k, dims), initializer="zeros", trainable=False, dtype="float64", name="mu")
        self.cov = self.add_weight(shape=(k, dims, dims), initializer="zeros", trainable=False, dtype="float64", name="cov")

    def call(self, z):
        return sample_energy(z, self.phi, self.mu, self.cov, self.covariance_epsilon)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def get_config(self) -> dict:
        return {**super().get_config(), "n_gmm": self.n_gmm, "covariance_epsilon": self.covariance_epsilon}

