"""Numpy inference for the built-in autoencoders: the executors' scoring engine.

Executors score with this module so that the scoring path never imports
TensorFlow (seconds of start-up and hundreds of MB per Python worker). It
therefore imports numpy and nothing heavier, not even lazily: a Keras model
handed to :meth:`NumpyAutoencoder.from_keras` is read by duck typing.

A :class:`NumpyAutoencoder` is a sequence of typed layers, the inference-time
layers of the built-in architectures:

- :class:`DenseLayer` -- ``activation(x @ kernel + bias)``, the order of
  operations of Keras 3 ``Dense`` on the TensorFlow backend in float32, with
  each activation written the way the TensorFlow kernel computes it
  (``leaky_relu`` with Keras' default slope 0.2, ``gelu`` as
  ``0.5 * x * erfc(-x / sqrt(2))``, ``selu`` with float32 ``scale`` and
  ``scale * alpha``, ``softmax`` over the row, for the AEGMM's density
  network);
- :class:`BatchNormLayer` -- Keras ``BatchNormalization`` in inference mode,
  computed as ``tf.nn.batch_normalization`` does in float32:
  ``inv = rsqrt(moving_variance + epsilon) * gamma``, then
  ``x * inv + (beta - moving_mean * inv)``;
- :class:`ActivationLayer` -- Keras ``Activation``.

A :class:`NumpyEnsemble` holds several autoencoders; its row and feature
errors are the means of its members' errors (not the errors of the mean
reconstruction). :func:`load_engine` reads either from ``.npz`` bytes.

The one deliberate difference from Keras is the matrix product: float32
inputs and kernels are multiplied with float64 accumulation and rounded once
to float32 (then the float32 bias is added, as Keras does). A float32 BLAS
product gives a row different bits depending on how many rows share the call
(OpenBLAS picks kernels and blocking by matrix size: 15-70% of elements
changed between batch sizes in our measurements), which would make a row's
score depend on its Arrow batch. With float64 accumulation a row's output
depends only on the row, and it is the correctly rounded product in all but
rare double-rounding cases, so it agrees with Keras' float32 product to about
1e-6 (the tests hold it to 1e-5). Matrix products cost about twice as much;
activations dominate anyway.

Weights are stored as ``.npz`` (no pickle), format version 2:

- ``format_version`` (int64, 2) and ``kind`` (unicode: ``autoencoder`` or
  ``ensemble``);
- an autoencoder: ``layer_types`` (unicode, one of ``dense``, ``batch_norm``,
  ``activation`` per layer), ``activations`` (unicode, per layer; empty for
  ``batch_norm``) and, for layer ``i``, ``kernel_i`` / ``bias_i`` (dense) or
  ``gamma_i`` / ``beta_i`` / ``moving_mean_i`` / ``moving_variance_i`` /
  ``epsilon_i`` (batch_norm);
- an ensemble: ``members`` (int64 count) and member ``j``'s autoencoder
  arrays under the prefix ``member_j/``;
- ``kind`` ``aegmm``: an AEGMM detector (encoder, decoder and density
  stacks plus its Gaussian mixture), laid out and scored by
  :mod:`.numpy_aegmm`.

Version 1 (a plain Dense stack: ``kernel_i``, ``bias_i``, ``activations``)
is still read, as a stack of :class:`DenseLayer`.
"""

from __future__ import annotations

import io
import zipfile
from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple, Sequence, Union

import numpy as np

from segae_spark.errors import ArtifactError, ConfigError
from segae_spark.models.reconstruction import THRESHOLD_METRICS
from segae_spark.models.reconstruction import feature_errors as _feature_errors
from segae_spark.models.reconstruction import row_errors as _row_errors

if TYPE_CHECKING:  # pragma: no cover
    from segae_spark.models.numpy_aegmm import NumpyAEGMM

__all__ = [
    "ACTIVATIONS",
    "ActivationLayer",
    "BatchNormLayer",
    "DenseLayer",
    "NPZ_FORMAT_VERSION",
    "NumpyAutoencoder",
    "NumpyEnsemble",
    "canonical_activation",
    "load_engine",
]

NPZ_FORMAT_VERSION = 2
"""Version written by ``to_npz_bytes``; versions 1 and 2 are read."""

READABLE_NPZ_VERSIONS = (1, 2)

# SELU constants as TensorFlow's kernel holds them (float32, product precomputed).
_SELU_SCALE = np.float32(1.0507009873554804934193349852946)
_SELU_SCALE_ALPHA = np.float32(1.7580993408473768599402175208123)
_LEAKY_RELU_SLOPE = np.float32(0.2)  # keras.activations.leaky_relu's default
_INV_SQRT2 = np.float32(0.7071067811865476)


# Each function takes a float32 array, leaves it unchanged and returns a new
# float32 array; temporaries are reused in place because scoring calls these
# on millions of rows.


def _relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, np.float32(0.0))


def _tanh(z: np.ndarray) -> np.ndarray:
    return np.tanh(z)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # 1 / (1 + exp(-z)) has no cancellation anywhere; exp overflows to inf for
    # z < -88.7, giving 0 where the true value is below float32's normal range.
    t = np.negative(z)
    with np.errstate(over="ignore"):
        np.exp(t, out=t)
    t += np.float32(1.0)
    return np.reciprocal(t, out=t)


