"""Numpy scoring of the AEGMM detector (``type: aegmm``): sample energy on executors.

An AEGMM (Zong et al., "Deep Autoencoding Gaussian Mixture Model", ICLR 2018;
alibi-detect's ``OutlierAEGMM``) scores a row by its *sample energy*, the
negative log-likelihood of its latent vector under a Gaussian mixture:

- the encoder maps a row ``x`` to ``z_c`` and the decoder ``z_c`` to ``x_hat``;
- ``z = [z_c, relative Euclidean distance, cosine similarity]``, the two
  reconstruction features of :func:`reconstruction_features`;
- ``energy(z) = -log(sum_k phi_k N(z | mu_k, cov_k))``, computed as a
  log-sum-exp over components (:func:`sample_energy`).

The density network (``z -> gamma``, soft mixture memberships) is needed
only to estimate ``phi``, ``mu`` and ``cov`` (:func:`gmm_params`); it is
stored so that :meth:`NumpyAEGMM.gamma` can show which component a row
belongs to.

Numerical safeguards, shared with the TensorFlow side
(:mod:`segae_spark.models.aegmm_layers`) so that both compute the same
numbers: everything after the encoder / decoder is float64; every covariance
gets ``covariance_epsilon`` on its diagonal before its Cholesky factor is
taken (``log det`` is twice the sum of the log of that factor's diagonal);
the Mahalanobis term is solved by forward substitution against that factor;
mixture weights are floored at :data:`MIN_PHI`, so a component no row
belongs to has a finite log weight, a mean of 0 and a covariance of
``covariance_epsilon * I`` rather than NaNs; the relative distance is
divided by ``||x|| + norm_epsilon`` and capped at ``max_relative_distance``
(alibi-detect's cap), the cosine by ``||x|| ||x_hat|| + norm_epsilon``.

The scoring interface is the other engines': ``row_errors(x, metric)`` is
the row's *relative energy* whatever the metric (the energy is the AEGMM's
only score; an unknown metric name is still refused), and
``feature_errors(x)`` the squared reconstruction error of each feature,
which says which columns the autoencoder part failed on. The relative
energy is ``energy(z) - energy_floor``, where ``energy_floor = -log(sum_k
phi_k N_k(mu_k))`` is the energy the mixture's densest possible point could
have (a lower bound of every energy, reached for one Gaussian at its mean):
``log(p_max / p(z))`` with ``p_max`` that bound. It is never negative, and
for one component it is half the squared Mahalanobis distance to the mean.
A raw energy is negative wherever the density exceeds 1, which the
thresholds (``mean x ratio``) and the ``score_ratio`` column (``score /
threshold``) of the pipeline cannot handle; the shift is one constant per
model, so it changes no ranking within a model. :meth:`NumpyAEGMM.energy`
gives the raw sample energy (alibi-detect's ``instance_score``).

Weights are an ``.npz`` archive of format version 2, ``kind`` ``aegmm``: the
encoder, decoder and density stacks under the prefixes ``encoder/``,
``decoder/`` and ``density/`` (each as a single autoencoder's arrays, see
:mod:`.numpy_engine`), ``gmm_phi`` ``(K,)``, ``gmm_mu`` ``(K, D)``,
``gmm_cov`` ``(K, D, D)`` (float64, the covariances without the epsilon),
and the float64 scalars ``covariance_epsilon``, ``norm_epsilon`` and
``max_relative_distance``. numpy only, like :mod:`.numpy_engine`.
"""

from __future__ import annotations

import math

import numpy as np

from segae_spark.errors import ArtifactError
from segae_spark.models.numpy_engine import (
    NumpyAutoencoder,
    _autoencoder_v2,
    _check_batch_size,
    _check_metric,
    _header,
    _input_rows,
    _npz_bytes,
    _readonly,
    load_engine,
)
from segae_spark.models.reconstruction import feature_errors as _feature_errors

__all__ = [
    "COVARIANCE_EPSILON",
    "MAX_RELATIVE_DISTANCE",
    "MIN_PHI",
    "NORM_EPSILON",
    "NumpyAEGMM",
    "aegmm_from_arrays",
    "fit_mixture",
    "gmm_params",
    "reconstruction_features",
    "sample_energy",
]

