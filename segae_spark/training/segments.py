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
from segae_spark.models.autoencoders import AutoencoderConfig, train_autoencoder_models
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


def train_model_group(
    groups: dict[str, dict[int, np.ndarray]], config: AutoencoderConfig, seed: int
) -> dict[str, tuple[TrainedModel, dict[int, dict[str, np.ndarray]]]]:
    """Train every model of ``groups`` (``{model name: {segment: rows}}``) together.

    Each model trains on the union of its segments' rows (in segment order)
    from :func:`model_seed`; dense and batchnorm autoencoders (and ensemble
    members) train in one stacked computation, each model exactly as it
    would alone, AEGMMs and user models one after another. Returns, per model,
    the model and, for each of its segments and each threshold metric, the
    sorted reconstruction errors of the segment's rows under it (what
    thresholds are computed from, whichever metric scoring uses). Runs on the
    driver or inside a Spark task alike.
    """
    names = sorted(groups)
    segments = {name: sorted(seg for seg, x in groups[name].items() if len(x)) for name in names}
    xs = [np.concatenate([groups[name][seg] for seg in segments[name]], axis=0) for name in names]
    start = time.perf_counter()
    trained = train_autoencoder_models(xs, config, [model_seed(name, seed) for name in names])
    seconds = round((time.perf_counter() - start) / len(names), 3)
    out = {}
    for name, model in zip(names, trained):
        training = {**model.training, "segments": segments[name], "seconds": seconds, "trained_together": len(names)}
        errors = {
            seg: {m: np.sort(model.engine.row_errors(groups[name][seg], m)) for m in THRESHOLD_METRICS}
            for seg in segments[name]
        }
        out[name] = (TrainedModel(name, model.npz, model.keras, training), errors)
    return out


def group_samples(samples: dict[int, np.ndarray], plan: dict[int, str]) -> dict[str, dict[int, np.ndarray]]:
    """The training rows of each model: its segments' samples (all segments for the shared one)."""
    groups: dict[str, dict[int, np.ndarray]] = {}
    if SHARED_MODEL in plan.values():
        groups[SHARED_MODEL] = dict(samples)
    for seg, name in plan.items():
        if name != SHARED_MODEL:
            groups[name] = {seg: samples[seg]}
    return groups