def _linear(z: np.ndarray) -> np.ndarray:
    return z


def _elu(z: np.ndarray) -> np.ndarray:
    # expm1(min(z, 0)) is 0 for z > 0 and >= z for z <= 0, so the maximum
    # picks exactly tf.nn.elu's branch.
    t = np.minimum(z, np.float32(0.0))
    np.expm1(t, out=t)
    return np.maximum(z, t, out=t)


def _selu(z: np.ndarray) -> np.ndarray:
    # scale * max(z, 0) + scale_alpha * expm1(min(z, 0)): one of the two terms
    # is exactly 0, so each row gets tf.nn.selu's branch unchanged.
    t = np.minimum(z, np.float32(0.0))
    np.expm1(t, out=t)
    t *= _SELU_SCALE_ALPHA
    t += np.maximum(z, np.float32(0.0)) * _SELU_SCALE
    return t


def _leaky_relu(z: np.ndarray) -> np.ndarray:
    # max(z, 0.2 z) is z for z > 0 and 0.2 z otherwise (slope < 1).
    t = np.multiply(z, _LEAKY_RELU_SLOPE)
    return np.maximum(z, t, out=t)


def _softplus(z: np.ndarray) -> np.ndarray:
    # max(z, 0) + log1p(exp(-|z|)): no overflow, no cancellation.
    t = np.abs(z)
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.log1p(t, out=t)
    t += np.maximum(z, np.float32(0.0))
    return t


def _erfc(u: np.ndarray) -> np.ndarray:
    """Complementary error function in float64.

    Chebyshev-fitted exponential (Numerical Recipes' ``erfcc``), relative
    error below 1.1e-7 wherever erfc is above float32's smallest normal
    number: about one float32 ulp, with no cancellation in the tails, which
    is what float32 GELU needs. numpy has no erf, and scipy is not imported
    on the scoring path.
    """
    u = np.asarray(u, dtype=np.float64)
    a = np.abs(u)
    t = 0.5 * a
    t += 1.0
    np.reciprocal(t, out=t)
    poly = np.multiply(t, 0.17087277)
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806,
              0.09678418, 0.37409196, 1.00002368):
        poly += c
        poly *= t
    poly -= 1.26551223
    np.square(a, out=a)
    poly -= a
    with np.errstate(under="ignore"):  # exp -> 0 for a > ~27: erfc's float64 value
        np.exp(poly, out=poly)
    poly *= t
    return np.where(u < 0, 2.0 - poly, poly)


def _gelu(z: np.ndarray) -> np.ndarray:
    # tf.nn.gelu(approximate=False): 0.5 * x * erfc(-x * 0.70710678) in float32.
    e = _erfc(np.multiply(z, -_INV_SQRT2)).astype(np.float32)
    t = np.multiply(np.float32(0.5), z)
    t *= e
    return t


def _silu(z: np.ndarray) -> np.ndarray:
    t = _sigmoid(z)
    t *= z
    return t


def _softmax(z: np.ndarray) -> np.ndarray:
    # tf.nn.softmax over the last axis: exp(z - max) / sum, each row on its own.
    t = z - z.max(axis=-1, keepdims=True)
    np.exp(t, out=t)
    t /= t.sum(axis=-1, keepdims=True)
    return t


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": _relu,
    "tanh": _tanh,
    "sigmoid": _sigmoid,
    "linear": _linear,
    "elu": _elu,
    "selu": _selu,
    "leaky_relu": _leaky_relu,
    "softplus": _softplus,
    "gelu": _gelu,
    "silu": _silu,
    "softmax": _softmax,
}
"""Activations the engine computes, by Keras' registered name."""

# Names Keras accepts for the same function; Keras reports the canonical one.
_ALIASES = {"swish": "silu", None: "linear"}


def canonical_activation(name: str | None) -> str:
    """Keras' name for an activation (``swish`` -> ``silu``); ValueError if unsupported."""
    canonical = _ALIASES.get(name, name)
    if canonical not in ACTIVATIONS:
        allowed = sorted(set(ACTIVATIONS) | {a for a in _ALIASES if a})
        raise ValueError(f"activation {name!r} is not supported; expected one of {allowed}")
    return canonical



# -------------------------------------------------------------------- layers
class DenseLayer(NamedTuple):
    """``activation(x @ kernel + bias)``: ``kernel`` ``(in, out)``, ``bias`` ``(out,)``.

    A plain ``(kernel, bias, activation)`` tuple is read as this layer.
    """

    kernel: np.ndarray
    bias: np.ndarray
    activation: str = "linear"
    kind = "dense"


class BatchNormLayer(NamedTuple):
    """Keras ``BatchNormalization`` over the features, in inference mode.

    Each array has one value per feature; ``epsilon`` is Keras' (1e-3 by
    default). A layer built with ``scale=False`` / ``center=False`` is this
    layer with ``gamma`` all ones / ``beta`` all zeros (the same float32
    arithmetic).
    """

    gamma: np.ndarray
    beta: np.ndarray
    moving_mean: np.ndarray
    moving_variance: np.ndarray
    epsilon: float = 1e-3
    kind = "batch_norm"


class ActivationLayer(NamedTuple):
    """Keras ``Activation``: an activation applied on its own."""

    activation: str
    kind = "activation"


