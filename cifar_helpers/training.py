"""The original series' training recipe, its callbacks, and the one ``fit`` that the
notebooks and ``python -m cifar_helpers train`` share.

The recipe is the original part-7 one (Adam 5e-4, learning rate x0.98 an epoch,
gradients clipped to a global norm of 100, batch 250, up to 75 epochs, DropBlock's
keep_prob lowered by 0.005 an epoch to 0.8, early stopping with patience 10) with
one deliberate fix: early stopping and the choice of the best model watch the
validation split, never the test set as the original did. Introduced in
notebook 02.
"""

import dataclasses
import time
from pathlib import Path

import keras

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


ORIGINAL = Recipe()


class EpochTimer(keras.callbacks.Callback):
    """Log each epoch's wall time (training and validation) as ``epoch_seconds``."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


def compile_model(model, recipe: Recipe = ORIGINAL):
    """Compile ``model`` (probabilities out) with the recipe's optimizer and loss.

    Metrics: top-1 ``accuracy`` and ``top5`` accuracy.
    """
    model.compile(
        optimizer=keras.optimizers.Adam(
            recipe.learning_rate, global_clipnorm=recipe.clip_global_norm
        ),
        loss="sparse_categorical_crossentropy",
        metrics=[
            "accuracy",
            keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5"),
        ],
    )
    return model


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


def _best_logged(path: Path, monitor: str):
    """The lowest ``monitor`` value logged in a CSV history, or None."""
    values = read_history(path).get(monitor, [])
    return min((value for value in values if value == value), default=None)


def callbacks(model, run_dir, recipe: Recipe = ORIGINAL, *, tensorboard=True):
    """The recipe's callbacks, writing into ``run_dir``.

    - ``BackupAndRestore`` (``run_dir/backup``): a run interrupted by a crash or a
      disconnected Colab session resumes from its last finished epoch;
    - ``ModelCheckpoint`` (``run_dir/best.keras``): the model with the best
      validation loss so far, across resumes;
    - ``EarlyStopping``: stop after ``patience`` epochs without a better validation
      loss and restore the best weights of this session (after a resume its
      patience counts from the resume; ``best.keras`` holds the best overall);
    - ``LearningRateScheduler``: learning rate x ``decay_per_epoch`` an epoch (logged
      as ``learning_rate``);
    - :class:`~cifar_helpers.dropblock.KeepProbSchedule`, when the model has
      DropBlock layers (logged as ``keep_prob``);
    - ``TensorBoard`` (``run_dir/logs``), ``CSVLogger`` (``run_dir/history.csv``,
      appended to when resuming, rewritten by a new run), ``TerminateOnNaN`` and
      :class:`EpochTimer`.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resuming = (run_dir / "backup").exists()
    # BackupAndRestore brings back the weights and the epoch, not the other
    # callbacks' state: give the checkpoint the best score of the epochs before.
    best_so_far = (
        _best_logged(run_dir / "history.csv", recipe.monitor) if resuming else None
    )
    # The callbacks that add to an epoch's logs come first, so that the CSV log,
    # the checkpoints and TensorBoard see their values.
    chosen = [
        EpochTimer(),
        keras.callbacks.LearningRateScheduler(recipe.learning_rate_at),
    ]
    if dropblock_layers(model):
        chosen.append(
            KeepProbSchedule(recipe.keep_prob_final, duration=recipe.keep_prob_epochs)
        )
    chosen += [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "best.keras"),
            monitor=recipe.monitor,
            save_best_only=True,
            initial_value_threshold=best_so_far,
        ),
        keras.callbacks.EarlyStopping(
            monitor=recipe.monitor,
            patience=recipe.patience,
            restore_best_weights=True,
        ),
        # Append to the log only when resuming an interrupted run.
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resuming),
        keras.callbacks.TerminateOnNaN(),
    ]
    if tensorboard:
        chosen.append(keras.callbacks.TensorBoard(str(run_dir / "logs")))
    return chosen


def fit(
    model,
    train_ds,
    val_ds,
    run_dir,
    recipe: Recipe = ORIGINAL,
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
    the same ``run_dir`` after an interruption resumes where the run stopped.
    """
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
