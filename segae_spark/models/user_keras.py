"""A user's own Keras model as the autoencoder: ``{"type": "keras", "path": ...}``.

The model (any Keras model mapping x to x-hat, compiled or not) is read from
a ``.keras`` file with Keras' safe mode, so loading it cannot run arbitrary
code (lambda layers are refused; custom layers must be registered with
``keras.saving.register_keras_serializable`` where training and scoring run).
Each segment trains a fresh, seeded copy. On a cluster the path must be
readable from the executors (DBFS, a Unity Catalog volume, shared storage).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Mapping

from segae_spark.errors import ConfigError
from segae_spark.models.dense import _float, _int, config_fields

# path -> template model, per process: a task reuses what an earlier task loaded.
_TEMPLATES: dict[str, Any] = {}


@dataclass(frozen=True)
class UserKerasConfig:
    """Where the user's model is, and how to train each segment's copy of it."""

    path: str
    epochs: int = 40
    batch_size: int = 256
    validation_split: float = 0.1
    early_stopping_patience: int = 5
    learning_rate: float = 1e-3
    type: ClassVar[str] = "keras"
    label: ClassVar[str] = "keras autoencoder"

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.endswith(".keras"):
            raise ConfigError(f"autoencoder.path must name a .keras file, got {self.path!r}")
        _int("epochs", self.epochs, low=1)
        _int("batch_size", self.batch_size, low=1)
        _float("validation_split", self.validation_split, low=0.0, high=1.0, high_open=True)
        _int("early_stopping_patience", self.early_stopping_patience, low=0)
        _float("learning_rate", self.learning_rate, low=0.0, low_open=True)

    @classmethod
    def from_dict(cls, d: Mapping) -> "UserKerasConfig":
        kwargs = config_fields(cls, d)
        if "path" not in kwargs:
            raise ConfigError("a keras autoencoder config needs 'path': the user's .keras model file")
        return cls(**kwargs)

    def to_dict(self) -> dict:
        return {"type": self.type, **asdict(self)}

    def check_readable(self) -> None:
        """Fail before training when the driver cannot see a local model file."""
        if "://" not in self.path and not os.path.isfile(self.path):
            raise ConfigError(f"autoencoder.path {self.path} does not exist")

    def template(self):
        """The user's model, loaded once per process in Keras' safe mode."""
        model = _TEMPLATES.get(self.path)
        if model is None:
            import keras

            try:
                model = keras.saving.load_model(self.path, safe_mode=True)
            except Exception as exc:  # Keras raises many types for a bad file
                raise ConfigError(f"cannot load the user model {self.path}: {exc}") from None
            _TEMPLATES[self.path] = model
        return model