Layer = Union[DenseLayer, BatchNormLayer, ActivationLayer]
LAYER_TYPES = ("dense", "batch_norm", "activation")
"""Layer types the engine computes (the ``layer_types`` names in the npz)."""

# Arrays each layer type stores in the npz, as ``{name}_{layer index}``.
_LAYER_ARRAYS = {
    "dense": ("kernel", "bias"),
    "batch_norm": ("gamma", "beta", "moving_mean", "moving_variance", "epsilon"),
    "activation": (),
}


def _coerce_layer(layer, i: int) -> Layer:
    """A validated copy of one layer: float32, C-contiguous, read-only arrays."""
    if isinstance(layer, BatchNormLayer):
        gamma = _weight(layer.gamma, f"layer {i} gamma", ndim=1)
        n = gamma.shape[0]
        arrays = [gamma]
        for name in ("beta", "moving_mean", "moving_variance"):
            array = _weight(getattr(layer, name), f"layer {i} {name}", ndim=1)
            if array.shape[0] != n:
                raise ValueError(f"layer {i}: batch_norm {name} has {array.shape[0]} values but gamma has {n}")
            arrays.append(array)
        epsilon = np.asarray(layer.epsilon)
        if epsilon.shape != () or epsilon.dtype.kind not in "fiu" or not np.isfinite(epsilon) or epsilon < 0:
            raise ValueError(f"layer {i}: batch_norm epsilon must be a finite number >= 0, got {layer.epsilon!r}")
        epsilon = float(epsilon)
        if np.any(arrays[3] + np.float32(epsilon) <= 0):
            raise ValueError(f"layer {i}: batch_norm moving_variance + epsilon must be > 0 for every feature")
        return BatchNormLayer(*arrays, epsilon)
    if isinstance(layer, ActivationLayer):
        return ActivationLayer(_canonical(layer.activation, i))
    try:
        kernel, bias, activation = layer
    except (TypeError, ValueError):
        raise ValueError(
            f"layer {i}: expected a (kernel, bias, activation) tuple, a DenseLayer, BatchNormLayer or "
            f"ActivationLayer, got {type(layer).__name__}"
        ) from None
    kernel = _weight(kernel, f"layer {i} kernel", ndim=2)
    bias = _weight(bias, f"layer {i} bias", ndim=1)
    if bias.shape[0] != kernel.shape[1]:
        raise ValueError(
            f"layer {i}: bias has {bias.shape[0]} values but the kernel has "
            f"{kernel.shape[1]} outputs (kernel shape {kernel.shape})"
        )
    return DenseLayer(kernel, bias, _canonical(activation, i))


def _canonical(activation, i: int) -> str:
    try:
        return canonical_activation(activation)
    except ValueError as exc:
        raise ValueError(f"layer {i}: {exc}") from None


def _widths(layer: Layer) -> tuple[int, int] | None:
    """``(inputs, outputs)`` of a layer; None for a layer of any width."""
    if layer.kind == "dense":
        return int(layer.kernel.shape[0]), int(layer.kernel.shape[1])
    if layer.kind == "batch_norm":
        return int(layer.gamma.shape[0]), int(layer.gamma.shape[0])
    return None


Step = Callable[[np.ndarray], np.ndarray]


def _dense_step(layer: DenseLayer) -> Step:
    kernel64 = _readonly(layer.kernel.astype(np.float64))
    bias = layer.bias
    activation = ACTIVATIONS[layer.activation]

    def step(h: np.ndarray) -> np.ndarray:
        z = (h.astype(np.float64) @ kernel64).astype(np.float32)
        z += bias
        return activation(z)

    return step


def _batch_norm_step(layer: BatchNormLayer) -> Step:
    # tf.nn.batch_normalization in float32: inv = rsqrt(var + eps) * gamma,
    # then x * inv + (beta - mean * inv), every operation rounded to float32.
    inv = np.sqrt(layer.moving_variance + np.float32(layer.epsilon))
    np.divide(np.float32(1.0), inv, out=inv)
    inv *= layer.gamma
    offset = layer.beta - layer.moving_mean * inv
    inv, offset = _readonly(inv), _readonly(offset)

    def step(h: np.ndarray) -> np.ndarray:
        t = np.multiply(h, inv)
        t += offset
        return t

    return step


def _activation_step(layer: ActivationLayer) -> Step:
    return ACTIVATIONS[layer.activation]


_STEPS = {"dense": _dense_step, "batch_norm": _batch_norm_step, "activation": _activation_step}


def _check_metric(metric: str) -> None:
    # Checked before any forward pass, with reconstruction.row_errors' message.
    if metric not in THRESHOLD_METRICS:
        raise ConfigError(f"threshold_metric {metric!r} is not supported; expected one of {list(THRESHOLD_METRICS)}")


