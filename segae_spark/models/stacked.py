"""Train several autoencoders of one architecture at once, as one stacked computation.

A small autoencoder trained with Keras' ``fit`` spends most of its time on
per-step and per-call overhead, not arithmetic; K per-segment models paid
that overhead K times, which made per-segment training over twice as slow as
one shared model on the same rows. Here K models of one stacked architecture
(dense or batch-norm) train together: every weight gets a leading model
axis, one step computes all K models' batches with batched matrix products,
and a whole epoch runs as one compiled TensorFlow loop.

The models stay independent, so a model trains the same whether it is
grouped with others or alone, to float32 rounding (tested; bit for bit for
dense models on some CPUs, but TensorFlow's CPU matrix products may round
differently for another group shape, as its batch statistics do): each has its own seed (its initial
weights are those of ``config.build`` for that seed), its own validation
rows, its own shuffling, batches of ``batch_size`` of its own rows, its own
Adam state and step count, its own dropout draws and its own early stopping.
A model with fewer batches than the largest sits the remaining steps of the
epoch out: neither its weights, its statistics nor its optimizer state move.

The update is Keras' (Adam with Keras' defaults and rule, MSE plus L2
penalties, inverted dropout, batch normalisation with batch moments in
training and moving statistics for validation); a test checks it against
Keras' ``fit``. Trained weights go back into each seed's Keras model, so the
numpy engine and the ``.keras`` file are made exactly as for any model.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Sequence

import numpy as np

from segae_spark.errors import ConfigError
from segae_spark.models.dense import (
    StackAutoencoderConfig,
    TrainingResult,
    _seed,
    _training_matrix,
    logger,
    split_rows,
    validation_rows,
)

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["train_autoencoder", "train_stacked"]

ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-7
"""Keras' Adam defaults, which every built-in model trained with before."""

_VALIDATION_CHUNK_ROWS = 8192


def train_autoencoder(x: np.ndarray, config: StackAutoencoderConfig, seed: int, name: str | None = None) -> TrainingResult:
    """Train one autoencoder (dense or batch-norm config) to reconstruct ``x``; reproducible for a seed.

    The same training as a model of a :func:`train_stacked` group.
    """
    return train_stacked([x], config, [seed], [name])[0]


def train_stacked(
    xs: Sequence[np.ndarray],
    config: StackAutoencoderConfig,
    seeds: Sequence[int],
    names: Sequence[str | None] | None = None,
) -> list[TrainingResult]:
    """Train one ``config`` autoencoder per matrix of ``xs`` (model ``k`` on ``xs[k]`` from ``seeds[k]``).

    All matrices must have the same number of columns. Returns one
    :class:`~segae_spark.models.dense.TrainingResult` per model, in order,
    each holding its own Keras model with the trained weights (the best
    validation epoch's when ``validation_split > 0``). Bad settings
    (ConfigError) and bad data (ValueError) are reported before any
    TensorFlow work starts.
    """
    if not isinstance(config, StackAutoencoderConfig) or type(config) is StackAutoencoderConfig:
        raise ConfigError(
            f"config must be a DenseAutoencoderConfig or BatchNormAutoencoderConfig, got {type(config).__name__}"
        )
    if len(xs) != len(seeds) or not xs:
        raise ValueError(f"need one seed per training matrix, got {len(xs)} matrices and {len(seeds)} seeds")
    names = list(names) if names is not None else [None] * len(xs)
    seeds = [_seed(s) for s in seeds]
    xs = [_training_matrix(x) for x in xs]
    widths = sorted({x.shape[1] for x in xs})
    if len(widths) != 1:
        raise ValueError(f"models trained together need the same number of features, got {widths}")
    n_vals = [validation_rows(len(x), config.validation_split) for x in xs]

    start = time.perf_counter()
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    models = [config.build(widths[0], seed, name=name) for seed, name in zip(seeds, names)]
    splits = [split_rows(x, seed, n_val) for x, seed, n_val in zip(xs, seeds, n_vals)]
    net = _StackedNetwork(models, config, seeds, tf)
    histories = net.fit([s[0] for s in splits], [s[1] for s in splits], seeds)
    net.export(models)
    seconds = time.perf_counter() - start

    results = []
    for x, n_val, model, history in zip(xs, n_vals, models, histories):
        losses, val_losses = history["loss"], history.get("val_loss", [])
        best = int(np.argmin(val_losses)) if val_losses else len(losses) - 1
        train_loss, val_loss = losses[best], (val_losses[best] if val_losses else None)
        if not math.isfinite(train_loss) or (val_loss is not None and not math.isfinite(val_loss)):
            raise ConfigError(
                f"training diverged (train_loss={train_loss}, val_loss={val_loss}); "
                f"lower learning_rate (now {config.learning_rate}) or scale the features"
            )
        results.append(
            TrainingResult(
                model=model,
                epochs_run=len(losses),
                train_loss=train_loss,
                val_loss=val_loss,
                seconds=round(seconds / len(xs), 3),
                rows=len(x),
                val_rows=n_val,
                best_epoch=best,
                history=history,
            )
        )
        logger.info(
            "%s trained: rows=%d (val %d) features=%d epochs=%d/%d best_epoch=%d "
            "train_loss=%.6g val_loss=%s seconds=%.1f%s",
            config.label, len(x), n_val, widths[0], len(losses), config.epochs, best + 1, train_loss,
            "n/a" if val_loss is None else f"{val_loss:.6g}", seconds,
            f" (one of {len(xs)} trained together)" if len(xs) > 1 else "",
        )
    return results


