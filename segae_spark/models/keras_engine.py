"""Scoring with Keras itself: the fallback for user models the numpy engine cannot run.

Built-in architectures, and user models made only of the layers the numpy
engine reads, are scored in numpy (:mod:`.numpy_engine`; the AEGMM by
:mod:`.numpy_aegmm`). Any other Keras
model (convolutions, reshapes, custom layers, ...) is scored by
:class:`KerasEngine`, which exposes the same interface: ``row_errors(x,
metric)`` and ``feature_errors(x)``. :func:`engine_from_keras` picks the
engine for a model and :func:`engine_kind` says which it picked.

This is the only module of the package that imports TensorFlow / Keras on
the scoring path, and only inside :meth:`KerasEngine.from_keras_bytes` and
the engine's methods: importing it is as cheap as importing numpy.
A ``.keras`` file is loaded with ``safe_mode=True`` (no lambda or arbitrary
code deserialisation); a custom layer class must be registered with
``keras.saving.register_keras_serializable`` in the process that loads it.

A model with several outputs is read as an ensemble, each output being one
member's reconstruction (the format of a saved ensemble autoencoder): its
errors are the means of the per-output errors, as in
:class:`~segae_spark.models.numpy_engine.NumpyEnsemble`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Literal, Union

import numpy as np

from segae_spark.errors import ArtifactError
from segae_spark.models.numpy_engine import (
    MeanOfReconstructionErrors,
    NumpyAutoencoder,
    NumpyEnsemble,
    _check_batch_size,
    _mean,
    _output_count,
    load_engine,
)
from segae_spark.models.numpy_aegmm import NumpyAEGMM

__all__ = [
    "EngineKind",
    "KerasEngine",
    "ScoringEngine",
    "engine_from_keras",
    "engine_kind",
    "load_scoring_engine",
    "numpy_engine_from_keras",
]

logger = logging.getLogger("segae_spark")

EngineKind = Literal["numpy", "keras"]


class KerasEngine(MeanOfReconstructionErrors):
    """A Keras model behind the scoring interface (``row_errors``, ``feature_errors``).

    The model maps rows ``(n, d)`` to reconstructions ``(n, d)`` (or to a
    list of them, one per ensemble member). It runs with
    ``model.predict(x, batch_size=batch_size, verbose=0)``; errors are
    computed from its float32 outputs exactly as the numpy engines do.
    """

    def __init__(self, model, batch_size: int = 1024):
        if not hasattr(model, "predict"):
            raise ArtifactError(f"expected a Keras model, got {type(model).__name__}")
        _check_batch_size(batch_size)
        if batch_size is None:
            raise ValueError("batch_size must be a positive integer, got None")
        self._model = model
        self._batch_size = int(batch_size)
        self._n_members = _output_count(model)

    @classmethod
    def from_keras_bytes(cls, data: bytes, batch_size: int = 1024) -> "KerasEngine":
        """Load a ``.keras`` file's bytes (``safe_mode=True``, ``compile=False``)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ArtifactError(f"expected the bytes of a .keras file, got {type(data).__name__}")
        import keras

        with tempfile.TemporaryDirectory(prefix="segae-keras-") as tmp:
            path = os.path.join(tmp, "model.keras")
            with open(path, "wb") as fh:
                fh.write(bytes(data))
            try:
                model = keras.saving.load_model(path, safe_mode=True, compile=False)
            except Exception as exc:  # bad zip, unknown/unsafe layer, version mismatch ...
                raise ArtifactError(f"the .keras model cannot be loaded: {type(exc).__name__}: {exc}") from None
        return cls(model, batch_size=batch_size)

    # ------------------------------------------------------------------ shape
    @property
    def model(self):
        return self._model

    @property
    def n_members(self) -> int:
        """Number of model outputs (1 unless the model is an ensemble)."""
        return self._n_members

    @property
    def n_features(self) -> int | None:
        """Width of the input rows, when the model declares it."""
        shape = getattr(self._model, "input_shape", None)
        if isinstance(shape, tuple) and shape and isinstance(shape[-1], int):
            return int(shape[-1])
        return None

    def __repr__(self) -> str:
        return f"KerasEngine(model={getattr(self._model, 'name', '?')!r}, members={self._n_members})"

    # -------------------------------------------------------------- inference
    def reconstructions(self, x: np.ndarray, batch_size: int | None = None) -> list[np.ndarray]:
        """Each output's reconstruction of ``x``, float32 ``(n, d)``."""
        x = np.asarray(x)
        n_features = self.n_features
        if x.ndim != 2 or (n_features is not None and x.shape[1] != n_features):
            raise ValueError(f"expected an array of shape (n, {n_features or 'd'}), got shape {x.shape}")
        if x.dtype.kind not in "fiub":
            raise ValueError(f"expected a numeric array, got dtype {x.dtype}")
        _check_batch_size(batch_size)
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        if x32.shape[0] == 0:
            return [np.zeros(x32.shape, np.float32) for _ in range(self._n_members)]
        outputs = self._model.predict(x32, batch_size=batch_size or self._batch_size, verbose=0)
        if isinstance(outputs, dict):
            outputs = list(outputs.values())
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        recons = [np.asarray(o, dtype=np.float32) for o in outputs]
        for j, r in enumerate(recons):
            if r.shape != x32.shape:
                which = "" if len(recons) == 1 else f" output {j}"
                raise ValueError(
                    f"model {getattr(self._model, 'name', '?')!r}{which} gives shape {r.shape} for input "
                    f"{x32.shape}; an autoencoder must reconstruct its input"
                )
        return recons

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """The reconstruction (the outputs' mean for an ensemble), float32."""
        recons = self.reconstructions(x, batch_size)
        if len(recons) == 1:
            return recons[0]
        return _mean([r.astype(np.float64) for r in recons]).astype(np.float32)

    __call__ = predict


ScoringEngine = Union[NumpyAutoencoder, NumpyEnsemble, NumpyAEGMM, KerasEngine]


def numpy_engine_from_keras(model, *, verify: bool = True) -> NumpyAutoencoder | NumpyEnsemble:
    """The numpy engine of a Keras model (an ensemble for a multi-output model);
    ArtifactError naming the first layer it cannot compute."""
    if _output_count(model) > 1:
        return NumpyEnsemble.from_keras(model, verify=verify)
    return NumpyAutoencoder.from_keras(model, verify=verify)


def engine_from_keras(model, batch_size: int = 1024) -> ScoringEngine:
    """The engine that scores ``model``: numpy when it reads every layer, else Keras."""
    try:
        return numpy_engine_from_keras(model)
    except ArtifactError as exc:
        logger.info("model %r is scored with Keras, not numpy: %s", getattr(model, "name", "?"), exc)
        return KerasEngine(model, batch_size=batch_size)


def engine_kind(model) -> EngineKind:
    """``"numpy"`` if the numpy engine can score this Keras model, else ``"keras"``."""
    return "keras" if isinstance(engine_from_keras(model), KerasEngine) else "numpy"


def load_scoring_engine(npz: bytes | None = None, keras: bytes | None = None) -> ScoringEngine:
    """The engine of a stored model: numpy from its ``.npz`` when there is one,
    else Keras from its ``.keras`` (a user model the numpy engine cannot run)."""
    if npz is not None:
        return load_engine(npz)
    if keras is not None:
        return KerasEngine.from_keras_bytes(keras)
    raise ArtifactError("a stored model needs its .npz or its .keras bytes; got neither")