# --------------------------------------------------------------- autoencoder
class NumpyAutoencoder:
    """Forward pass of a sequence of typed layers, the math of Keras inference.

    ``layers`` holds :class:`DenseLayer` (or plain ``(kernel, bias,
    activation)`` tuples), :class:`BatchNormLayer` and
    :class:`ActivationLayer`, with at least one dense layer; each layer's
    input width must equal the previous layer's output width. The arrays are
    copied to float32 and made read-only, so one instance can be shared by
    threads.

    The scoring interface (shared with :class:`NumpyEnsemble` and
    :class:`~segae_spark.models.keras_engine.KerasEngine`) is
    :meth:`row_errors` and :meth:`feature_errors`.
    """

    def __init__(self, layers: Iterable[Layer | tuple[np.ndarray, np.ndarray, str]]):
        layers = list(layers)
        typed: list[Layer] = []
        width: int | None = None
        width_from = -1
        for i, layer in enumerate(layers):
            layer = _coerce_layer(layer, i)
            widths = _widths(layer)
            if widths is not None:
                n_in, n_out = widths
                if width is not None and n_in != width:
                    what = "kernel expects" if layer.kind == "dense" else "batch_norm has"
                    noun = "inputs" if layer.kind == "dense" else "features"
                    raise ValueError(f"layer {i}: {what} {n_in} {noun} but layer {width_from} outputs {width}")
                width, width_from = n_out, i
            typed.append(layer)
        if not any(layer.kind == "dense" for layer in typed):
            raise ValueError("NumpyAutoencoder needs at least one Dense layer; got none")
        self._layers = tuple(typed)
        self._steps = tuple(_STEPS[layer.kind](layer) for layer in typed)
        sized = [_widths(layer) for layer in typed if _widths(layer) is not None]
        self._n_features = sized[0][0]
        self._n_outputs = sized[-1][1]

    # ------------------------------------------------------------------ shape
    @property
    def n_features(self) -> int:
        """Width of the input rows."""
        return self._n_features

    @property
    def n_outputs(self) -> int:
        """Width of the output rows (``n_features`` for an autoencoder)."""
        return self._n_outputs

    @property
    def activations(self) -> tuple[str, ...]:
        """Activation of each dense and activation layer, in order."""
        return tuple(layer.activation for layer in self._layers if layer.kind != "batch_norm")

    @property
    def layer_types(self) -> tuple[str, ...]:
        """``dense`` / ``batch_norm`` / ``activation`` for each layer."""
        return tuple(layer.kind for layer in self._layers)

    @property
    def layers(self) -> list[Layer]:
        """The typed layers (read-only arrays); a dense layer unpacks as ``(kernel, bias, activation)``."""
        return list(self._layers)

    def __repr__(self) -> str:
        if all(layer.kind == "dense" for layer in self._layers):
            widths = [self.n_features] + [int(layer.kernel.shape[1]) for layer in self._layers]
            return f"NumpyAutoencoder(widths={widths}, activations={list(self.activations)})"
        parts = []
        for layer in self._layers:
            if layer.kind == "dense":
                parts.append(f"dense({layer.kernel.shape[0]}->{layer.kernel.shape[1]}, {layer.activation})")
            elif layer.kind == "batch_norm":
                parts.append(f"batch_norm({layer.gamma.shape[0]})")
            else:
                parts.append(f"activation({layer.activation})")
        return f"NumpyAutoencoder(layers=[{', '.join(parts)}])"

    # -------------------------------------------------------------- inference
    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Reconstruct ``x`` (shape ``(n, n_features)``); float32 ``(n, n_outputs)``.

        ``batch_size`` bounds the memory of the intermediate activations; the
        result does not depend on it. Non-finite inputs propagate to the output.
        """
        x = _input_rows(x, self.n_features)
        _check_batch_size(batch_size)
        n = x.shape[0]
        if batch_size is None or batch_size >= n:
            return self._forward(x)
        out = np.empty((n, self.n_outputs), dtype=np.float32)
        for start in range(0, n, batch_size):
            out[start : start + batch_size] = self._forward(x[start : start + batch_size])
        return out

    __call__ = predict

    def row_errors(self, x: np.ndarray, metric: str = "mse", batch_size: int | None = None) -> np.ndarray:
        """Reconstruction error of each row, float64 ``(n,)``; ``metric`` as in
        :func:`~segae_spark.models.reconstruction.row_errors`."""
        _check_metric(metric)
        return _row_errors(x, self.predict(x, batch_size), metric)

    def feature_errors(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Squared error of each feature of each row, float64 ``(n, n_features)``."""
        return _feature_errors(x, self.predict(x, batch_size))

    def errors(self, x: np.ndarray, metric: str = "mse") -> tuple[np.ndarray, np.ndarray]:
        """``(row_errors, feature_errors)`` from one reconstruction of ``x``."""
        _check_metric(metric)
        x_hat = self.predict(x)
        return _row_errors(x, x_hat, metric), _feature_errors(x, x_hat)

    def _forward(self, h: np.ndarray) -> np.ndarray:
        for step in self._steps:
            h = step(h)
        return np.asarray(h, dtype=np.float32)

    # ------------------------------------------------------------ persistence
    def to_npz_bytes(self) -> bytes:
        """The weights as ``.npz`` bytes (format version 2), identical for identical weights.

        The archive is what ``np.savez`` writes (readable by ``np.load`` with
        ``allow_pickle=False``), but with fixed zip timestamps so that the
        bytes, and the manifest checksum over them, are reproducible.
        """
        return _npz_bytes({**_header("autoencoder"), **self._arrays()})

    def _arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        arrays = {
            f"{prefix}layer_types": np.array(self.layer_types, dtype=np.str_),
            f"{prefix}activations": np.array(
                [getattr(layer, "activation", "") for layer in self._layers], dtype=np.str_
            ),
        }
        for i, layer in enumerate(self._layers):
            for name in _LAYER_ARRAYS[layer.kind]:
                value = getattr(layer, name)
                arrays[f"{prefix}{name}_{i}"] = np.array(value, dtype=np.float64) if name == "epsilon" else value
        return arrays

    @classmethod
    def from_npz_bytes(cls, data: bytes) -> "NumpyAutoencoder":
        """Load a single autoencoder that :meth:`to_npz_bytes` wrote (version 1 or 2).

        ArtifactError on anything else, an ensemble's archive included (read
        that with :func:`load_engine`).
        """
        engine = load_engine(data)
        if not isinstance(engine, NumpyAutoencoder):
            what = f"an ensemble of {engine.n_members} autoencoders" if isinstance(engine, NumpyEnsemble) else "an AEGMM"
            raise ArtifactError(f"weights archive holds {what}, not one autoencoder; load it with load_engine()")
        return engine

    # ------------------------------------------------------------ from Keras
    @classmethod
    def from_keras(cls, model, *, verify: bool = True) -> "NumpyAutoencoder":
        """Read the layers of a single-output Keras model, in order.

        Accepts a Sequential or functional model (sub-models are flattened)
        that is a plain chain of ``Dense``, ``BatchNormalization`` (feature
        axis) and ``Activation`` layers, with ``InputLayer`` and the layers
        that are the identity at inference (``Dropout`` and its kin) skipped.
        Any other layer, a non-float32 dtype policy, a quantized or
        LoRA-patched layer, or an activation the engine does not compute
        raises ArtifactError naming the layer.

        With ``verify`` (the default) the model and the engine are run on a
        small seeded probe and must agree; this catches graphs that are not a
        simple chain (branches, shared layers) that the layer list cannot show.
        """
        name = getattr(model, "name", model)
        n_outputs = _output_count(model)
        if n_outputs > 1:
            raise ArtifactError(
                f"model {name!r} has {n_outputs} outputs; a NumpyAutoencoder reads single-output "
                f"models (read an ensemble's model with NumpyEnsemble.from_keras)"
            )
        layers = [_read_keras_layer(layer) for layer in _flatten_layers(model)
                  if type(layer).__name__ not in _SKIPPED_LAYERS]
        if not any(layer.kind == "dense" for layer in layers):
            raise ArtifactError(f"model {name!r} has no Dense layers")
        try:
            engine = cls(layers)
        except ValueError as exc:
            raise ArtifactError(f"model {getattr(model, 'name', '?')!r}: {exc}") from None
        if verify:
            _verify_against(model, [engine])
        return engine


