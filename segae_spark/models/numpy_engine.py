"""Numpy inference for stacks of Dense layers: the executors' scoring engine.

Executors score with this module so that the scoring path never imports
TensorFlow (seconds of start-up and hundreds of MB per Python worker). It
therefore imports numpy and nothing heavier, not even lazily: a Keras model
handed to :meth:`NumpyAutoencoder.from_keras` is read by duck typing.

The forward pass follows the order of operations of Keras 3 ``Dense`` on the
TensorFlow backend in float32: ``activation(x @ kernel + bias)``, with each
activation written the way the TensorFlow kernel computes it (``leaky_relu``
with Keras' default slope 0.2, ``gelu`` as ``0.5 * x * erfc(-x / sqrt(2))``,
``selu`` with float32 ``scale`` and ``scale * alpha``). The one deliberate
difference is the matrix product: float32 inputs and kernels are multiplied
with float64 accumulation and rounded once to float32 (then the float32 bias
is added, as Keras does). A float32 BLAS product gives a row different bits
depending on how many rows share the call (OpenBLAS picks kernels and
blocking by matrix size: 15-70% of elements changed between batch sizes in
our measurements), which would make a row's score depend on its Arrow batch.
With float64 accumulation a row's output depends only on the row, and it is
the correctly rounded product in all but rare double-rounding cases, so it
agrees with Keras' float32 product to about 1e-6 (the tests hold it to 1e-5).
Matrix products cost about twice as much; activations dominate anyway.

Weights are stored as ``.npz`` (no pickle): ``kernel_i``, ``bias_i`` for each
layer, ``activations`` as a unicode array and ``format_version``.
"""

from __future__ import annotations

import io
import zipfile
from typing import Callable, Iterable

import numpy as np

from segae_spark.errors import ArtifactError

__all__ = ["ACTIVATIONS", "NPZ_FORMAT_VERSION", "NumpyAutoencoder", "canonical_activation"]

NPZ_FORMAT_VERSION = 1

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


