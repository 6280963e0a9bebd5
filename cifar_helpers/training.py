"""Training recipes, their callbacks, and the one ``fit`` that the notebooks and
``python -m cifar_helpers train`` share; the precision policy and the
``tf.distribute`` strategy that a run uses.

:class:`Recipe` is the original part-7 one (Adam 5e-4, learning rate x0.98 an
epoch, gradients clipped to a global norm of 100, batch 250, up to 75 epochs,
DropBlock's keep_prob lowered by 0.005 an epoch to 0.8, early stopping with
patience 10) with one deliberate fix: early stopping and the choice of the best
model watch the validation split, never the test set as the original did.
Introduced in notebook 02.

:class:`ModernRecipe` is notebook 05's: SGD with Nesterov momentum and weight
decay, a one-cycle learning rate (:class:`OneCycle`), label smoothing, batch 512,
XLA and several steps per execution. :func:`choose_precision` and
:func:`choose_strategy` pick the mixed-precision policy and the distribution
strategy from the hardware.
"""

import dataclasses
import json
import math
import os
import time
import warnings
from pathlib import Path

import keras

from cifar_helpers import atomic
from cifar_helpers.dropblock import KeepProbSchedule, dropblock_layers


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Every setting of a training run; ``Recipe()`` is the original's."""

    learning_rate: float = 5e-4
    decay_per_epoch: float = 0.98  # learning rate x this after every epoch
    clip_global_norm: float = 100.0
    batch_size: int = 250
    epochs: int = 75
    keep_prob_final: float = 0.8
    keep_prob_per_epoch: float = 0.005  # lowered by this after every epoch
    patience: int = 10  # epochs without a better validation loss before stopping
    monitor: str = "val_loss"
    jit_compile: bool | str = "auto"  # Keras' default: XLA on accelerators only
    steps_per_execution: int = 1

    def __post_init__(self):
        def whole(value):
            return isinstance(value, int) and not isinstance(value, bool) and value >= 1

        allowed = {
            "learning_rate": (self.learning_rate > 0, "a value > 0"),
            "clip_global_norm": (self.clip_global_norm > 0, "a value > 0"),
            "keep_prob_per_epoch": (self.keep_prob_per_epoch > 0, "a value > 0"),
            "decay_per_epoch": (0 < self.decay_per_epoch <= 1, "a factor in (0, 1]"),
            "keep_prob_final": (0 < self.keep_prob_final <= 1, "a value in (0, 1]"),
            "batch_size": (whole(self.batch_size), "a whole number >= 1"),
            "epochs": (whole(self.epochs), "a whole number >= 1"),
            "patience": (whole(self.patience), "a whole number >= 1"),
        }
        for name, (ok, what) in allowed.items():
            if not ok:
                raise ValueError(f"Recipe {name}={getattr(self, name)!r}: use {what}.")

    @property
    def keep_prob_epochs(self) -> int:
        """Epochs until keep_prob reaches its final value (40 in the original)."""
        return max(1, round((1 - self.keep_prob_final) / self.keep_prob_per_epoch))

    def learning_rate_at(self, epoch: int) -> float:
        """The learning rate during ``epoch`` (counted from 0)."""
        return self.learning_rate * self.decay_per_epoch**epoch

    def for_replicas(self, replicas: int) -> "Recipe":
        """The recipe for ``replicas`` devices training together: each keeps the
        batch size, so the global batch and the learning rate grow ``replicas``
        times (Goyal et al.'s linear scaling rule; for Adam a rule of thumb)."""
        return dataclasses.replace(
            self,
            batch_size=self.batch_size * replicas,
            learning_rate=self.learning_rate * replicas,
        )

    def make_optimizer(self, steps_per_epoch=None):
        """Adam with the recipe's learning rate and global-norm clipping."""
        return keras.optimizers.Adam(
            self.learning_rate, global_clipnorm=self.clip_global_norm
        )

    def make_loss(self):
        return keras.losses.SparseCategoricalCrossentropy()

    def compile_options(self) -> dict:
        return {
            "jit_compile": self.jit_compile,
            "steps_per_execution": self.steps_per_execution,
        }

    def schedule_callbacks(self, model) -> list:
        """Learning rate x ``decay_per_epoch`` an epoch; keep_prob lowered by
        ``keep_prob_per_epoch`` an epoch when the model has DropBlock layers."""
        chosen = [keras.callbacks.LearningRateScheduler(self.learning_rate_at)]
        if dropblock_layers(model):
            chosen.append(
                KeepProbSchedule(self.keep_prob_final, duration=self.keep_prob_epochs)
            )
        return chosen


