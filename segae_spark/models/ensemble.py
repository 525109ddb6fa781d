"""The ensemble autoencoder (``type: ensemble``): several members, one score.

An ensemble trains ``members`` autoencoders of one base architecture (dense
or batchnorm) on the same rows, each from its own seed and optionally with
its hidden widths scaled (``width_scales``), and scores a row by the mean of
the members' row errors (:class:`~segae_spark.models.numpy_engine.NumpyEnsemble`).
Averaging errors of differently initialised models lowers the variance of a
row's score, which is what makes a single model's threshold noisy.

Seeds: member ``m`` of an ensemble trained with ``seed`` trains with
:func:`member_seed` ``(seed, m)``, the first word of
``numpy.random.SeedSequence([seed, m])``: distinct for every member and
segment seed, and reproducible from those two numbers alone.

Saved Keras model: one functional model named ``ensemble_autoencoder`` whose
input (``features``) feeds each member (a nested Sequential model named
``member_m``) and whose outputs are the members' reconstructions, in member
order. ``keras.saving.load_model`` reads it like any model; ``predict``
returns the list of reconstructions.

Keras is imported inside the training functions only.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

from segae_spark.errors import ConfigError
from segae_spark.models.batchnorm import BatchNormAutoencoderConfig
from segae_spark.models.dense import (
    DenseAutoencoderConfig,
    StackAutoencoderConfig,
    TrainingResult,
    config_fields,
    _int,
    _seed,
)
from segae_spark.models.stacked import train_stacked

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "ENSEMBLE_BASE_TYPES",
    "EnsembleAutoencoderConfig",
    "EnsembleTrainingResult",
    "build_ensemble_model",
    "member_seed",
    "train_ensemble",
    "train_ensembles",
]

ENSEMBLE_BASE_TYPES: dict[str, type[StackAutoencoderConfig]] = {
    "dense": DenseAutoencoderConfig,
    "batchnorm": BatchNormAutoencoderConfig,
}
"""Architectures an ensemble's members can have, by their ``type``."""


@dataclass(frozen=True)
class EnsembleAutoencoderConfig:
    """``members`` autoencoders of the ``base`` architecture, averaged.

    ``base`` is a dense or batchnorm config (or its dict, ``type`` defaulting
    to ``dense``); its training settings apply to every member.
    ``width_scales``, when given, has one positive factor per member that
    multiplies the base's hidden widths (rounded half up, at least 1), e.g.
    ``[1.0, 0.75, 1.25]``, so members differ in capacity as well as in seed.
    """

    type: ClassVar[str] = "ensemble"
    label: ClassVar[str] = "ensemble autoencoder"

    members: int = 3
    base: StackAutoencoderConfig = field(default_factory=DenseAutoencoderConfig)
    width_scales: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        def set_(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)  # the dataclass is frozen

        set_("members", _int("members", self.members, low=2))
        set_("base", _base_config(self.base))
        if self.width_scales is not None:
            scales = self.width_scales
            if isinstance(scales, (str, bytes)) or not hasattr(scales, "__iter__"):
                raise ConfigError(f"width_scales must be a list of positive numbers, got {scales!r}")
            scales = tuple(scales)
            if len(scales) != self.members:
                raise ConfigError(
                    f"width_scales has {len(scales)} value(s) but members is {self.members}; give one per member"
                )
            for i, s in enumerate(scales):
                if isinstance(s, bool) or not isinstance(s, numbers.Real) or not math.isfinite(s) or s <= 0:
                    raise ConfigError(f"width_scales[{i}] must be a finite number > 0, got {s!r}")
            set_("width_scales", tuple(float(s) for s in scales))

    @classmethod
    def from_dict(cls, d: Mapping) -> "EnsembleAutoencoderConfig":
        """Build from a mapping; missing keys take defaults, ``base`` is a dict."""
        return cls(**config_fields(cls, d))

    def to_dict(self) -> dict:
        """JSON-ready dict with its ``type``; ``from_dict(to_dict())`` gives an equal config."""
        return {
            "type": self.type,
            "members": self.members,
            "base": self.base.to_dict(),
            "width_scales": None if self.width_scales is None else list(self.width_scales),
        }

    def member_config(self, m: int) -> StackAutoencoderConfig:
        """Member ``m``'s config: the base, its widths scaled by ``width_scales[m]``."""
        if not 0 <= m < self.members:
            raise ValueError(f"member index {m} out of range for {self.members} members")
        if self.width_scales is None:
            return self.base
        scale = self.width_scales[m]
        return self.base.with_hidden_layers(max(1, math.floor(w * scale + 0.5)) for w in self.base.hidden_layers)