class NumpyAutoencoder:
    """Forward pass of a stack of Dense layers, bit-for-bit the math of Keras inference.

    ``layers`` is a list of ``(kernel, bias, activation)`` with ``kernel`` of
    shape ``(in, out)`` and ``bias`` of shape ``(out,)``; each layer's ``in``
    must equal the previous layer's ``out``. The arrays are copied to float32
    and made read-only, so one instance can be shared by threads.
    """

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray, str]]):
        layers = list(layers)
        if not layers:
            raise ValueError("NumpyAutoencoder needs at least one Dense layer; got none")
        kernels: list[np.ndarray] = []
        biases: list[np.ndarray] = []
        activations: list[str] = []
        for i, layer in enumerate(layers):
            try:
                kernel, bias, activation = layer
            except (TypeError, ValueError):
                raise ValueError(
                    f"layer {i}: expected a (kernel, bias, activation) tuple, got {type(layer).__name__}"
                ) from None
            kernel = _weight(kernel, f"layer {i} kernel", ndim=2)
            bias = _weight(bias, f"layer {i} bias", ndim=1)
            if bias.shape[0] != kernel.shape[1]:
                raise ValueError(
                    f"layer {i}: bias has {bias.shape[0]} values but the kernel has "
                    f"{kernel.shape[1]} outputs (kernel shape {kernel.shape})"
                )
            if kernels and kernel.shape[0] != kernels[-1].shape[1]:
                raise ValueError(
                    f"layer {i}: kernel expects {kernel.shape[0]} inputs but layer {i - 1} "
                    f"outputs {kernels[-1].shape[1]}"
                )
            try:
                activations.append(canonical_activation(activation))
            except ValueError as exc:
                raise ValueError(f"layer {i}: {exc}") from None
            kernels.append(kernel)
            biases.append(bias)
        self._kernels = tuple(kernels)
        self._kernels64 = tuple(_readonly(k.astype(np.float64)) for k in kernels)
        self._biases = tuple(biases)
        self._activations = tuple(activations)

    # ------------------------------------------------------------------ shape
    @property
    def n_features(self) -> int:
        """Width of the input rows."""
        return int(self._kernels[0].shape[0])

    @property
    def n_outputs(self) -> int:
        """Width of the output rows (``n_features`` for an autoencoder)."""
        return int(self._kernels[-1].shape[1])

    @property
    def activations(self) -> tuple[str, ...]:
        return self._activations

    @property
    def layers(self) -> list[tuple[np.ndarray, np.ndarray, str]]:
        """The ``(kernel, bias, activation)`` triples (read-only arrays)."""
        return list(zip(self._kernels, self._biases, self._activations))

    def __repr__(self) -> str:
        widths = [self.n_features] + [int(k.shape[1]) for k in self._kernels]
        return f"NumpyAutoencoder(widths={widths}, activations={list(self._activations)})"

    # -------------------------------------------------------------- inference
    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Reconstruct ``x`` (shape ``(n, n_features)``); float32 ``(n, n_outputs)``.

        ``batch_size`` bounds the memory of the intermediate activations; the
        result does not depend on it. Non-finite inputs propagate to the output.
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(
                f"expected an array of shape (n, {self.n_features}), got shape {x.shape}"
            )
        if x.dtype.kind not in "fiub":
            raise ValueError(f"expected a numeric array, got dtype {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = x.shape[0]
        if batch_size is not None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
                raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        if batch_size is None or batch_size >= n:
            return self._forward(x)
        out = np.empty((n, self.n_outputs), dtype=np.float32)
        for start in range(0, n, batch_size):
            out[start : start + batch_size] = self._forward(x[start : start + batch_size])
        return out

    __call__ = predict

    def _forward(self, h: np.ndarray) -> np.ndarray:
        for kernel64, bias, activation in zip(self._kernels64, self._biases, self._activations):
            z = (h.astype(np.float64) @ kernel64).astype(np.float32)
            z += bias
            h = ACTIVATIONS[activation](z)
        return np.asarray(h, dtype=np.float32)

    # ------------------------------------------------------------ persistence
    def to_npz_bytes(self) -> bytes:
        """The weights as ``.npz`` bytes, identical for identical weights.

        The archive is what ``np.savez`` writes (readable by ``np.load`` with
        ``allow_pickle=False``), but with fixed zip timestamps so that the
        bytes, and the manifest checksum over them, are reproducible.
        """
        arrays: dict[str, np.ndarray] = {"format_version": np.array(NPZ_FORMAT_VERSION, dtype=np.int64)}
        for i, (kernel, bias) in enumerate(zip(self._kernels, self._biases)):
            arrays[f"kernel_{i}"] = kernel
            arrays[f"bias_{i}"] = bias
        arrays["activations"] = np.array(self._activations, dtype=np.str_)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with zf.open(info, mode="w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
        return buf.getvalue()

    @classmethod
    def from_npz_bytes(cls, data: bytes) -> "NumpyAutoencoder":
        """Load what :meth:`to_npz_bytes` wrote; ArtifactError on anything else."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ArtifactError(f"expected the bytes of an .npz file, got {type(data).__name__}")
        try:
            archive = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
        except Exception as exc:  # BadZipFile, ValueError, OSError, EOFError ...
            raise ArtifactError(f"weights are not a readable .npz archive: {exc}") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ArtifactError("weights are a single .npy array, expected an .npz archive")
        with archive:
            try:
                arrays = {name: archive[name] for name in archive.files}
            except Exception as exc:  # pickled/object arrays, truncated members
                raise ArtifactError(f"weights archive has an unreadable member: {exc}") from None
        return cls._from_arrays(arrays)

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray]) -> "NumpyAutoencoder":
        version = arrays.pop("format_version", np.array(NPZ_FORMAT_VERSION))
        if version.shape != () or version.dtype.kind not in "iu" or int(version) != NPZ_FORMAT_VERSION:
            raise ArtifactError(
                f"weights archive has format_version {version!r}; this library reads version "
                f"{NPZ_FORMAT_VERSION}"
            )
        if "activations" not in arrays:
            raise ArtifactError("weights archive has no 'activations' array")
        activations = arrays.pop("activations")
        if activations.ndim != 1 or activations.dtype.kind != "U":
            raise ArtifactError(
                f"'activations' must be a 1-D unicode array, got dtype {activations.dtype} "
                f"shape {activations.shape}"
            )
        n = len(activations)
        expected = {f"{kind}_{i}" for i in range(n) for kind in ("kernel", "bias")}
        missing = sorted(expected - arrays.keys(), key=_natural)
        unknown = sorted(arrays.keys() - expected, key=_natural)
        if missing or unknown:
            raise ArtifactError(
                f"weights archive does not match its {n} activations: missing {missing}, "
                f"unexpected {unknown}"
            )
        layers = [(arrays[f"kernel_{i}"], arrays[f"bias_{i}"], str(activations[i])) for i in range(n)]
        try:
            return cls(layers)
        except ValueError as exc:
            raise ArtifactError(f"weights archive is inconsistent: {exc}") from None

    # ------------------------------------------------------------ from Keras
    @classmethod
    def from_keras(cls, model, *, verify: bool = True) -> "NumpyAutoencoder":
        """Read the Dense layers of a Keras model, in order.

        Accepts a Sequential or functional model (sub-models are flattened)
        that is a plain chain of ``Dense`` layers, with ``Dropout`` and
        ``InputLayer`` skipped. Any other layer, a non-float32 dtype policy, a
        quantized or LoRA-patched layer, or an activation the engine does not
        compute raises ArtifactError naming the layer.

        With ``verify`` (the default) the model and the engine are run on a
        small seeded probe and must agree; this catches graphs that are not a
        simple chain (branches, shared layers) that the layer list cannot show.
        """
        layers: list[tuple[np.ndarray, np.ndarray, str]] = []
        for layer in _flatten_layers(model):
            kind = type(layer).__name__
            if kind in _SKIPPED_LAYERS:
                continue
            path = f"layer {getattr(layer, 'name', '?')!r} ({kind})"
            if kind != "Dense" or not type(layer).__module__.startswith("keras"):
                raise ArtifactError(
                    f"{path} is not supported by the numpy engine, which handles only Dense, "
                    f"Dropout and InputLayer; score this model with Keras instead"
                )
            if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
                raise ArtifactError(
                    f"{path} is quantized or LoRA-enabled; the numpy engine reads plain float32 weights"
                )
            compute_dtype = str(getattr(layer, "compute_dtype", "float32"))
            if compute_dtype != "float32":
                raise ArtifactError(f"{path} computes in {compute_dtype}; the numpy engine needs float32")
            if not getattr(layer, "built", True):
                raise ArtifactError(f"{path} is not built (no weights yet); build or train the model first")
            activation = _activation_name(layer.activation)
            if activation is None:
                raise ArtifactError(
                    f"{path} has activation {layer.activation!r}, which the numpy engine does not "
                    f"compute; supported: {sorted(ACTIVATIONS)} (Keras built-ins only)"
                )
            kernel = np.asarray(layer.kernel, dtype=np.float32)
            if getattr(layer, "use_bias", True) and getattr(layer, "bias", None) is not None:
                bias = np.asarray(layer.bias, dtype=np.float32)
            else:
                bias = np.zeros(kernel.shape[1], dtype=np.float32)
            layers.append((kernel, bias, activation))
        if not layers:
            raise ArtifactError(f"model {getattr(model, 'name', model)!r} has no Dense layers")
        try:
            engine = cls(layers)
        except ValueError as exc:
            raise ArtifactError(f"model {getattr(model, 'name', '?')!r}: {exc}") from None
        if verify:
            engine._verify_against(model)
        return engine

    def _verify_against(self, model, rows: int = 64) -> None:
        probe = np.random.default_rng(0).standard_normal((rows, self.n_features)).astype(np.float32)
        try:
            expected = np.asarray(model(probe, training=False), dtype=np.float32)
        except Exception as exc:
            raise ArtifactError(
                f"model {getattr(model, 'name', '?')!r} cannot be run on ({rows}, {self.n_features}) "
                f"float32 rows: {exc}"
            ) from None
        got = self._forward(probe)
        if expected.shape != got.shape or not np.allclose(got, expected, rtol=1e-3, atol=1e-4):
            diff = np.max(np.abs(got - expected)) if expected.shape == got.shape else None
            raise ArtifactError(
                f"model {getattr(model, 'name', '?')!r} is not a plain chain of its Dense layers: "
                f"the numpy engine gives shape {got.shape} vs Keras {expected.shape}, "
                f"max difference {diff}"
            )


_SKIPPED_LAYERS = frozenset({"Dropout", "InputLayer"})
_MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})


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