# ------------------------------------------------------------------ ensemble
class MeanOfReconstructionErrors:
    """Errors of an engine with several reconstructions (ensemble members, model outputs).

    The score is the mean of each reconstruction's error, not the error of
    the mean reconstruction; subclasses provide ``reconstructions(x, batch_size)``.
    """

    def reconstructions(self, x: np.ndarray, batch_size: int | None = None) -> list[np.ndarray]:
        raise NotImplementedError

    def row_errors(self, x: np.ndarray, metric: str = "mse", batch_size: int | None = None) -> np.ndarray:
        """Mean over reconstructions of each one's row error, float64 ``(n,)``."""
        _check_metric(metric)
        return _mean([_row_errors(x, r, metric) for r in self.reconstructions(x, batch_size)])

    def feature_errors(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Mean over reconstructions of each one's squared feature errors, float64 ``(n, n_features)``."""
        return _mean([_feature_errors(x, r) for r in self.reconstructions(x, batch_size)])

    def errors(self, x: np.ndarray, metric: str = "mse") -> tuple[np.ndarray, np.ndarray]:
        """``(row_errors, feature_errors)`` from one set of reconstructions of ``x``."""
        _check_metric(metric)
        reconstructions = self.reconstructions(x)
        return (
            _mean([_row_errors(x, r, metric) for r in reconstructions]),
            _mean([_feature_errors(x, r) for r in reconstructions]),
        )


class NumpyEnsemble(MeanOfReconstructionErrors):
    """Several autoencoders scoring the same rows; errors are the members' mean.

    A row's error is the mean over members of each member's row error (for
    any metric), and feature errors are the mean of the members' feature
    errors, so ``rmse`` and ``max_error`` are not those of the mean
    reconstruction. :meth:`predict` gives the mean reconstruction for
    inspection. All members map ``n_features`` columns to ``n_features``.
    """

    def __init__(self, members: Sequence[NumpyAutoencoder]):
        members = tuple(members)
        if not members:
            raise ValueError("NumpyEnsemble needs at least one member; got none")
        for j, member in enumerate(members):
            if not isinstance(member, NumpyAutoencoder):
                raise ValueError(f"member {j}: expected a NumpyAutoencoder, got {type(member).__name__}")
            if (member.n_features, member.n_outputs) != (members[0].n_features, members[0].n_outputs):
                raise ValueError(
                    f"member {j} maps {member.n_features} -> {member.n_outputs} features but member 0 maps "
                    f"{members[0].n_features} -> {members[0].n_outputs}"
                )
        self._members = members

    @property
    def members(self) -> tuple[NumpyAutoencoder, ...]:
        return self._members

    @property
    def n_members(self) -> int:
        return len(self._members)

    @property
    def n_features(self) -> int:
        return self._members[0].n_features

    @property
    def n_outputs(self) -> int:
        return self._members[0].n_outputs

    def __repr__(self) -> str:
        return f"NumpyEnsemble(members={list(self._members)!r})"

    # -------------------------------------------------------------- inference
    def reconstructions(self, x: np.ndarray, batch_size: int | None = None) -> list[np.ndarray]:
        """Each member's reconstruction of ``x``, float32 ``(n, n_outputs)``."""
        x = _input_rows(x, self.n_features)
        return [member.predict(x, batch_size) for member in self._members]

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """The members' mean reconstruction (summed in float64), float32."""
        return _mean([r.astype(np.float64) for r in self.reconstructions(x, batch_size)]).astype(np.float32)

    __call__ = predict

    # ------------------------------------------------------------ persistence
    def to_npz_bytes(self) -> bytes:
        """The members' weights as one ``.npz`` (format version 2), reproducible bytes."""
        arrays = {**_header("ensemble"), "members": np.array(self.n_members, dtype=np.int64)}
        for j, member in enumerate(self._members):
            arrays.update(member._arrays(prefix=f"member_{j}/"))
        return _npz_bytes(arrays)

    @classmethod
    def from_npz_bytes(cls, data: bytes) -> "NumpyEnsemble":
        """Load what :meth:`to_npz_bytes` wrote; ArtifactError on anything else."""
        engine = load_engine(data)
        if not isinstance(engine, NumpyEnsemble):
            what = "a single autoencoder" if isinstance(engine, NumpyAutoencoder) else "an AEGMM"
            raise ArtifactError(f"weights archive holds {what}, not an ensemble")
        return engine

    # ------------------------------------------------------------ from Keras
    @classmethod
    def from_keras(cls, model, *, verify: bool = True) -> "NumpyEnsemble":
        """Read an ensemble from Keras: a list of member models, or one model
        whose outputs are its members' reconstructions.

        The one-model form is what the ensemble's training saves: a functional
        model whose layers are its input and one sub-model per output, each
        applied to the input. Each member must be readable by
        :meth:`NumpyAutoencoder.from_keras`; with ``verify`` the whole model
        is also run on a probe and each output must match its member.
        """
        if isinstance(model, (list, tuple)):
            return cls([NumpyAutoencoder.from_keras(m, verify=verify) for m in model])
        name = getattr(model, "name", model)
        if not hasattr(model, "layers"):
            raise ArtifactError(f"expected a Keras model or a list of them, got {type(model).__name__}")
        subs = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
        for layer in subs:
            if type(layer).__name__ not in _MODEL_CLASSES or not hasattr(layer, "layers"):
                raise ArtifactError(
                    f"layer {getattr(layer, 'name', '?')!r} ({type(layer).__name__}) of model {name!r} is not a "
                    f"member model; an ensemble model's layers are one sub-model per output"
                )
        n_outputs = _output_count(model)
        if len(subs) != n_outputs:
            raise ArtifactError(f"model {name!r} has {len(subs)} member models but {n_outputs} outputs")
        try:
            engine = cls([NumpyAutoencoder.from_keras(sub, verify=verify) for sub in subs])
        except ValueError as exc:
            raise ArtifactError(f"model {name!r}: {exc}") from None
        if verify:
            _verify_against(model, list(engine.members))
        return engine


Engine = Union[NumpyAutoencoder, NumpyEnsemble, "NumpyAEGMM"]


def load_engine(data: bytes) -> Engine:
    """The engine stored in ``.npz`` bytes: a :class:`NumpyAutoencoder`, a
    :class:`NumpyEnsemble` or a :class:`~segae_spark.models.numpy_aegmm.NumpyAEGMM`,
    by the archive's ``kind`` (version 1 archives are dense stacks).
    ArtifactError on anything else; never unpickles."""
    arrays = _read_npz(data)
    version = arrays.pop("format_version", np.array(1))
    if version.shape != () or version.dtype.kind not in "iu" or int(version) not in READABLE_NPZ_VERSIONS:
        raise ArtifactError(
            f"weights archive has format_version {version!r}; this library reads versions "
            f"{list(READABLE_NPZ_VERSIONS)}"
        )
    if int(version) == 1:
        return _dense_stack_v1(arrays)
    kind = arrays.pop("kind", None)
    if kind is None or kind.shape != () or kind.dtype.kind != "U":
        raise ArtifactError(f"weights archive (version 2) needs a unicode 'kind' scalar, got {kind!r}")
    kind = str(kind)
    if kind == "autoencoder":
        engine: Engine = _autoencoder_v2(arrays, prefix="")
    elif kind == "ensemble":
        count = arrays.pop("members", None)
        if count is None or count.shape != () or count.dtype.kind not in "iu" or int(count) < 1:
            raise ArtifactError(f"ensemble weights archive needs a positive integer 'members', got {count!r}")
        members = [_autoencoder_v2(arrays, prefix=f"member_{j}/") for j in range(int(count))]
        try:
            engine = NumpyEnsemble(members)
        except ValueError as exc:
            raise ArtifactError(f"weights archive is inconsistent: {exc}") from None
    elif kind == "aegmm":
        # numpy_aegmm builds on this module, so it is imported here, not at the top.
        from segae_spark.models.numpy_aegmm import aegmm_from_arrays

        engine = aegmm_from_arrays(arrays)
    else:
        raise ArtifactError(f"weights archive has kind {kind!r}; expected 'autoencoder', 'ensemble' or 'aegmm'")
    if arrays:
        raise ArtifactError(f"weights archive has unexpected arrays {sorted(arrays, key=_natural)}")
    return engine


# ------------------------------------------------------------------ npz i/o
def _header(kind: str) -> dict[str, np.ndarray]:
    return {"format_version": np.array(NPZ_FORMAT_VERSION, dtype=np.int64), "kind": np.array(kind, dtype=np.str_)}


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, mode="w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def _read_npz(data: bytes) -> dict[str, np.ndarray]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ArtifactError(f"expected the bytes of an .npz file, got {type(data).__name__}")
    try:
        archive = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
    except Exception as exc:  # BadZipFile, ValueError, OSError, EOFError ...
        raise ArtifactError(f"weights are not a readable .npz archive: {exc}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ArtifactError("weights are a single .npy array, expected an .npz archive")
    with archive:
        arrays = {}
        for name in archive.files:
            try:
                arrays[name] = archive[name]
            except ValueError as exc:
                if "allow_pickle" in str(exc):  # an object array: its bytes are a pickle, never run
                    raise ArtifactError(
                        f"weights archive has an unreadable member {name!r}: a pickled object array "
                        "(model files never contain pickles; refusing to load it)"
                    ) from None
                raise ArtifactError(f"weights archive has an unreadable member {name!r}: {exc}") from None
            except Exception as exc:  # truncated members, bad headers
                raise ArtifactError(f"weights archive has an unreadable member {name!r}: {exc}") from None
        return arrays


def _dense_stack_v1(arrays: dict[str, np.ndarray]) -> NumpyAutoencoder:
    if "activations" not in arrays:
        raise ArtifactError("weights archive has no 'activations' array")
    activations = _unicode_vector(arrays, "activations")
    n = len(activations)
    expected = {f"{kind}_{i}" for i in range(n) for kind in ("kernel", "bias")}
    missing = sorted(expected - arrays.keys(), key=_natural)
    unknown = sorted(arrays.keys() - expected, key=_natural)
    if missing or unknown:
        raise ArtifactError(
            f"weights archive does not match its {n} activations: missing {missing}, unexpected {unknown}"
        )
    layers = [(arrays[f"kernel_{i}"], arrays[f"bias_{i}"], str(activations[i])) for i in range(n)]
    try:
        return NumpyAutoencoder(layers)
    except ValueError as exc:
        raise ArtifactError(f"weights archive is inconsistent: {exc}") from None


def _autoencoder_v2(arrays: dict[str, np.ndarray], prefix: str) -> NumpyAutoencoder:
    """Pop one autoencoder's arrays (names under ``prefix``) and build it."""
    for name in ("layer_types", "activations"):
        if prefix + name not in arrays:
            raise ArtifactError(f"weights archive has no {prefix + name!r} array")
    types = _unicode_vector(arrays, prefix + "layer_types")
    activations = _unicode_vector(arrays, prefix + "activations")
    if len(types) != len(activations):
        raise ArtifactError(
            f"weights archive has {len(types)} {prefix}layer_types but {len(activations)} {prefix}activations"
        )
    layers: list[Layer] = []
    missing: list[str] = []
    for i, (kind, activation) in enumerate(zip(types, activations)):
        names = _LAYER_ARRAYS.get(str(kind))
        if names is None:
            raise ArtifactError(f"{prefix}layer_types[{i}] is {str(kind)!r}; expected one of {list(LAYER_TYPES)}")
        values = {}
        for name in names:
            key = f"{prefix}{name}_{i}"
            if key in arrays:
                values[name] = arrays.pop(key)
            else:
                missing.append(key)
        if kind == "dense":
            layers.append(DenseLayer(values.get("kernel"), values.get("bias"), str(activation)))
        elif kind == "batch_norm":
            layers.append(BatchNormLayer(**{name: values.get(name) for name in names}))
        else:
            layers.append(ActivationLayer(str(activation)))
    if missing:
        raise ArtifactError(f"weights archive does not match its {prefix}layer_types: missing {missing}")
    try:
        return NumpyAutoencoder(layers)
    except ValueError as exc:
        raise ArtifactError(f"weights archive is inconsistent: {prefix}{exc}") from None


def _unicode_vector(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    array = arrays.pop(name)
    if array.ndim != 1 or array.dtype.kind != "U":
        raise ArtifactError(f"{name!r} must be a 1-D unicode array, got dtype {array.dtype} shape {array.shape}")
    return array


# ----------------------------------------------------------------- reading Keras
# Layers that are the identity at inference.
_SKIPPED_LAYERS = frozenset(
    {"Dropout", "InputLayer", "AlphaDropout", "GaussianDropout", "GaussianNoise", "ActivityRegularization"}
)
_READ_LAYERS = frozenset({"Dense", "BatchNormalization", "Activation"})
_MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})


def _read_keras_layer(layer) -> Layer:
    kind = type(layer).__name__
    path = f"layer {getattr(layer, 'name', '?')!r} ({kind})"
    if kind not in _READ_LAYERS or not type(layer).__module__.startswith("keras"):
        raise ArtifactError(
            f"{path} is not supported by the numpy engine, which handles only Dense, BatchNormalization, "
            f"Activation, Dropout and InputLayer; score this model with Keras instead"
        )
    if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
        raise ArtifactError(f"{path} is quantized or LoRA-enabled; the numpy engine reads plain float32 weights")
    compute_dtype = str(getattr(layer, "compute_dtype", "float32"))
    if compute_dtype != "float32":
        raise ArtifactError(f"{path} computes in {compute_dtype}; the numpy engine needs float32")
    if not getattr(layer, "built", True):
        raise ArtifactError(f"{path} is not built (no weights yet); build or train the model first")
    if kind == "BatchNormalization":
        axis = layer.axis  # Keras 2 holds a list of axes: [1] for 2-D rows
        axis = axis[0] if isinstance(axis, Sequence) and not isinstance(axis, str) and len(axis) == 1 else axis
        if axis not in (-1, 1):
            raise ArtifactError(
                f"{path} normalises axis {layer.axis}; the numpy engine handles the feature axis of 2-D rows only"
            )
        moving_mean = np.asarray(layer.moving_mean, dtype=np.float32)
        n = moving_mean.shape[0]
        gamma = np.asarray(layer.gamma, dtype=np.float32) if layer.scale else np.ones(n, np.float32)
        beta = np.asarray(layer.beta, dtype=np.float32) if layer.center else np.zeros(n, np.float32)
        return BatchNormLayer(
            gamma, beta, moving_mean, np.asarray(layer.moving_variance, dtype=np.float32), float(layer.epsilon)
        )
    activation = _activation_name(layer.activation)
    if activation is None:
        raise ArtifactError(
            f"{path} has activation {layer.activation!r}, which the numpy engine does not "
            f"compute; supported: {sorted(ACTIVATIONS)} (Keras built-ins only)"
        )
    if kind == "Activation":
        return ActivationLayer(activation)
    kernel = np.asarray(layer.kernel, dtype=np.float32)
    if getattr(layer, "use_bias", True) and getattr(layer, "bias", None) is not None:
        bias = np.asarray(layer.bias, dtype=np.float32)
    else:
        bias = np.zeros(kernel.shape[1], dtype=np.float32)
    return DenseLayer(kernel, bias, activation)


def _output_count(model) -> int:
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):  # an unbuilt Sequential has no outputs yet
        return 1
    return len(outputs) if isinstance(outputs, (list, tuple)) else 1