class _StackedNetwork:
    """The K models' layers as stacked TensorFlow variables, with Keras' training step."""

    def __init__(self, models: list["keras.Model"], config: StackAutoencoderConfig, seeds: list[int], tf):
        self.tf, self.config, self.k = tf, config, len(models)
        self.layers: list[tuple] = []  # (kind, settings, {weight name: stacked variable})
        self.trainable: list = []
        self.penalised: list = []  # kernels under L2
        for position, template in enumerate(models[0].layers):
            stacked = {}
            for attr in _WEIGHTS.get(type(template).__name__, ()):
                if getattr(template, attr, None) is None:
                    continue
                values = np.stack([np.asarray(getattr(m.layers[position], attr).numpy()) for m in models])
                trainable = attr in ("kernel", "bias", "gamma", "beta")
                stacked[attr] = tf.Variable(values, trainable=trainable, name=f"l{position}_{attr}")
                if trainable:
                    self.trainable.append(stacked[attr])
                if attr == "kernel" and config.l2 > 0:
                    self.penalised.append(stacked[attr])
            self.layers.append((type(template).__name__, template, stacked))
        unknown = [kind for kind, _, _ in self.layers if kind not in _SUPPORTED]
        if unknown:
            raise ConfigError(f"stacked training does not know layer type(s) {unknown}")
        # One stateless-dropout seed per model and layer, from the model's seed.
        self.dropout_seeds = tf.constant(
            np.array([np.random.SeedSequence([s, 7]).generate_state(len(self.layers)) for s in seeds], dtype=np.int64)
            % (2**31 - 1)
        )
        self.moments = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in self.trainable]
        self.steps = tf.Variable(tf.zeros([self.k], tf.float32))
        self._epoch = tf.function(self._train_epoch, reduce_retracing=True)
        self._errors = tf.function(self._validation_errors, reduce_retracing=True)

    # ------------------------------------------------------------ forward
    def _forward(self, x, mask, training: bool):
        tf = self.tf
        ones = tf.ones_like(mask)
        h = x
        for position, (kind, layer, w) in enumerate(self.layers):
            if kind == "Dense":
                h = tf.einsum("kbi,kio->kbo", h, w["kernel"])
                if "bias" in w:
                    h = h + _over_rows(tf, ones, w["bias"])
                h = layer.activation(h)
            elif kind == "BatchNormalization":
                h = self._batch_norm(h, layer, w, mask, ones, training)
            elif kind == "Activation":
                h = layer.activation(h)
            elif kind == "Dropout" and training and layer.rate > 0:
                h = self._dropout(h, layer.rate, position)
        return h

    def _batch_norm(self, h, layer, w, mask, ones, training: bool):
        tf = self.tf
        if training:
            rows = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)[:, None]
            mean = tf.einsum("kb,kbw->kw", mask, h) / rows
            variance = tf.einsum("kb,kbw->kw", mask, tf.square(h - _over_rows(tf, ones, tf.stop_gradient(mean)))) / rows
            active = tf.cast(tf.reduce_sum(mask, axis=1) > 0, h.dtype)[:, None]
            momentum = layer.momentum
            for stat, batch in (("moving_mean", mean), ("moving_variance", variance)):
                old = w[stat]
                w[stat].assign(old + active * ((old * momentum + batch * (1.0 - momentum)) - old))
        else:
            mean, variance = w["moving_mean"], w["moving_variance"]
        scale = tf.math.rsqrt(variance + layer.epsilon)
        if "gamma" in w:
            scale = scale * w["gamma"]
        h = (h - _over_rows(tf, ones, mean)) * _over_rows(tf, ones, scale)
        return h + _over_rows(tf, ones, w["beta"]) if "beta" in w else h

    def _dropout(self, h, rate: float, position: int):
        """Keras' inverted dropout, drawn per model from (its layer seed, its own step count)."""
        tf = self.tf
        shape = tf.shape(h)[1:]
        steps = tf.cast(self.steps, tf.int64)
        keep = tf.stack(
            [
                tf.random.stateless_uniform(shape, seed=tf.stack([self.dropout_seeds[k, position], steps[k]])) >= rate
                for k in range(self.k)
            ]
        )
        return tf.where(keep, h / (1.0 - rate), tf.zeros_like(h))

    def _penalty(self):
        tf = self.tf
        total = tf.zeros([self.k])
        for kernel in self.penalised:
            total += self.config.l2 * tf.reduce_sum(tf.square(kernel), axis=[1, 2])
        return total

    def _row_losses(self, x, mask, training: bool):
        """Per model: mean over its real rows of the row MSE, plus its L2 penalty."""
        tf = self.tf
        error = tf.reduce_mean(tf.square(self._forward(x, mask, training) - x), axis=-1)
        rows = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
        return tf.reduce_sum(error * mask, axis=1) / rows + self._penalty()

    # ------------------------------------------------------------ training
    def _train_epoch(self, data, index, counts):
        """One epoch: ``index[s, k]`` are model k's row numbers in ``data[k]`` at step s,
        ``counts[s, k]`` how many of them are real (the rest pad). Returns each
        model's row-weighted loss sum over the epoch."""
        tf = self.tf
        batch = tf.shape(index)[2]
        totals = tf.zeros([self.k])
        for s in tf.range(tf.shape(index)[0]):
            x = tf.gather(data, index[s], batch_dims=1)
            mask = tf.sequence_mask(counts[s], batch, dtype=tf.float32)
            active = tf.cast(counts[s] > 0, tf.float32)
            with tf.GradientTape() as tape:
                losses = self._row_losses(x, mask, True)
                total = tf.reduce_sum(losses * active)
            gradients = tape.gradient(total, self.trainable)
            self._adam(gradients, active)
            totals += losses * tf.cast(counts[s], tf.float32)
        return totals

    def _adam(self, gradients, active):
        """Keras' Adam update, applied only to the models with rows in this step."""
        tf = self.tf
        self.steps.assign_add(active)
        step = tf.maximum(self.steps, 1.0)
        alpha = self.config.learning_rate * tf.sqrt(1.0 - ADAM_BETA_2**step) / (1.0 - ADAM_BETA_1**step)
        for variable, gradient, (m, v) in zip(self.trainable, gradients, self.moments):
            shape = [self.k] + [1] * (len(variable.shape) - 1)
            on = tf.reshape(active, shape)
            m.assign_add(on * ((gradient - m) * (1.0 - ADAM_BETA_1)))
            v.assign_add(on * ((tf.square(gradient) - v) * (1.0 - ADAM_BETA_2)))
            variable.assign_sub(on * ((m * tf.reshape(alpha, shape)) / (tf.sqrt(v) + ADAM_EPSILON)))

    def _validation_errors(self, x, mask):
        """Each row's MSE under its model, in inference mode: (K, rows)."""
        tf = self.tf
        return tf.reduce_mean(tf.square(self._forward(x, mask, False) - x), axis=-1)

    def fit(self, trains: list[np.ndarray], vals: list[np.ndarray | None], seeds: list[int]) -> list[dict]:
        """Train every model for ``config.epochs`` epochs or until its early stopping; keep its best epoch."""
        tf, config = self.tf, self.config
        batch = min(config.batch_size, max(len(x) for x in trains))
        data = tf.constant(_padded(trains))
        val_data = _padded([v if v is not None else np.zeros((0, trains[0].shape[1]), np.float32) for v in vals])
        val_rows = np.array([0 if v is None else len(v) for v in vals])
        histories = [{"loss": []} | ({"val_loss": []} if v is not None else {}) for v in vals]
        running = np.ones(self.k, dtype=bool)
        best = [math.inf] * self.k
        wait = [0] * self.k
        best_weights = self._snapshot()
        for epoch in range(config.epochs):
            index, counts = _epoch_batches([len(x) for x in trains], batch, seeds, epoch, running)
            totals = self._epoch(data, tf.constant(index), tf.constant(counts)).numpy()
            losses = totals / np.maximum(counts.sum(axis=0), 1)
            validation = self._validate(val_data, val_rows) if val_rows.any() else None
            improved = np.zeros(self.k, dtype=bool)
            for k in np.flatnonzero(running):
                histories[k]["loss"].append(float(losses[k]))
                if validation is None:
                    continue
                histories[k]["val_loss"].append(float(validation[k]))
                # Keras' EarlyStopping: count, reset on improvement, stop at patience.
                wait[k] += 1
                if validation[k] < best[k]:
                    best[k], wait[k], improved[k] = float(validation[k]), 0, True
                elif wait[k] >= config.early_stopping_patience and epoch > 0:
                    running[k] = False
            if improved.any():
                best_weights = self._snapshot(keep=best_weights, take=improved)
            if not running.any():
                break
        if val_rows.any():
            self._restore(best_weights)
        return histories

    def _validate(self, val_data: np.ndarray, val_rows: np.ndarray) -> np.ndarray:
        tf = self.tf
        sums = np.zeros(self.k)
        for begin in range(0, val_data.shape[1], _VALIDATION_CHUNK_ROWS):
            chunk = val_data[:, begin : begin + _VALIDATION_CHUNK_ROWS]
            real = np.clip(val_rows - begin, 0, chunk.shape[1])
            mask = tf.sequence_mask(real, chunk.shape[1], dtype=tf.float32)
            errors = self._errors(tf.constant(chunk), mask).numpy()
            # Summed per model over its own rows only, so padding (which
            # depends on the other models of the group) cannot change a bit.
            sums += [errors[k, :n].sum(dtype=np.float64) for k, n in enumerate(real)]
        return sums / np.maximum(val_rows, 1) + self._penalty().numpy()

    def _variables(self) -> list:
        return [v for _, _, w in self.layers for v in w.values()]

    def _snapshot(self, keep: list[np.ndarray] | None = None, take: np.ndarray | None = None) -> list[np.ndarray]:
        """Every stacked variable's value; with ``keep``/``take``, only the ``take`` models' slices are new."""
        values = [v.numpy() for v in self._variables()]
        if keep is None:
            return values
        return [np.where(take.reshape([-1] + [1] * (new.ndim - 1)), new, old) for new, old in zip(values, keep)]

    def _restore(self, values: list[np.ndarray]) -> None:
        for variable, value in zip(self._variables(), values):
            variable.assign(value)

    def export(self, models: list["keras.Model"]) -> None:
        """Write each model's slice of the stacked weights into its Keras model."""
        for position, (_, _, w) in enumerate(self.layers):
            for attr, variable in w.items():
                values = variable.numpy()
                for k, model in enumerate(models):
                    getattr(model.layers[position], attr).assign(values[k])


