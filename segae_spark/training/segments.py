"""What to train for each segment, and training one model on its rows.

Two modes: ``per_segment`` trains one autoencoder per segment; ``shared``
trains one autoencoder on the rows of all segments (SegmentAE's way) and
keeps per-segment thresholds. In per-segment mode a segment with fewer than
``min_rows`` training rows falls back to the shared model, and the manifest
records which segments did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from segae_spark.errors import ConfigError
from segae_spark.models.autoencoders import AutoencoderConfig, train_autoencoder_model
from segae_spark.models.reconstruction import THRESHOLD_METRICS

SHARED_MODEL = "shared"
TRAINING_MODES = ("per_segment", "shared")


def segment_model_name(segment: int) -> str:
    return f"segment_{segment}"


@dataclass
class TrainedModel:
    """One trained autoencoder: numpy weights for scoring, the .keras file for users.

    ``npz`` is None for a user model the numpy engine cannot run; executors
    then score it from the ``.keras`` bytes with Keras.
    """

    name: str
    npz: bytes | None
    keras: bytes
    training: dict = field(default_factory=dict)


def model_plan(counts: dict[int, int], mode: str, min_rows: int, max_rows: int) -> dict[int, str]:
    """``{segment: model name}``: which model scores (and sets thresholds for) each segment."""
    if mode not in TRAINING_MODES:
        raise ConfigError(f"training mode must be one of {TRAINING_MODES}, got {mode!r}")
    if mode == "shared":
        return {seg: SHARED_MODEL for seg in counts}
    return {seg: segment_model_name(seg) if min(n, max_rows) >= min_rows else SHARED_MODEL for seg, n in counts.items()}


def model_seed(name: str, seed: int) -> int:
    """Each model's own seed, derived from the run's seed and the model's name."""
    return seed if name == SHARED_MODEL else seed + 1 + int(name.rsplit("_", 1)[1])


def train_model(
    name: str, samples: dict[int, np.ndarray], config: AutoencoderConfig, seed: int
) -> tuple[TrainedModel, dict[int, dict[str, np.ndarray]]]:
    """Train model ``name`` on the union of ``samples`` (in segment order).

    Returns the model and, for each segment in ``samples`` and each
    threshold metric, the sorted reconstruction errors of its rows under this
    model (what thresholds are computed from, whichever metric scoring uses).
    Runs on the driver or inside a Spark task alike.
    """
    segments = sorted(seg for seg, x in samples.items() if len(x))
    x = np.concatenate([samples[seg] for seg in segments], axis=0)
    start = time.perf_counter()
    trained = train_autoencoder_model(x, config, model_seed(name, seed))
    training = {**trained.training, "segments": segments, "seconds": round(time.perf_counter() - start, 3)}
    errors = {
        seg: {m: np.sort(trained.engine.row_errors(samples[seg], m)) for m in THRESHOLD_METRICS} for seg in segments
    }
    return TrainedModel(name, trained.npz, trained.keras, training), errors


def group_samples(samples: dict[int, np.ndarray], plan: dict[int, str]) -> dict[str, dict[int, np.ndarray]]:
    """The training rows of each model: its segments' samples (all segments for the shared one)."""
    groups: dict[str, dict[int, np.ndarray]] = {}
    if SHARED_MODEL in plan.values():
        groups[SHARED_MODEL] = dict(samples)
    for seg, name in plan.items():
        if name != SHARED_MODEL:
            groups[name] = {seg: samples[seg]}
    return groups