def _verify_against(model, engines: list[NumpyAutoencoder], rows: int = 64) -> None:
    """Run ``model`` and the engines (one per model output) on a seeded probe; they must agree."""
    n_features = engines[0].n_features
    name = getattr(model, "name", "?")
    probe = np.random.default_rng(0).standard_normal((rows, n_features)).astype(np.float32)
    try:
        outputs = model(probe, training=False)
        if len(engines) == 1 and not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        expected = [np.asarray(o, dtype=np.float32) for o in outputs]
    except Exception as exc:
        raise ArtifactError(f"model {name!r} cannot be run on ({rows}, {n_features}) float32 rows: {exc}") from None
    if len(expected) != len(engines):
        raise ArtifactError(f"model {name!r} gives {len(expected)} outputs for {len(engines)} member(s)")
    for j, (engine, want) in enumerate(zip(engines, expected)):
        got = engine._forward(probe)
        if want.shape != got.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-4):
            diff = np.max(np.abs(got - want)) if want.shape == got.shape else None
            which = "" if len(engines) == 1 else f" (output {j})"
            raise ArtifactError(
                f"model {name!r} is not a plain chain of its layers{which}: the numpy engine gives shape "
                f"{got.shape} vs Keras {want.shape}, max difference {diff}"
            )


def _flatten_layers(model) -> Iterable:
    """Layers of a model in call order, descending into Sequential/functional sub-models."""
    if not hasattr(model, "layers"):
        raise ArtifactError(f"expected a Keras model, got {type(model).__name__}")
    for layer in model.layers:
        if type(layer).__name__ in _MODEL_CLASSES and hasattr(layer, "layers"):
            yield from _flatten_layers(layer)
        else:
            yield layer