ORIGINAL = Recipe()


@keras.saving.register_keras_serializable(package="cifar_helpers")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle learning rate: a linear warm-up from 0 to ``peak`` over the first
    ``warmup_steps`` steps, then a linear decay that reaches 0 after
    ``total_steps`` steps (and stays 0 after). Step ``s`` (from 0) trains at the
    rate of the end of its interval: ``peak * (s + 1) / warmup_steps`` while
    warming up, ``peak * (total_steps - s) / (total_steps - warmup_steps)`` after.

    Smith & Topin (2017) showed that one large cycle trains residual networks in far
    fewer epochs; Page's DAWNBench ResNet-9 used this piecewise-linear form (without
    Smith's momentum cycle).
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        if not 0 < warmup_steps < total_steps:
            raise ValueError(
                f"OneCycle: warmup_steps={warmup_steps}, total_steps={total_steps}; "
                "the warm-up must be at least one step and shorter than the run."
            )
        self.peak = peak
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        # Step s trains at the rate reached at its end, so the first step does not
        # waste itself at rate 0 and the last one trains at a small rate > 0.
        up = (step + 1) / self.warmup_steps
        down = (self.total_steps - step) / (self.total_steps - self.warmup_steps)
        return self.peak * keras.ops.maximum(0.0, keras.ops.minimum(up, down))

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }


@keras.saving.register_keras_serializable(package="cifar_helpers")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against probabilities, with label smoothing.

    Keras' sparse cross-entropy has no ``label_smoothing``; this one turns each
    label into a one-hot row first. The target puts ``1 - label_smoothing +
    label_smoothing / classes`` on the true class and ``label_smoothing / classes``
    on every other (Szegedy et al., 2016).
    """

    def __init__(self, label_smoothing=0.1, name="smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0 <= label_smoothing < 1:
            raise ValueError(
                f"label_smoothing={label_smoothing!r}: use a value in [0, 1)."
            )
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, [-1]), "int32")
        one_hot = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1])
        return keras.losses.categorical_crossentropy(
            keras.ops.cast(one_hot, y_pred.dtype),
            y_pred,
            label_smoothing=self.label_smoothing,
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


class LearningRateLogger(keras.callbacks.Callback):
    """Log the optimizer's learning rate at the end of each epoch (``learning_rate``),
    for schedules that live in the optimizer rather than in a callback."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )


@dataclasses.dataclass(frozen=True)
class ModernRecipe:
    """Notebook 05's recipe for the modern residual networks; ``ModernRecipe()``
    holds its values (chosen from public ResNet-9/ResNet-18 recipes, not tuned here).

    - SGD, Nesterov momentum ``momentum``, decoupled ``weight_decay`` on kernels
      only (not on batch norm or biases). Keras subtracts ``learning_rate x
      weight_decay x w`` each step; PyTorch's coupled 5e-4 with momentum 0.9 decays
      about 1 / (1 - 0.9) = 10 times harder, hence 5e-3 here;
    - :class:`OneCycle` with ``peak_learning_rate`` after ``warmup_fraction`` of the
      run, for ``epochs`` epochs of ``batch_size`` images;
    - :class:`SmoothedSparseCrossentropy` with ``label_smoothing``;
    - DropBlock keep_prob lowered linearly from 1 to ``keep_prob_final`` over the
      whole run (Ghiasi et al.'s schedule);
    - XLA (``jit_compile``) and ``steps_per_execution`` steps per call into the
      compiled graph; no early stopping (the schedule fixes the budget), the best
      validation model is still checkpointed.
    """

    peak_learning_rate: float = 0.4
    warmup_fraction: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-3
    label_smoothing: float = 0.1
    batch_size: int = 512
    epochs: int = 40
    keep_prob_final: float = 0.9
    jit_compile: bool = True
    steps_per_execution: int = 8
    monitor: str = "val_loss"
    patience: None = None

    def __post_init__(self):
        def whole(value):
            return isinstance(value, int) and not isinstance(value, bool) and value >= 1

        allowed = {
            "peak_learning_rate": (self.peak_learning_rate > 0, "a value > 0"),
            "warmup_fraction": (0 < self.warmup_fraction < 1, "a value in (0, 1)"),
            "momentum": (0 <= self.momentum < 1, "a value in [0, 1)"),
            "weight_decay": (self.weight_decay >= 0, "a value >= 0"),
            "label_smoothing": (0 <= self.label_smoothing < 1, "a value in [0, 1)"),
            "keep_prob_final": (0 < self.keep_prob_final <= 1, "a value in (0, 1]"),
            "batch_size": (whole(self.batch_size), "a whole number >= 1"),
            "epochs": (whole(self.epochs), "a whole number >= 1"),
            "steps_per_execution": (
                whole(self.steps_per_execution),
                "a whole number >= 1",
            ),
        }
        for name, (ok, what) in allowed.items():
            if not ok:
                raise ValueError(
                    f"ModernRecipe {name}={getattr(self, name)!r}: use {what}."
                )

    def for_replicas(self, replicas: int) -> "ModernRecipe":
        """The recipe for ``replicas`` devices: the global batch and the peak
        learning rate grow ``replicas`` times (Goyal et al.'s linear scaling)."""
        return dataclasses.replace(
            self,
            batch_size=self.batch_size * replicas,
            peak_learning_rate=self.peak_learning_rate * replicas,
        )

    def learning_rate_schedule(self, steps_per_epoch: int) -> OneCycle:
        total = self.epochs * steps_per_epoch
        warmup = min(total - 1, max(1, round(self.warmup_fraction * total)))
        return OneCycle(self.peak_learning_rate, total, warmup)

    def make_optimizer(self, steps_per_epoch=None):
        """Nesterov SGD on the one-cycle schedule; needs ``steps_per_epoch``."""
        if not steps_per_epoch or steps_per_epoch < 1:
            raise ValueError(
                f"steps_per_epoch={steps_per_epoch!r}: the one-cycle schedule needs "
                "the number of batches in an epoch (len(train_ds)); pass it to "
                "compile_model."
            )
        optimizer = keras.optimizers.SGD(
            self.learning_rate_schedule(steps_per_epoch),
            momentum=self.momentum,
            nesterov=True,
            weight_decay=self.weight_decay or None,
        )
        # Decay the convolution and dense kernels only.
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        return optimizer

    def make_loss(self):
        return SmoothedSparseCrossentropy(self.label_smoothing)

    def compile_options(self) -> dict:
        return {
            "jit_compile": self.jit_compile,
            "steps_per_execution": self.steps_per_execution,
        }

    def schedule_callbacks(self, model) -> list:
        """Log the learning rate (the optimizer schedules it per step); lower
        keep_prob linearly over the whole run when the model has DropBlock layers."""
        chosen = [LearningRateLogger()]
        if dropblock_layers(model):
            # Epoch 0 trains at 1, the last epoch at keep_prob_final.
            duration = max(1, self.epochs - 1)
            chosen.append(KeepProbSchedule(self.keep_prob_final, duration=duration))
        return chosen


MODERN = ModernRecipe()