COVARIANCE_EPSILON = 1e-6
"""Added to the diagonal of every mixture covariance (alibi-detect's value)."""

NORM_EPSILON = 1e-12
"""Keeps the reconstruction features finite for an all-zero row."""

MAX_RELATIVE_DISTANCE = 100.0
"""Cap on the relative Euclidean distance (alibi-detect's ``max_eucl``): one
wild reconstruction must not dominate the mixture's covariances."""

MIN_PHI = 1e-12
"""Floor of a mixture weight: keeps ``log(phi)`` and the means finite when no
row belongs to a component."""

_LOG_2PI = math.log(2.0 * math.pi)
_SCALARS = ("covariance_epsilon", "norm_epsilon", "max_relative_distance")


# ------------------------------------------------------------------ the math
def reconstruction_features(
    x: np.ndarray, x_hat: np.ndarray, norm_epsilon: float = NORM_EPSILON, max_relative_distance: float = MAX_RELATIVE_DISTANCE
) -> np.ndarray:
    """``[relative Euclidean distance, cosine similarity]`` of each row, float64 ``(n, 2)``.

    ``min(||x - x_hat|| / (||x|| + eps), max_relative_distance)`` and
    ``x . x_hat / (||x|| ||x_hat|| + eps)``, from float32 inputs in float64.
    """
    x = np.asarray(x, dtype=np.float64)
    x_hat = np.asarray(x_hat, dtype=np.float64)
    norm_x = np.sqrt(np.square(x).sum(axis=1))
    norm_hat = np.sqrt(np.square(x_hat).sum(axis=1))
    distance = np.sqrt(np.square(x - x_hat).sum(axis=1))
    relative = np.minimum(distance / (norm_x + norm_epsilon), max_relative_distance)
    cosine = (x * x_hat).sum(axis=1) / (norm_x * norm_hat + norm_epsilon)
    return np.stack([relative, cosine], axis=1)


def gmm_params(z: np.ndarray, gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(phi, mu, cov)`` of the mixture whose soft memberships of the rows ``z`` are ``gamma``.

    ``phi_k = max(mean_n gamma_nk, MIN_PHI)``, ``mu_k`` and ``cov_k`` the
    ``gamma_k``-weighted mean and covariance of ``z`` (divided by
    ``n phi_k``, the floored weight sum); float64, ``cov`` without epsilon.
    """
    z = np.asarray(z, dtype=np.float64)
    gamma = np.asarray(gamma, dtype=np.float64)
    n = z.shape[0]
    phi = np.maximum(gamma.sum(axis=0) / n, MIN_PHI)
    weight = n * phi
    mu = (gamma.T @ z) / weight[:, None]
    centred = z[:, None, :] - mu[None, :, :]
    cov = np.einsum("nk,nki,nkj->kij", gamma, centred, centred) / weight[:, None, None]
    return phi, mu, cov


def _cholesky(cov: np.ndarray, covariance_epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Cholesky factors of ``cov + eps I`` and their ``log det``; LinAlgError when one is not positive definite."""
    regularised = cov + covariance_epsilon * np.eye(cov.shape[-1])
    factor = np.linalg.cholesky(regularised)
    log_det = 2.0 * np.log(np.diagonal(factor, axis1=1, axis2=2)).sum(axis=1)
    return factor, log_det


def _energy(z: np.ndarray, log_phi: np.ndarray, mu: np.ndarray, factor: np.ndarray, log_det: np.ndarray) -> np.ndarray:
    # Forward substitution L v = z - mu per component (D is the latent width
    # plus 2, a handful), as tf.linalg.triangular_solve does; each row's
    # result depends on that row only.
    centred = z[None, :, :] - mu[:, None, :]  # (K, n, D)
    v = np.empty_like(centred)
    for i in range(centred.shape[2]):
        known = np.einsum("knj,kj->kn", v[:, :, :i], factor[:, i, :i])
        v[:, :, i] = (centred[:, :, i] - known) / factor[:, i, i][:, None]
    dims = z.shape[1]
    logits = log_phi[:, None] - 0.5 * (np.square(v).sum(axis=2) + dims * _LOG_2PI + log_det[:, None])
    top = logits.max(axis=0)
    return -(top + np.log(np.exp(logits - top).sum(axis=0)))


def sample_energy(
    z: np.ndarray, phi: np.ndarray, mu: np.ndarray, cov: np.ndarray, covariance_epsilon: float = COVARIANCE_EPSILON
) -> np.ndarray:
    """``-log(sum_k phi_k N(z | mu_k, cov_k + eps I))`` of each row of ``z``, float64 ``(n,)``.

    Written as a log-sum-exp over components; ValueError when a regularised
    covariance is not positive definite.
    """
    try:
        factor, log_det = _cholesky(np.asarray(cov, dtype=np.float64), covariance_epsilon)
    except np.linalg.LinAlgError:
        raise ValueError("a mixture covariance plus epsilon * I is not positive definite") from None
    log_phi = np.log(np.maximum(np.asarray(phi, dtype=np.float64), MIN_PHI))
    return _energy(np.asarray(z, dtype=np.float64), log_phi, np.asarray(mu, dtype=np.float64), factor, log_det)


# ------------------------------------------------------------------- engine
class NumpyAEGMM:
    """An AEGMM in numpy: reconstruction, latent vector, memberships and sample energy.

    ``encoder`` (``d -> latent``), ``decoder`` (``latent -> d``) and
    ``density`` (``latent + 2 -> K``, ending in softmax) are layer stacks
    run like :class:`~segae_spark.models.numpy_engine.NumpyAutoencoder`;
    ``phi`` ``(K,)``, ``mu`` ``(K, D)`` and ``cov`` ``(K, D, D)`` are the
    mixture fitted on the training rows, ``D = latent + 2``. The Cholesky
    factors are taken once, here. Instances are read-only and thread-safe.
    """

    def __init__(
        self,
        encoder: NumpyAutoencoder,
        decoder: NumpyAutoencoder,
        density: NumpyAutoencoder,
        phi: np.ndarray,
        mu: np.ndarray,
        cov: np.ndarray,
        *,
        covariance_epsilon: float = COVARIANCE_EPSILON,
        norm_epsilon: float = NORM_EPSILON,
        max_relative_distance: float = MAX_RELATIVE_DISTANCE,
    ):
        for name, stack in (("encoder", encoder), ("decoder", decoder), ("density", density)):
            if not isinstance(stack, NumpyAutoencoder):
                raise ValueError(f"{name} must be a NumpyAutoencoder layer stack, got {type(stack).__name__}")
        latent = encoder.n_outputs
        if (decoder.n_features, decoder.n_outputs) != (latent, encoder.n_features):
            raise ValueError(
                f"decoder maps {decoder.n_features} -> {decoder.n_outputs} features; expected "
                f"{latent} -> {encoder.n_features} (the encoder's output and input widths)"
            )
        if density.n_features != latent + 2:
            raise ValueError(
                f"density network takes {density.n_features} inputs; expected {latent + 2} "
                "(the latent width plus the two reconstruction features)"
            )
        k, dims = density.n_outputs, latent + 2
        phi, mu, cov = (_float64(a, name) for a, name in ((phi, "phi"), (mu, "mu"), (cov, "cov")))
        for name, array, shape in (("phi", phi, (k,)), ("mu", mu, (k, dims)), ("cov", cov, (k, dims, dims))):
            if array.shape != shape:
                raise ValueError(f"gmm {name} has shape {array.shape}; expected {shape} for {k} components of width {dims}")
        if np.any(phi <= 0):
            raise ValueError("gmm phi must be > 0 for every component")
        scalars = {}
        for name, value in zip(_SCALARS, (covariance_epsilon, norm_epsilon, max_relative_distance)):
            number = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
            scalars[name] = float(value)
        try:
            factor, log_det = _cholesky(cov, scalars["covariance_epsilon"])
        except np.linalg.LinAlgError:
            raise ValueError("a gmm covariance plus covariance_epsilon * I is not positive definite") from None
        self._encoder, self._decoder, self._density = encoder, decoder, density
        self._phi, self._mu, self._cov = _readonly(phi), _readonly(mu), _readonly(cov)
        self._scalars = scalars
        self._log_phi = _readonly(np.log(phi))
        self._factor, self._log_det = _readonly(factor), _readonly(log_det)
        # The energy of a point at every component's mean at once: a lower bound of every energy.
        peaks = self._log_phi - 0.5 * (dims * _LOG_2PI + log_det)
        top = peaks.max()
        self._energy_floor = float(-(top + np.log(np.exp(peaks - top).sum())))

    # ------------------------------------------------------------------ shape
    @property
    def n_features(self) -> int:
        return self._encoder.n_features

    @property
    def n_outputs(self) -> int:
        """Width of the reconstruction (``n_features``)."""
        return self._decoder.n_outputs

    @property
    def latent_dim(self) -> int:
        return self._encoder.n_outputs

    @property
    def n_gmm(self) -> int:
        return int(self._phi.shape[0])

    @property
    def gmm(self) -> dict[str, np.ndarray]:
        """The mixture: ``phi``, ``mu`` and ``cov`` (read-only float64 arrays)."""
        return {"phi": self._phi, "mu": self._mu, "cov": self._cov}

    @property
    def energy_floor(self) -> float:
        """``-log(sum_k phi_k N_k(mu_k))``: no row's energy is lower (see the module doc)."""
        return self._energy_floor

    @property
    def encoder(self) -> NumpyAutoencoder:
        return self._encoder

    @property
    def decoder(self) -> NumpyAutoencoder:
        return self._decoder

    @property
    def density(self) -> NumpyAutoencoder:
        return self._density

    def __repr__(self) -> str:
        return (
            f"NumpyAEGMM(features={self.n_features}, latent_dim={self.latent_dim}, n_gmm={self.n_gmm}, "
            f"phi={np.round(self._phi, 4).tolist()})"
        )

    # -------------------------------------------------------------- inference
    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """The reconstruction of ``x``, float32 ``(n, n_features)``."""
        return self._batched(x, batch_size, lambda xb: self._decoder._forward(self._encoder._forward(xb)))

    __call__ = predict

    def latent(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """``z = [z_c, relative distance, cosine]`` of each row, float64 ``(n, latent_dim + 2)``."""
        return self._batched(x, batch_size, self._latent)

    def gamma(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Each row's soft membership of each mixture component (the density network), float32 ``(n, n_gmm)``."""
        return self._batched(x, batch_size, lambda xb: self._density._forward(self._latent(xb).astype(np.float32)))

    def energy(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Sample energy of each row, float64 ``(n,)``: ``-log p(z)`` under the mixture."""
        return self._batched(x, batch_size, self._energy_of_rows)

    def row_errors(self, x: np.ndarray, metric: str = "mse", batch_size: int | None = None) -> np.ndarray:
        """The relative energy ``energy - energy_floor`` (>= 0), float64 ``(n,)``, whatever
        ``metric`` (validated, then ignored): the AEGMM's anomaly score (see the module doc)."""
        _check_metric(metric)
        relative = self.energy(x, batch_size)
        relative -= self._energy_floor
        return np.maximum(relative, 0.0, out=relative)  # rounding only: the floor bounds every energy

    def feature_errors(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Squared reconstruction error of each feature of each row, float64 ``(n, n_features)``."""
        return _feature_errors(x, self.predict(x, batch_size))

    def errors(self, x: np.ndarray, metric: str = "mse") -> tuple[np.ndarray, np.ndarray]:
        """``(row_errors, feature_errors)``: the relative energy and the squared reconstruction errors."""
        return self.row_errors(x, metric), self.feature_errors(x)

    def _latent(self, x: np.ndarray) -> np.ndarray:
        z_c = self._encoder._forward(x)
        x_hat = self._decoder._forward(z_c)
        s = self._scalars
        features = reconstruction_features(x, x_hat, s["norm_epsilon"], s["max_relative_distance"])
        return np.concatenate([z_c.astype(np.float64), features], axis=1)

    def _energy_of_rows(self, x: np.ndarray) -> np.ndarray:
        return _energy(self._latent(x), self._log_phi, self._mu, self._factor, self._log_det)

    def _batched(self, x, batch_size, fn) -> np.ndarray:
        """``fn`` over ``x`` in row batches of at most ``batch_size`` (memory only: rows are independent)."""
        x = _input_rows(x, self.n_features)
        _check_batch_size(batch_size)
        n = x.shape[0]
        if batch_size is None or batch_size >= n:
            return fn(x)
        return np.concatenate([fn(x[start : start + batch_size]) for start in range(0, n, batch_size)], axis=0)

    # ------------------------------------------------------------ persistence
    def to_npz_bytes(self) -> bytes:
        """The weights and mixture as ``.npz`` bytes (kind ``aegmm``), identical for identical models."""
        arrays = {**_header("aegmm")}
        for name, stack in (("encoder", self._encoder), ("decoder", self._decoder), ("density", self._density)):
            arrays.update(stack._arrays(prefix=f"{name}/"))
        arrays.update({"gmm_phi": self._phi, "gmm_mu": self._mu, "gmm_cov": self._cov})
        arrays.update({name: np.array(value, dtype=np.float64) for name, value in self._scalars.items()})
        return _npz_bytes(arrays)

    @classmethod
    def from_npz_bytes(cls, data: bytes) -> "NumpyAEGMM":
        """Load what :meth:`to_npz_bytes` wrote; ArtifactError on any other archive."""
        engine = load_engine(data)
        if not isinstance(engine, NumpyAEGMM):
            raise ArtifactError(f"weights archive holds a {type(engine).__name__}, not an AEGMM")
        return engine


def fit_mixture(
    encoder: NumpyAutoencoder, decoder: NumpyAutoencoder, density: NumpyAutoencoder, x: np.ndarray, batch_size: int | None = None
) -> NumpyAEGMM:
    """The AEGMM of these networks whose mixture is estimated from all the rows ``x``.

    The rows' ``z`` and memberships ``gamma`` (the density network in
    inference mode) are computed in batches of ``batch_size`` rows, then
    :func:`gmm_params` of all of them: the final mixture of a training,
    computed exactly as scoring computes ``z``. ValueError when a covariance
    is not positive definite even with its epsilon.
    """
    k, dims = density.n_outputs, encoder.n_outputs + 2
    untrained = NumpyAEGMM(encoder, decoder, density, np.full(k, 1.0 / k), np.zeros((k, dims)), np.zeros((k, dims, dims)))
    z = untrained.latent(x, batch_size)
    gamma = density.predict(z.astype(np.float32), batch_size)
    return NumpyAEGMM(encoder, decoder, density, *gmm_params(z, gamma))


def aegmm_from_arrays(arrays: dict[str, np.ndarray]) -> NumpyAEGMM:
    """Pop an AEGMM's arrays (a version-2 archive of kind ``aegmm``) and build it; ArtifactError if malformed."""
    stacks = [_autoencoder_v2(arrays, prefix=f"{name}/") for name in ("encoder", "decoder", "density")]
    missing = [name for name in ("gmm_phi", "gmm_mu", "gmm_cov", *_SCALARS) if name not in arrays]
    if missing:
        raise ArtifactError(f"aegmm weights archive lacks {missing}")
    phi, mu, cov = (arrays.pop(name) for name in ("gmm_phi", "gmm_mu", "gmm_cov"))
    scalars = {}
    for name in _SCALARS:
        value = arrays.pop(name)
        if value.shape != () or value.dtype.kind != "f":
            raise ArtifactError(f"aegmm weights archive: {name!r} must be a float scalar, got {value!r}")
        scalars[name] = float(value)
    try:
        return NumpyAEGMM(*stacks, phi, mu, cov, **scalars)
    except ValueError as exc:
        raise ArtifactError(f"aegmm weights archive is inconsistent: {exc}") from None


def _float64(array, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"gmm {name} must be numeric, got dtype {array.dtype}")
    array = np.array(array, dtype=np.float64, order="C", copy=True)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"gmm {name} has non-finite values (did training diverge?)")
    return array