def _activation_name(fn) -> str | None:
    """Keras' name for a built-in activation function object, else None."""
    if fn is None:
        return "linear"
    module = getattr(fn, "__module__", "") or ""
    name = getattr(fn, "__name__", None)
    if not module.startswith("keras") or name is None:
        return None
    try:
        return canonical_activation(name)
    except ValueError:
        return None


# ------------------------------------------------------------------ helpers
def _input_rows(x, n_features: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"expected an array of shape (n, {n_features}), got shape {x.shape}")
    if x.dtype.kind not in "fiub":
        raise ValueError(f"expected a numeric array, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_batch_size(batch_size) -> None:
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")


def _mean(arrays: list[np.ndarray]) -> np.ndarray:
    # Summed in member order: a row's mean depends only on its own values.
    total = np.array(arrays[0], dtype=np.float64, copy=True)
    for array in arrays[1:]:
        total += array
    total /= len(arrays)
    return total


def _weight(array, what: str, ndim: int) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{what} must be numeric, got dtype {array.dtype}")
    if array.ndim != ndim or 0 in array.shape:
        raise ValueError(f"{what} must be a non-empty {ndim}-D array, got shape {array.shape}")
    array = np.array(array, dtype=np.float32, order="C", copy=True)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} has non-finite values (did training diverge?)")
    return _readonly(array)


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _natural(name: str) -> tuple:
    head, _, tail = name.rpartition("_")
    return (head, int(tail)) if tail.isdigit() else (name, -1)