def eval_batch_size(count: int, preferred: int, replicas: int = 1) -> int:
    """The largest batch size up to ``preferred`` that splits ``count`` images into
    whole batches, and splits evenly across ``replicas`` devices, so that a
    compiled (XLA) evaluation sees one batch shape on every device. Falls back to
    ``preferred`` (one smaller last batch, one extra compilation) when no such
    size of at least ``preferred // 4`` exists."""
    for size in range(min(preferred, count), max(1, preferred // 4) - 1, -1):
        if count % size == 0 and size % replicas == 0:
            return size
    return preferred


def split_datasets(split, batch_size: int, replicas: int = 1):
    """``(train, validation)`` datasets of a split with a validation part (see
    :func:`cifar_helpers.data.with_validation_split`), as :func:`fit` takes them:
    shuffled full training batches of ``batch_size``, and validation batches of
    :func:`eval_batch_size`."""
    from cifar_helpers import data

    train = data.make_dataset(
        split.x_train, split.y_train, batch_size=batch_size, training=True
    )
    val_batch = eval_batch_size(len(split.y_val), batch_size, replicas)
    val = data.make_dataset(
        split.x_val, split.y_val, batch_size=val_batch, training=False
    )
    return train, val


def run_finished(run_dir) -> bool:
    """Whether :func:`fit` finished in ``run_dir``: it holds ``best.keras`` and no
    ``backup/`` (``BackupAndRestore`` deletes it when training ends, early stopping
    included; an interrupted run leaves it, and :func:`fit` resumes from it).
    Introduced in notebook 06, which evaluates only finished runs."""
    run_dir = Path(run_dir)
    return (run_dir / "best.keras").is_file() and not (run_dir / "backup").exists()


def make_reproducible(seed: int):
    """Seed Python's, NumPy's, TensorFlow's and Keras' random numbers with ``seed``
    and make TensorFlow's operations deterministic, so that a run repeats bit for
    bit on the same hardware and software. Call it once, before building the
    model; determinism cannot be turned off again in the process, and it can slow
    some GPU operations."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class TrainingDiverged(ArithmeticError):
    """The training loss stopped being a finite number; the message says where."""


class StopOnNaN(keras.callbacks.Callback):
    """Stop training at the first step whose loss is NaN or infinite, by raising
    :class:`TrainingDiverged` with the epoch and step (with several steps per
    execution, the last step of the execution in which it happened).

    Keras' ``TerminateOnNaN`` only asks ``fit`` to stop: the epoch still ends, so
    the backup would commit the broken weights as a finished epoch. Raising stops
    before any end-of-epoch callback runs: the backup keeps the last good epoch and
    ``best.keras`` the best one.
    """

    def __init__(self, run_dir=None):
        super().__init__()
        self.run_dir = run_dir
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        kept = ""
        if self.run_dir is not None:
            backup = committed_backup(self.run_dir)
            done = backup["epoch"] if backup else 0
            kept = (
                f" {self.run_dir} keeps the last good state: the backup after "
                f"{done} epoch(s) and best.keras (the best validation loss so far)."
            )
        raise TrainingDiverged(
            f"the training loss became {float(loss)} at epoch {self.epoch + 1}, step "
            f"{batch + 1}: training diverged, and stopped.{kept} A lower learning "
            "rate (or stronger gradient clipping) usually cures it; train it into a "
            "new run folder."
        )


class EpochTimer(keras.callbacks.Callback):
    """Log each epoch's wall time (training and validation) as ``epoch_seconds``."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


def compile_model(model, recipe=ORIGINAL, *, steps_per_epoch=None):
    """Compile ``model`` (probabilities out) with the recipe's optimizer, loss and
    compile options (XLA, steps per execution).

    Metrics: top-1 ``accuracy`` and ``top5`` accuracy. ``steps_per_epoch`` (batches
    in an epoch) is needed by recipes whose schedule counts steps
    (:class:`ModernRecipe`). Under a ``tf.distribute`` strategy, call it inside
    ``strategy.scope()``, where the model was built.
    """
    model.compile(
        optimizer=recipe.make_optimizer(steps_per_epoch),
        loss=recipe.make_loss(),
        metrics=[
            "accuracy",
            keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5"),
        ],
        **recipe.compile_options(),
    )
    return model


class _TrainTimer(keras.callbacks.Callback):
    """Wall time from the first to the last step of a ``fit`` call."""

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start


def training_speed(
    model, batch_size: int, *, steps: int = 3, warmup: bool = True
) -> float:
    """Images per second that a compiled ``model`` trains at, through ``fit``.

    Times ``steps`` training steps (rounded up to whole calls of the model's
    ``steps_per_execution``) on one random uint8 batch of ``batch_size`` images
    (labels 0..99), from the first step to the last (``fit``'s set-up excluded).
    ``warmup`` first runs one call that compiles the step; pass ``False`` when
    timing the same model again. The weights change, so time a model before
    training it, or a copy.
    """
    import numpy as np
    import tensorflow as tf

    per_call = model.steps_per_execution
    steps = -(-steps // per_call) * per_call
    rng = np.random.default_rng(0)
    batch = (
        rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8),
        rng.integers(0, 100, batch_size),
    )
    data = tf.data.Dataset.from_tensors(batch).repeat().prefetch(2)
    if warmup:
        model.fit(data, steps_per_epoch=per_call, epochs=1, verbose=0)
    timer = _TrainTimer()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
    return batch_size * steps / timer.seconds


def read_history(path) -> dict:
    """A run's ``history.csv`` as ``{metric: [value per epoch]}``, resumed parts
    included; ``{}`` when there is none yet. Missing values (``NA``) become NaN."""
    import csv

    path = Path(path)
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        key: [
            float(row[key]) if row[key] not in ("", "NA") else float("nan")
            for row in rows
        ]
        for key in (rows[0] if rows else {})
        if key != "epoch"
    }


class AtomicCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` that writes each model under a partial name and renames
    it when complete (:mod:`cifar_helpers.atomic`): a crash mid-save leaves the
    previous checkpoint intact."""

    def _save_model(self, epoch, batch, logs):
        target = self.filepath
        self.filepath = str(atomic.partial_path(target))
        try:
            super()._save_model(epoch, batch, logs)
        finally:
            self.filepath = target
        partial = atomic.partial_path(target)
        if partial.is_file():  # saved: this epoch improved on the best
            atomic.commit(partial, target)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose backup is committed in one step.

    Keras writes the weights and the epoch counter as two files, in place: a crash
    between or during the two writes leaves a torn backup (new weights with the old
    epoch, or half a weights file). Here each epoch's weights (model and optimizer)
    go to a new file, ``epoch-N.weights.h5``, written atomically; then
    ``training_metadata.json``, also written atomically, names that file and the
    epoch. That second rename is the commit: before it, a resume uses the previous
    epoch's complete state; after it, this one's.
    """

    def _save_model(self):
        backup = Path(self.backup_dir)
        backup.mkdir(parents=True, exist_ok=True)
        weights = backup / f"epoch-{self._current_epoch}.weights.h5"
        with atomic.replacing(weights) as partial:
            self.model.save_weights(partial, overwrite=True)
        record = {
            "epoch": self._current_epoch,
            "batch": self._last_batch_seen,
            "weights": weights.name,
            # In the model's order: their names depend on what the process built
            # before (seed_generator_7...), their order only on the architecture.
            "random_states": [v.numpy().tolist() for v in random_states(self.model)],
        }
        atomic.write_text(self._training_metadata_path, json.dumps(record))
        for older in backup.glob("epoch-*.weights.h5"):
            if older != weights:
                older.unlink()

    def _load_model(self):
        record = committed_backup(Path(self.backup_dir).parent)
        if record is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(Path(self.backup_dir) / record["weights"])
        states = random_states(self.model)
        saved = record.get("random_states", [])  # absent from older backups
        if len(saved) == len(states):
            for variable, value in zip(states, saved, strict=True):
                variable.assign(value)
        elif saved:
            warnings.warn(
                f"{self.backup_dir}: the backup holds {len(saved)} random-generator "
                f"states and this model has {len(states)}; the run resumes, but draws "
                "new random numbers, so it will not repeat bit for bit.",
                stacklevel=2,
            )
        self.model._initial_epoch = record["epoch"]


def random_states(model) -> list:
    """The state of the model's random number generators (each random layer's
    Keras ``SeedGenerator``): ``model.variables`` less its weights and metric
    variables. ``save_weights`` leaves them out, so the backup stores them itself,
    and a resumed run draws the same DropBlock masks and augmentations as one that
    was never interrupted."""
    skip = {id(v) for v in [*model.weights, *model.metrics_variables]}
    return [v for v in model.variables if id(v) not in skip]


def _iterations_started(epochs: int, dataset) -> int:
    """How many times ``Model.fit`` (Keras 3.15) has started iterating a training
    ``dataset`` before epoch ``epochs``: once per epoch, plus, for a dataset of
    known length, one more at each epoch's end that it drops unread (see
    ``keras/src/trainers/epoch_iterator.py``). Each start reshuffles."""
    known = int(dataset.cardinality()) >= 0
    return 2 * epochs if known else epochs


def _fast_forward(dataset, epochs: int):
    """Start (and drop) as many iterations of ``dataset`` as ``fit`` had started
    before epoch ``epochs``, so that a resumed run's seeded shuffle and augmentation
    draws continue where the interrupted run's stopped. A start is cheap: it does
    not read the epoch's data."""
    for _ in range(_iterations_started(epochs, dataset)):
        iter(dataset)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` that, in a resumed run, carries on where the interrupted
    run stopped counting.

    Keras' callback starts afresh in each ``fit``: after a resume its patience
    would count from the resume, so a run interrupted once could train longer than
    one that was not. Given the monitored values the run logged before (``logged``,
    one per committed epoch), this one replays them to recover the best value, its
    epoch and the epochs waited since, and takes the best weights from ``best``
    (the ``best.keras`` checkpoint, saved at that same epoch on the same monitor).
    """

    def __init__(self, logged=(), best=None, **kwargs):
        super().__init__(**kwargs)
        self.logged = list(logged)
        self.best_path = None if best is None else Path(best)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if not self.logged:
            return
        self._set_monitor_op()
        for epoch, value in enumerate(self.logged):  # what on_epoch_end did, replayed
            self.wait += 1
            if self._is_improvement(value, self.best):
                self.best, self.best_epoch, self.wait = value, epoch, 0
        if self.restore_best_weights and self.best_path and self.best_path.is_file():
            saved = keras.saving.load_model(self.best_path, compile=False)
            self.best_weights = saved.get_weights()


def committed_backup(run_dir) -> dict | None:
    """The backup an interrupted run in ``run_dir`` resumes from: ``{"epoch": epochs
    finished, "weights": file name, ...}``, or None when there is none."""
    path = Path(run_dir) / "backup" / "training_metadata.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _trim_history(path: Path, epochs: int):
    """Keep the rows of the first ``epochs`` epochs of a CSV history: a crash after
    a row was logged but before its epoch's backup was committed leaves a row that
    the resumed run logs again (and perhaps a half-written last line)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[: 1 + epochs]
    if len(kept) > 1 and not kept[-1].endswith("\n"):
        kept = kept[:-1]  # a half-written row
    if kept != lines:
        atomic.write_text(path, "".join(kept))


def _check_keras_can_train_under(strategy):
    """Refuse, with the reason, what this Keras cannot do: ``Model.fit`` across
    several workers fails in Keras 3.15 and earlier (keras-team/keras#20585;
    ``tests/test_distribution.py`` checks it on every run of the tests)."""
    import tensorflow as tf

    version = tuple(int(part) for part in keras.__version__.split(".")[:2])
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if (
        multi_worker
        and strategy.extended._in_multi_worker_mode()
        and version <= (3, 15)
    ):
        raise StrategyError(
            f"Keras {keras.__version__} cannot train one model across several "
            "machines: Model.fit fails under MultiWorkerMirroredStrategy "
            "(https://github.com/keras-team/keras/issues/20585). Train on one "
            "machine (all its GPUs: --strategy mirrored), or use a newer Keras "
            "once that issue is fixed."
        )


def callbacks(model, run_dir, recipe=ORIGINAL, *, tensorboard=True):
    """The recipe's callbacks, writing into ``run_dir``.

    - :class:`AtomicBackupAndRestore` (``run_dir/backup``): a run interrupted by a
      crash, a kill or a disconnected Colab session resumes from its last finished
      epoch;
    - :class:`AtomicCheckpoint` (``run_dir/best.keras``): the model with the best
      validation loss so far, across resumes;
    - :class:`ResumableEarlyStopping` (when the recipe has a ``patience``): stop
      after ``patience`` epochs without a better validation loss and restore the
      best weights; after a resume it carries on counting from the epochs before;
    - the recipe's ``schedule_callbacks``: the learning rate (logged as
      ``learning_rate``) and, when the model has DropBlock layers,
      :class:`~cifar_helpers.dropblock.KeepProbSchedule` (logged as ``keep_prob``);
    - ``TensorBoard`` (``run_dir/logs``), ``CSVLogger`` (``run_dir/history.csv``,
      appended to when resuming, rewritten by a new run), :class:`StopOnNaN` and
      :class:`EpochTimer`.

    At the end of an epoch the best checkpoint and the CSV row are written before
    the backup commits the epoch; a resume drops log rows of epochs the backup did
    not commit, so a run killed at any moment loses at most the epoch in progress.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.remove_partials(run_dir)  # left by a process killed mid-write
    backup = committed_backup(run_dir)
    resuming = backup is not None
    if resuming:
        _trim_history(run_dir / "history.csv", backup["epoch"])
    # The backup brings back the weights and the epoch, not the other callbacks'
    # state: give the checkpoint and early stopping the scores of the epochs before.
    logged = (
        read_history(run_dir / "history.csv").get(recipe.monitor, [])
        if resuming
        else []
    )
    best_so_far = min((value for value in logged if value == value), default=None)
    # The callbacks that add to an epoch's logs come first, so that the CSV log,
    # the checkpoints and TensorBoard see their values; the backup comes last.
    chosen = [EpochTimer(), *recipe.schedule_callbacks(model)]
    chosen += [
        AtomicCheckpoint(
            str(run_dir / "best.keras"),
            monitor=recipe.monitor,
            save_best_only=True,
            initial_value_threshold=best_so_far,
        ),
    ]
    if recipe.patience:
        chosen.append(
            ResumableEarlyStopping(
                logged,
                run_dir / "best.keras",
                monitor=recipe.monitor,
                patience=recipe.patience,
                restore_best_weights=True,
            )
        )
    chosen += [
        # Append to the log only when resuming an interrupted run.
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resuming),
        StopOnNaN(run_dir),
    ]
    if tensorboard:
        chosen.append(keras.callbacks.TensorBoard(str(run_dir / "logs")))
    chosen.append(AtomicBackupAndRestore(str(run_dir / "backup")))
    return chosen


def fit(
    model,
    train_ds,
    val_ds,
    run_dir,
    recipe=ORIGINAL,
    *,
    epochs=None,
    verbose="auto",
    tensorboard=True,
    extra_callbacks=(),
):
    """Train a compiled ``model`` with the recipe's callbacks; returns the History.

    ``train_ds``/``val_ds`` yield ``(uint8 images, labels)`` batches (see
    :func:`cifar_helpers.data.make_dataset`). ``epochs`` overrides the recipe's
    (smoke runs); ``extra_callbacks`` run after the recipe's. Calling it again with
    the same ``run_dir`` after an interruption resumes where the run stopped; in a
    new process, a run made reproducible (:func:`make_reproducible`) resumes bit
    for bit, as the training dataset is fast-forwarded to the epoch it resumes.
    """
    _check_keras_can_train_under(model.distribute_strategy)
    if epochs not in (None, recipe.epochs) and isinstance(recipe, ModernRecipe):
        raise ValueError(
            f"epochs={epochs}, but the recipe's one-cycle schedule spans "
            f"{recipe.epochs} epochs: set the recipe's instead, with "
            f"dataclasses.replace(recipe, epochs={epochs}), and compile again."
        )
    backup = committed_backup(run_dir)
    if backup is not None and hasattr(train_ds, "cardinality"):
        _fast_forward(train_ds, backup["epoch"])
    return model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=recipe.epochs if epochs is None else epochs,
        callbacks=[
            *callbacks(model, run_dir, recipe, tensorboard=tensorboard),
            *extra_callbacks,
        ],
        shuffle=False,  # the dataset shuffles itself
        verbose=verbose,
    )


# ---------------------------------------------------------------- precision


def precision_for(device_type: str, compute_capability=None) -> str:
    """The mixed-precision policy that suits one kind of device.

    - ``"TPU"``: ``mixed_bfloat16`` (TPU matrix units work in bfloat16);
    - ``"GPU"`` with compute capability 8.0 or more (A100, L4, H100, RTX 30/40):
      ``mixed_bfloat16``, as fast as float16 on their tensor cores and with
      float32's range, so no loss scaling is needed;
    - ``"GPU"`` with compute capability 7.x (V100, T4, RTX 20): ``mixed_float16``
      (their tensor cores have no bfloat16; Keras scales the loss so small
      gradients survive);
    - older GPUs and CPUs: ``float32`` (16-bit arithmetic gains nothing there).

    ``compute_capability`` is ``(major, minor)``, as
    ``tf.config.experimental.get_device_details`` reports it.
    """
    kind = device_type.upper()
    if kind == "TPU":
        return "mixed_bfloat16"
    if kind == "GPU" and compute_capability is not None:
        major = compute_capability[0]
        if major >= 8:
            return "mixed_bfloat16"
        if major == 7:
            return "mixed_float16"
    return "float32"


def choose_precision() -> str:
    """The policy for this machine's accelerators (see :func:`precision_for`); with
    several GPUs, the one that suits them all (the first GPU decides)."""
    import tensorflow as tf

    if tf.config.list_logical_devices("TPU"):
        return precision_for("TPU")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return precision_for("GPU", details.get("compute_capability"))
    return precision_for("CPU")


def use_precision(policy: str = "auto") -> str:
    """Set Keras' global dtype policy (``"auto"``: :func:`choose_precision`) and
    return it. Call it before building the model: layers take the policy that is
    current when they are created. The models keep their logits and softmax in
    float32 under any policy."""
    policy = choose_precision() if policy == "auto" else policy
    keras.mixed_precision.set_global_policy(policy)
    return policy


# ---------------------------------------------------------------- distribution

STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")


class StrategyError(ValueError):
    """A distribution strategy that cannot be used here; the message says why."""


def strategy_kind(*, tpu: bool, gpus: int, tf_config: str | None) -> str:
    """What ``choose_strategy("auto")`` picks: ``"tpu"`` when a TPU is attached,
    ``"multiworker"`` when ``TF_CONFIG`` describes a cluster of several tasks,
    ``"mirrored"`` on several GPUs, ``"default"`` (one device) otherwise."""
    if tpu:
        return "tpu"
    if tf_config:
        try:
            cluster = json.loads(tf_config).get("cluster", {})
        except (ValueError, AttributeError) as error:
            raise StrategyError(
                f"TF_CONFIG is not valid JSON ({error}); it should look like "
                '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}.'
            ) from None
        if sum(len(tasks) for tasks in cluster.values()) > 1:
            return "multiworker"
    if gpus > 1:
        return "mirrored"
    return "default"


def _tpu_resolver():
    """A connected TPU cluster resolver, or None when no TPU is reachable."""
    import tensorflow as tf

    try:
        # TPU VMs (Colab's TPU runtime, Cloud TPU VMs) see their chips locally.
        tpu = "local" if tf.config.list_physical_devices("TPU") else None
        if tpu is None and not (
            os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME")
        ):
            return None
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return resolver
    except (ValueError, RuntimeError, tf.errors.OpError):
        return None


def choose_strategy(kind: str = "auto"):
    """The ``tf.distribute`` strategy to build, compile and train under.

    ``kind`` is one of :data:`STRATEGIES`; ``"auto"`` decides as
    :func:`strategy_kind` says. Create it at the start of a program, before other
    TensorFlow work (multi-worker training requires it), then build and compile
    the model inside ``strategy.scope()``; ``fit`` needs nothing more. Scale the
    recipe with ``recipe.for_replicas(strategy.num_replicas_in_sync)``.
    """
    import tensorflow as tf

    if kind not in STRATEGIES:
        raise StrategyError(f"strategy {kind!r}: use one of {', '.join(STRATEGIES)}.")
    resolver = _tpu_resolver() if kind in ("auto", "tpu") else None
    if kind == "tpu" and resolver is None:
        raise StrategyError(
            "strategy 'tpu': no TPU found. On Colab choose Runtime > Change runtime "
            "type > TPU; on Cloud, set TPU_NAME; or use --strategy auto."
        )
    if kind == "auto":
        kind = strategy_kind(
            tpu=resolver is not None,
            gpus=len(tf.config.list_physical_devices("GPU")),
            tf_config=os.environ.get("TF_CONFIG"),
        )
    if kind == "tpu":
        return tf.distribute.TPUStrategy(resolver)
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def for_strategy(recipe, strategy):
    """``recipe`` for training under ``strategy``: scaled for its replicas (see
    ``recipe.for_replicas``) and, under ``MirroredStrategy`` and
    ``MultiWorkerMirroredStrategy``, without XLA and with one step per execution.

    Keras 3.15 cannot run those two strategies' steps with either: XLA compiles the
    step across devices and fails on variables held by another replica
    (keras-team/keras#19005), and several steps per execution fail with
    "You must feed a value for placeholder tensor" (keras-team/keras#19246). Both
    failures were reproduced with Keras 3.15 and TensorFlow 2.21 on two logical
    CPU devices (the setting of ``tests/test_distribution.py``).
    ``TPUStrategy`` compiles with XLA anyway and keeps both.
    """
    import tensorflow as tf

    scaled = recipe.for_replicas(strategy.num_replicas_in_sync)
    mirrored = (
        tf.distribute.MirroredStrategy,
        tf.distribute.MultiWorkerMirroredStrategy,
    )
    if isinstance(strategy, mirrored):
        scaled = dataclasses.replace(scaled, jit_compile=False, steps_per_execution=1)
    return scaled


def is_chief(strategy) -> bool:
    """Whether this process writes a run's files: always, except on the non-chief
    workers of a multi-worker cluster (worker 0 is the chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief
