"""Train one autoencoder per segment on the driver, from bounded samples.

A segment with fewer than ``min_rows`` sampled rows cannot train a model of its
own; it falls back to a global model trained on the union of all samples, and
the manifest records which segments did.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from segae_spark.models.dense import DenseAutoencoderConfig, train_autoencoder
from segae_spark.models.numpy_engine import NumpyAutoencoder
from segae_spark.models.reconstruction import row_errors
from segae_spark.progress import logger
from segae_spark.thresholds import ErrorStats

GLOBAL_MODEL = "global"


def segment_model_name(segment: int) -> str:
    return f"segment_{segment}"


@dataclass
class TrainedModel:
    """One trained autoencoder: numpy weights for scoring, the .keras file for users."""

    name: str
    npz: bytes
    keras: bytes
    training: dict = field(default_factory=dict)


@dataclass
class SegmentFit:
    """What training learned about one segment."""

    segment: int
    model: str
    stats: ErrorStats


def _keras_bytes(model) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        with open(path, "rb") as fh:
            return fh.read()


def _train(name: str, x: np.ndarray, config: DenseAutoencoderConfig, seed: int) -> tuple[TrainedModel, NumpyAutoencoder]:
    result = train_autoencoder(x, config, seed)
    engine = NumpyAutoencoder.from_keras(result.model)
    training = {
        "rows": result.rows,
        "epochs_run": result.epochs_run,
        "train_loss": result.train_loss,
        "val_loss": result.val_loss,
        "seconds": round(result.seconds, 3),
        "seed": seed,
    }
    return TrainedModel(name, engine.to_npz_bytes(), _keras_bytes(result.model), training), engine


def train_segments(
    samples: dict[int, np.ndarray],
    config: DenseAutoencoderConfig,
    seed: int,
    metric: str,
    min_rows: int,
) -> tuple[dict[str, TrainedModel], list[SegmentFit]]:
    """Train the per-segment models (and the global fallback when needed)."""
    models: dict[str, TrainedModel] = {}
    engines: dict[str, NumpyAutoencoder] = {}
    small = [seg for seg, x in samples.items() if len(x) < min_rows]
    if small:
        union = np.concatenate([x for x in samples.values() if len(x)], axis=0)
        logger.info("train: segments %s have < %d rows; training a global fallback on %d rows", small, min_rows, len(union))
        models[GLOBAL_MODEL], engines[GLOBAL_MODEL] = _train(GLOBAL_MODEL, union, config, seed)
    fits: list[SegmentFit] = []
    total = len(samples)
    start = time.perf_counter()
    for done, (segment, x) in enumerate(sorted(samples.items()), start=1):
        name = GLOBAL_MODEL if segment in small else segment_model_name(segment)
        if name not in models:
            models[name], engines[name] = _train(name, x, config, seed + 1 + segment)
        reference = x if len(x) else union
        errors = row_errors(reference, engines[name].predict(reference), metric)
        fits.append(SegmentFit(segment, name, ErrorStats.of(errors)))
        logger.info(
            "train: segment %d/%d done (model=%s, rows=%d, mean error=%.5g, elapsed %.1fs)",
            done, total, name, len(x), fits[-1].stats.mean, time.perf_counter() - start,
        )
    return models, fits