def _base_config(base: Any) -> StackAutoencoderConfig:
    if isinstance(base, StackAutoencoderConfig) and type(base).type in ENSEMBLE_BASE_TYPES:
        return base
    if not isinstance(base, Mapping):
        raise ConfigError(
            f"base must be a dense or batchnorm autoencoder config (a mapping), got {type(base).__name__}"
        )
    kind = base.get("type", "dense")
    if kind not in ENSEMBLE_BASE_TYPES:
        raise ConfigError(f"base.type {kind!r} is not supported in an ensemble; expected one of {list(ENSEMBLE_BASE_TYPES)}")
    try:
        return ENSEMBLE_BASE_TYPES[kind].from_dict(base)
    except ConfigError as exc:
        raise ConfigError(f"base: {exc}") from None


def member_seed(seed: int, m: int) -> int:
    """The training seed of member ``m`` of an ensemble trained with ``seed``."""
    return int(np.random.SeedSequence([_seed(seed), int(m)]).generate_state(1)[0])


@dataclass
class EnsembleTrainingResult:
    """The trained members, their combined Keras model, and the total time."""

    members: list[TrainingResult]
    model: "keras.Model"
    seeds: list[int]
    seconds: float


def build_ensemble_model(members: list["keras.Model"], n_features: int) -> "keras.Model":
    """One functional model whose outputs are the members' reconstructions (see the module doc)."""
    import keras

    inputs = keras.Input(shape=(n_features,), dtype="float32", name="features")
    outputs = [member(inputs) for member in members]
    return keras.Model(inputs, outputs, name="ensemble_autoencoder")


def train_ensemble(x: np.ndarray, config: EnsembleAutoencoderConfig, seed: int) -> EnsembleTrainingResult:
    """Train every member on ``x`` from its :func:`member_seed`; reproducible for a given seed."""
    return train_ensembles([x], config, [seed])[0]


def train_ensembles(
    xs: list[np.ndarray], config: EnsembleAutoencoderConfig, seeds: list[int]
) -> list[EnsembleTrainingResult]:
    """Train one ensemble per matrix of ``xs`` (ensemble ``k`` on ``xs[k]`` from ``seeds[k]``).

    Members of the same width, of every ensemble, train together in one
    :func:`~segae_spark.models.stacked.train_stacked` call; each is the model
    it would be if trained alone.
    """
    if not isinstance(config, EnsembleAutoencoderConfig):
        raise ConfigError(f"config must be an EnsembleAutoencoderConfig, got {type(config).__name__}")
    start = time.perf_counter()
    member_seeds = [[member_seed(_seed(seed), m) for m in range(config.members)] for seed in seeds]
    by_config: dict[StackAutoencoderConfig, list[tuple[int, int]]] = {}
    for m in range(config.members):
        by_config.setdefault(config.member_config(m), []).extend((k, m) for k in range(len(xs)))
    trained: dict[tuple[int, int], TrainingResult] = {}
    for member_config, pairs in by_config.items():
        results = train_stacked(
            [xs[k] for k, _ in pairs], member_config, [member_seeds[k][m] for k, m in pairs], [f"member_{m}" for _, m in pairs]
        )
        trained.update(zip(pairs, results))
    seconds = round((time.perf_counter() - start) / len(xs), 3)
    out = []
    for k, x in enumerate(xs):
        members = [trained[(k, m)] for m in range(config.members)]
        model = build_ensemble_model([r.model for r in members], int(np.shape(x)[1]))
        out.append(EnsembleTrainingResult(members, model, member_seeds[k], seconds))
    return out