_WEIGHTS = {
    "Dense": ("kernel", "bias"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
}
_SUPPORTED = ("Dense", "BatchNormalization", "Activation", "Dropout")


def _over_rows(tf, ones, values):
    """``values`` (K, w) repeated over each model's rows: (K, rows, w).

    Written as a batched product rather than a broadcast: the gradient of a
    broadcast sums over the rows axis, and TensorFlow's sum over a middle
    axis rounds differently depending on K, which would make a model's
    weights depend on the models it trained with; a batched product's does not.
    """
    return tf.einsum("kb,kw->kbw", ones, values)


def _padded(matrices: list[np.ndarray]) -> np.ndarray:
    """Stack matrices of different lengths into (K, max rows + 1, d); the extra zero row is the pad."""
    rows = max(len(m) for m in matrices)
    out = np.zeros((len(matrices), rows + 1, matrices[0].shape[1]), dtype=np.float32)
    for k, m in enumerate(matrices):
        out[k, : len(m)] = m
    return out


def _epoch_batches(
    rows: list[int], batch: int, seeds: list[int], epoch: int, running: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each model's shuffled batches of this epoch, aligned by step.

    Returns ``index`` (steps, K, batch) of row numbers (padding points at the
    zero row after the model's last row) and ``counts`` (steps, K) of real rows
    per step; a stopped model, and a model out of batches, has count 0.
    """
    steps = max(math.ceil(n / batch) for n, on in zip(rows, running) if on)
    index = np.empty((steps, len(rows), batch), dtype=np.int32)
    counts = np.zeros((steps, len(rows)), dtype=np.int32)
    pad = max(rows)
    for k, n in enumerate(rows):
        order = np.full(steps * batch, pad, dtype=np.int32)
        if running[k]:
            order[:n] = np.random.default_rng([seeds[k], epoch]).permutation(n)
            counts[:, k] = np.clip(n - np.arange(steps) * batch, 0, batch)
        index[:, k, :] = order.reshape(steps, batch)
    return index, counts
