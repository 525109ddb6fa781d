"""The dense autoencoder: its config, its Keras architecture, and Keras' training loop.

:class:`StackAutoencoderConfig` holds the settings every stacked
architecture shares (the batch-norm autoencoder in :mod:`.batchnorm` adds
only its own ``build``). The built-in architectures train with
:mod:`.stacked` (several models in one computation); :func:`fit_autoencoder`
is the seeded Keras ``fit`` loop for user Keras models, whose layers the
stacked trainer does not know. Both share the seeded validation hold-out
(:func:`split_rows`).

Keras and TensorFlow are imported inside the functions, so importing this
module (and :mod:`segae_spark.models`) stays cheap and TensorFlow-free; only
training pays for them. Trained models are scored on executors by
:class:`~segae_spark.models.numpy_engine.NumpyAutoencoder`, which is why the
activations allowed here are exactly those the numpy engine computes.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

import numpy as np

from segae_spark.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "DENSE_ACTIVATIONS",
    "DenseAutoencoderConfig",
    "StackAutoencoderConfig",
    "TrainingResult",
    "build_dense_autoencoder",
    "fit_autoencoder",
    "split_rows",
    "validation_rows",
]

logger = logging.getLogger("segae_spark")

DENSE_ACTIVATIONS = (
    "relu", "tanh", "sigmoid", "linear", "elu", "selu", "leaky_relu", "softplus", "gelu", "swish",
)
"""Activation names the config accepts (``swish`` is Keras' ``silu``); all are
computed by the numpy engine (see ``ACTIVATIONS`` there)."""


def config_fields(cls, d: Mapping) -> dict:
    """The keyword arguments of config class ``cls`` in a config section ``d``.

    ``d`` must be a mapping whose ``type``, if present, is ``cls.type`` and
    whose other keys are fields of ``cls``; ConfigError names what is wrong.
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"{cls.label} config must be a mapping, got {type(d).__name__}")
    d = dict(d)
    kind = d.pop("type", cls.type)
    if kind != cls.type:
        raise ConfigError(f"type {kind!r} does not match {cls.__name__}, whose type is {cls.type!r}")
    known = [f.name for f in fields(cls)]
    unknown = sorted(str(k) for k in d if k not in known)
    if unknown:
        raise ConfigError(f"unknown {cls.label} config key(s) {unknown}; expected keys among {['type', *known]}")
    return d


def check_training_fields(config, set_, min_batch_size: int = 1) -> None:
    """Validate and normalise the training fields every config shares (``set_`` writes a frozen field)."""
    set_("learning_rate", _float("learning_rate", config.learning_rate, low=0.0, low_open=True))
    set_("epochs", _int("epochs", config.epochs, low=1))
    set_("batch_size", _int("batch_size", config.batch_size, low=min_batch_size))
    set_("validation_split", _float("validation_split", config.validation_split, low=0.0, high=1.0, high_open=True))
    set_("early_stopping_patience", _int("early_stopping_patience", config.early_stopping_patience, low=0))


@dataclass(frozen=True)
class StackAutoencoderConfig:
    """Settings shared by the autoencoders built as a stack of hidden blocks.

    ``hidden_layers`` are the encoder widths, the last one being the
    bottleneck; the decoder mirrors them and ends in a Dense layer as wide as
    the input with ``output_activation``. ``dropout`` (after every hidden
    block) and ``l2`` (on every kernel) are off at 0. Early stopping watches
    ``val_loss`` and restores the best weights when ``validation_split > 0``.

    Subclasses set ``type`` (the ``type`` key of the autoencoder config dict)
    and implement :meth:`build`.
    """

    type: ClassVar[str] = ""
    label: ClassVar[str] = "autoencoder"

    hidden_layers: tuple[int, ...] = (32, 16, 8)
    activation: str = "relu"
    output_activation: str = "linear"
    dropout: float = 0.0
    l2: float = 0.0
    learning_rate: float = 1e-3
    epochs: int = 40
    batch_size: int = 256
    validation_split: float = 0.1
    early_stopping_patience: int = 5

    def __post_init__(self) -> None:
        # Validates direct construction as well as from_dict; normalises types
        # (a JSON list of widths becomes a tuple, 1 becomes 1.0).
        def set_(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)  # the dataclass is frozen

        set_("hidden_layers", _int_tuple("hidden_layers", self.hidden_layers))
        for name in ("activation", "output_activation"):
            value = getattr(self, name)
            if value not in DENSE_ACTIVATIONS:
                raise ConfigError(f"{name} {value!r} is not supported; expected one of {list(DENSE_ACTIVATIONS)}")
        set_("dropout", _float("dropout", self.dropout, low=0.0, high=1.0, high_open=True))
        set_("l2", _float("l2", self.l2, low=0.0))
        check_training_fields(self, set_)

    @classmethod
    def from_dict(cls, d: Mapping):
        """Build from a mapping (a YAML/JSON section); missing keys take defaults.

        A ``type`` key, if present, must be this class's type.
        """
        return cls(**config_fields(cls, d))

    def to_dict(self) -> dict:
        """JSON-ready dict with its ``type``; ``from_dict(to_dict())`` gives an equal config."""
        d = {"type": self.type, **asdict(self)}
        d["hidden_layers"] = list(self.hidden_layers)
        return d

    def with_hidden_layers(self, hidden_layers) -> "StackAutoencoderConfig":
        """The same config with other widths (an ensemble member's)."""
        return replace(self, hidden_layers=tuple(hidden_layers))

    def build(self, n_features: int, seed: int, name: str | None = None) -> "keras.Model":
        """The uncompiled Keras model of this architecture."""
        raise NotImplementedError


@dataclass(frozen=True)
class DenseAutoencoderConfig(StackAutoencoderConfig):
    """Architecture and training settings of the dense autoencoder (``type: dense``).

    Each hidden block is ``Dense(width, activation)`` (then ``Dropout`` when
    ``dropout > 0``); see :class:`StackAutoencoderConfig` for the fields.
    """

    type: ClassVar[str] = "dense"
    label: ClassVar[str] = "dense autoencoder"

    def build(self, n_features: int, seed: int, name: str | None = None) -> "keras.Model":
        return build_dense_autoencoder(n_features, self, seed, name=name)


@dataclass
class TrainingResult:
    """A trained model and what the training did.

    ``train_loss`` / ``val_loss`` are Keras' epoch losses (MSE plus any L2
    penalty; ``train_loss`` is the running mean over the epoch's batches) at
    ``best_epoch``, the epoch whose weights the model holds. ``val_loss`` is
    None without a validation split. ``rows`` counts all rows given,
    ``val_rows`` those held out for validation.
    """

    model: "keras.Model"
    epochs_run: int
    train_loss: float
    val_loss: float | None
    seconds: float
    rows: int
    val_rows: int = 0
    best_epoch: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)


def build_dense_autoencoder(
    n_features: int, config: DenseAutoencoderConfig, seed: int, name: str | None = None
) -> "keras.Model":
    """The uncompiled Keras model for ``n_features`` inputs.

    Every initializer and dropout layer gets its own seed derived from
    ``seed``, so the initial weights do not depend on global random state.
    """
    n_features = _int("n_features", n_features, low=1)
    seed = _seed(seed)
    if not isinstance(config, DenseAutoencoderConfig):
        raise ConfigError(f"config must be a DenseAutoencoderConfig, got {type(config).__name__}")
    import keras

    widths, names, seeds = _block_plan(config, seed)
    regularizer = _regularizer(config)

    layers: list = [keras.Input(shape=(n_features,), dtype="float32", name="features")]
    for i, (width, block) in enumerate(zip(widths, names)):
        layers.append(
            keras.layers.Dense(
                width,
                activation=config.activation,
                kernel_initializer=keras.initializers.GlorotUniform(seed=seeds[2 * i]),
                kernel_regularizer=regularizer(),
                name=block,
            )
        )
        if config.dropout > 0:
            layers.append(keras.layers.Dropout(config.dropout, seed=seeds[2 * i + 1], name=f"{block}_dropout"))
    layers.append(_output_layer(n_features, config, seeds[-1]))
    return keras.Sequential(layers, name=name or "dense_autoencoder")


def _block_plan(config: StackAutoencoderConfig, seed: int) -> tuple[list[int], list[str], list[int]]:
    """Widths and names of the hidden blocks (encoder, bottleneck, mirrored
    decoder) and the per-layer seeds: ``2 i`` for block ``i``'s kernel,
    ``2 i + 1`` for its dropout, the last for the output kernel."""
    depth = len(config.hidden_layers)
    widths = list(config.hidden_layers) + list(reversed(config.hidden_layers[:-1]))
    names = [f"encoder_{i}" for i in range(depth - 1)] + ["bottleneck"] + [f"decoder_{i}" for i in range(depth - 1)]
    seeds = [int(s) % (2**31 - 1) for s in np.random.SeedSequence(seed).generate_state(2 * len(widths) + 1)]
    return widths, names, seeds


def _regularizer(config: StackAutoencoderConfig) -> Callable[[], Any]:
    import keras

    return (lambda: keras.regularizers.L2(config.l2)) if config.l2 > 0 else (lambda: None)


def _output_layer(n_features: int, config: StackAutoencoderConfig, seed: int):
    import keras

    return keras.layers.Dense(
        n_features,
        activation=config.output_activation,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        kernel_regularizer=_regularizer(config)(),
        name="reconstruction",
    )


def fit_autoencoder(
    x: np.ndarray,
    build: Callable[[int], "keras.Model"],
    seed: int,
    *,
    epochs: int,
    batch_size: int,
    validation_split: float,
    early_stopping_patience: int,
    label: str = "autoencoder",
    divergence_hint: str = "lower the learning rate or scale the features",
) -> TrainingResult:
    """Fit the compiled model ``build(n_features)`` to reconstruct ``x``; the
    training loop every architecture shares.

    Sets Keras' global seeds and TensorFlow op determinism (process-wide)
    before calling ``build``, holds out a seeded random ``validation_split``
    of the rows (not the tail, as Keras' own ``validation_split`` would),
    trains with early stopping on ``val_loss`` (best weights restored) and
    logs one INFO line. Bad settings (ConfigError) and bad data (ValueError)
    are reported before any TensorFlow work starts.
    """
    seed = _seed(seed)
    epochs = _int("epochs", epochs, low=1)
    batch_size = _int("batch_size", batch_size, low=1)
    validation_split = _float("validation_split", validation_split, low=0.0, high=1.0, high_open=True)
    early_stopping_patience = _int("early_stopping_patience", early_stopping_patience, low=0)
    x = _training_matrix(x)
    n_rows, n_features = x.shape
    n_val = validation_rows(n_rows, validation_split)

    start = time.perf_counter()
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    x_train, x_val = split_rows(x, seed, n_val)

    model = build(n_features)
    callbacks = []
    stopper = None
    if n_val:
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=early_stopping_patience, restore_best_weights=True
        )
        callbacks.append(stopper)
    history = model.fit(
        x_train,
        x_train,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=(x_val, x_val) if n_val else None,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    ).history
    seconds = time.perf_counter() - start

    losses = [float(v) for v in history["loss"]]
    val_losses = [float(v) for v in history.get("val_loss", [])]
    epochs_run = len(losses)
    best = int(stopper.best_epoch) if stopper is not None and stopper.best_weights is not None else epochs_run - 1
    train_loss = losses[best]
    val_loss = val_losses[best] if val_losses else None
    if not math.isfinite(train_loss) or (val_loss is not None and not math.isfinite(val_loss)):
        raise ConfigError(f"training diverged (train_loss={train_loss}, val_loss={val_loss}); {divergence_hint}")
    logger.info(
        "%s trained: rows=%d (val %d) features=%d epochs=%d/%d best_epoch=%d "
        "train_loss=%.6g val_loss=%s seconds=%.1f",
        label, n_rows, n_val, n_features, epochs_run, epochs, best + 1, train_loss,
        "n/a" if val_loss is None else f"{val_loss:.6g}", seconds,
    )
    return TrainingResult(
        model=model,
        epochs_run=epochs_run,
        train_loss=train_loss,
        val_loss=val_loss,
        seconds=round(seconds, 3),
        rows=n_rows,
        val_rows=n_val,
        best_epoch=best,
        history={"loss": losses, **({"val_loss": val_losses} if val_losses else {})},
    )


def validation_rows(n_rows: int, validation_split: float) -> int:
    """How many of ``n_rows`` are held out; ConfigError when that leaves nothing to hold out or train."""
    n_val = int(math.floor(n_rows * validation_split))
    if validation_split > 0 and n_val == 0:
        raise ConfigError(
            f"validation_split={validation_split} of {n_rows} rows holds out no row; "
            f"give at least {math.ceil(1 / validation_split)} rows or set validation_split to 0"
        )
    if n_rows - n_val < 1:
        raise ConfigError(f"validation_split={validation_split} leaves no training rows out of {n_rows}")
    return n_val


def split_rows(x: np.ndarray, seed: int, n_val: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(training rows, validation rows): a seeded random hold-out, not the tail (Keras' own split)."""
    if not n_val:
        return x, None
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order[n_val:]], x[order[:n_val]]


# ---------------------------------------------------------------- validation
def _training_matrix(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"training data must be a 2-D array (rows, features), got shape {x.shape}")
    if x.dtype.kind not in "fiub":
        raise ValueError(f"training data must be numeric, got dtype {x.dtype}")
    if x.shape[0] < 2:
        raise ValueError(f"training data needs at least 2 rows, got {x.shape[0]}")
    if x.shape[1] < 1:
        raise ValueError("training data has no feature columns (shape (n, 0))")
    with np.errstate(over="ignore"):  # reported below as non-finite
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x32)
    if not finite.all():
        bad_cols = np.flatnonzero(~finite.all(axis=0))
        bad_rows = int((~finite.all(axis=1)).sum())
        overflow = " (values beyond float32 range count as inf)" if np.isfinite(x).all() else ""
        raise ValueError(
            f"training data has non-finite values (NaN/inf) in {bad_rows} row(s), feature column(s) "
            f"{bad_cols[:10].tolist()}{' ...' if len(bad_cols) > 10 else ''}{overflow}; impute or drop them first"
        )
    return x32


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _int_tuple(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{name} must be a list of positive integers, got {value!r}")
    items = tuple(value)
    if not items:
        raise ConfigError(f"{name} must name at least one layer width, got an empty list")
    for i, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, numbers.Integral) or item < 1:
            raise ConfigError(f"{name}[{i}] must be a positive integer, got {item!r}")
    return tuple(int(i) for i in items)


def _float(
    name: str, value: Any, low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if value < low or (low_open and value == low) or value > high or (high_open and value == high):
        left = "(" if low_open else "["
        right = ")" if high_open or not math.isfinite(high) else "]"
        interval = f"{left}{low}, {high if math.isfinite(high) else 'inf'}{right}"
        raise ConfigError(f"{name} must be in {interval}, got {value}")
    return value
