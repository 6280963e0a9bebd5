"""Training a compiled model: the one ``fit`` that the notebooks and ``cifar-helpers
train`` share, and the callbacks it trains with.

The story of a run, in the order :func:`fit` tells it:

1. a model is built (:mod:`cifar_helpers.models`) and compiled with a recipe
   (:func:`cifar_helpers.recipes.compile_model`);
2. :func:`cifar_helpers.pipeline.split_datasets` turns the data into shuffled
   training batches and validation batches;
3. :func:`fit` trains with the recipe's :func:`callbacks`: the learning-rate and
   keep_prob schedules, the best checkpoint, early stopping, a CSV log and
   TensorBoard, :class:`StopOnNaN`, :class:`EpochTimer`, and a backup after every
   epoch, all written into one run folder;
4. after an interruption, the same call resumes from the last finished epoch
   (:mod:`cifar_helpers.resume` holds that machinery);
5. when training ends, a record says so (``trained.json``): :func:`run_finished`
   reads it, and tells a finished run from an interrupted one; :func:`read_history`
   reads the log back for the curves.

Introduced in notebook 02.
"""

import json
import math
import time
from pathlib import Path

import keras

from cifar_helpers import atomic, devices, lock, recipes, resume
from cifar_helpers._moved import moved

LAST_MODEL = resume.LAST_MODEL


def fit(
    model,
    train_ds,
    val_ds,
    run_dir,
    recipe=recipes.ORIGINAL,
    *,
    verbose="auto",
    tensorboard=True,
    extra_callbacks=(),
):
    """Train a compiled ``model`` for ``recipe.epochs`` epochs with the recipe's
    :func:`callbacks`; returns the History.

    ``train_ds``/``val_ds`` yield ``(uint8 images, labels)`` batches (see
    :func:`cifar_helpers.pipeline.split_datasets`). For a shorter run, change the recipe
    (``dataclasses.replace(recipe, epochs=3)``) before compiling, so that its
    schedules span the run. ``extra_callbacks`` run after the recipe's, the backup
    included: what they add to an epoch's logs reaches neither the CSV log nor the
    checkpoints. Calling it
    again with the same ``run_dir`` after an interruption resumes where the run
    stopped; in a new process, a run made reproducible (:func:`make_reproducible`)
    resumes bit for bit, as the training dataset is fast-forwarded to the epoch it
    resumes. Calling it on a folder whose training ended starts a new run there.

    Across several workers (``MultiWorkerMirroredStrategy``) Keras' ``fit`` fails
    (keras-team/keras#20585) and this refuses: :func:`cifar_helpers.loop.fit` takes
    the same arguments and trains there.

    While it trains, ``run_dir`` is locked (:func:`cifar_helpers.lock.holding`):
    another process that trains into it is refused. A damaged or inconsistent
    folder raises :class:`cifar_helpers.resume.DamagedRunError` before training.
    """
    devices.check_fit_supported(model.distribute_strategy)
    with lock.holding(run_dir):
        chosen = callbacks(model, run_dir, recipe, tensorboard=tensorboard)
        backup = resume.committed_backup(run_dir)
        if backup is not None and hasattr(train_ds, "cardinality"):
            resume.fast_forward(train_ds, backup["epoch"])
        return model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=recipe.epochs,
            callbacks=[*chosen, *extra_callbacks],
            shuffle=False,  # the dataset shuffles itself
            verbose=verbose,
        )


def callbacks(model, run_dir, recipe=recipes.ORIGINAL, *, tensorboard=True):
    """The recipe's callbacks, writing into ``run_dir``.

    - :class:`~cifar_helpers.resume.AtomicBackupAndRestore` (``run_dir/backup``):
      a run interrupted by a crash, a kill or a disconnected Colab session resumes
      from its last finished epoch;
    - :class:`~cifar_helpers.resume.AtomicCheckpoint` (``run_dir/best.keras``): the
      model with the best validation loss so far, across resumes;
    - :class:`~cifar_helpers.resume.ResumableEarlyStopping` (when the recipe has a
      ``patience``): stop after ``patience`` epochs without a better validation
      loss and restore the best weights; after a resume it carries on counting;
    - :class:`ConsecutiveRiseStopping` (when the recipe has ``rises``): the
      original's rule, stop once the loss rose in each of the last ``rises``
      epochs; and, when the recipe keeps the last model (``keep="last"``), a
      checkpoint of every epoch (``run_dir/last.keras``);
    - the recipe's ``schedule_callbacks``: the learning rate (logged as
      ``learning_rate``) and, when the model has DropBlock layers,
      :class:`~cifar_helpers.dropblock.KeepProbSchedule` (logged as ``keep_prob``);
    - ``TensorBoard`` (``run_dir/logs``), ``CSVLogger`` (``run_dir/history.csv``,
      appended to when resuming, rewritten by a new run), :class:`StopOnNaN` and
      :class:`EpochTimer`.

    At the end of an epoch the best checkpoint and the CSV row are written before
    the backup commits the epoch; a resume drops log rows of epochs the backup did
    not commit, so a run killed at any moment loses at most the epoch in progress.
    When training ends, :class:`~cifar_helpers.resume.RecordTrainingEnd` records it
    (``trained.json``) before the backup is deleted.
    """
    run_dir = Path(run_dir)
    resuming = resume.prepare(run_dir, recipe.epochs) is not None
    # The backup brings back the weights and the epoch, not the other callbacks'
    # state: give the checkpoint and early stopping the scores of the epochs before.
    logged = (
        read_history(run_dir / "history.csv").get(recipe.monitor, [])
        if resuming
        else []
    )
    # The callbacks that add to an epoch's logs come first, so that the CSV log,
    # the checkpoints and TensorBoard see their values; the backup comes last.
    chosen = [EpochTimer(), *recipe.schedule_callbacks(model)]
    chosen.append(
        resume.AtomicCheckpoint(
            str(run_dir / "best.keras"),
            monitor=recipe.monitor,
            save_best_only=True,
            initial_value_threshold=min(
                (value for value in logged if not math.isnan(value)), default=None
            ),
        )
    )
    if recipe.keep == "last":
        chosen.append(resume.AtomicCheckpoint(str(run_dir / LAST_MODEL)))
    if recipe.patience:
        chosen.append(
            resume.ResumableEarlyStopping(
                logged,
                run_dir / "best.keras",
                monitor=recipe.monitor,
                patience=recipe.patience,
                restore_best_weights=True,
            )
        )
    if recipe.rises:
        chosen.append(ConsecutiveRiseStopping(recipe.monitor, recipe.rises, logged))
    chosen += [
        # Append to the log only when resuming an interrupted run.
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resuming),
        StopOnNaN(run_dir),
    ]
    if tensorboard:
        chosen.append(keras.callbacks.TensorBoard(str(run_dir / "logs")))
    chosen.append(resume.RecordTrainingEnd(run_dir, recipe.epochs, resuming=resuming))
    chosen.append(resume.AtomicBackupAndRestore(str(run_dir / "backup")))
    return chosen


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
            backup = resume.committed_backup(self.run_dir)
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


def rose_in_each_of_last(values, rises: int) -> bool:
    """Whether the last value of ``values`` ends ``rises`` rises in a row: each of
    the last ``rises`` values is not at or below the one before it. This is the
    original series' early-stopping test (``TrainResNet.py``), which runs after
    every epoch on the test losses so far; as there, a NaN counts as a rise, and
    it needs ``rises + 1`` values."""
    values = list(values)
    if len(values) <= rises:
        return False
    last = values[-(rises + 1) :]
    return all(not (now <= before) for before, now in zip(last, last[1:], strict=False))


class ConsecutiveRiseStopping(keras.callbacks.Callback):
    """Stop training at the end of the epoch where ``monitor`` has risen in each of
    the last ``rises`` epochs (:func:`rose_in_each_of_last`): the original series'
    early stopping, which kept training through any epoch that improved on the one
    before, however far from the best. Keras' ``EarlyStopping`` counts epochs
    since the best value instead. The model is left as the last epoch made it, as
    the original saved it.

    ``logged`` holds the monitored values of the epochs before a resume, so a
    resumed run stops where an uninterrupted one would. The epoch it stopped at (0
    based) is ``stopped_epoch``; None while it has not stopped.
    """

    def __init__(self, monitor: str = "val_loss", rises: int = 10, logged=()):
        super().__init__()
        if not isinstance(rises, int) or isinstance(rises, bool) or rises < 1:
            raise ValueError(f"rises={rises!r}: use a whole number of at least 1.")
        self.monitor, self.rises, self.logged = monitor, rises, list(logged)
        self.values, self.stopped_epoch = list(self.logged), None

    def on_train_begin(self, logs=None):
        self.values, self.stopped_epoch = list(self.logged), None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(
                f"ConsecutiveRiseStopping: the epoch's logs have no {self.monitor!r} "
                f"(they have {', '.join(sorted(logs or {}))}); monitor one of them."
            )
        self.values.append(float(value))
        if rose_in_each_of_last(self.values, self.rises):
            self.model.stop_training = True
            self.stopped_epoch = epoch


class EpochTimer(keras.callbacks.Callback):
    """Log each epoch's wall time (training and validation) as ``epoch_seconds``."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


def run_finished(run_dir) -> bool:
    """Whether :func:`fit` finished in ``run_dir``: the record that training ended
    (``trained.json``, see :func:`cifar_helpers.resume.training_ended`) is there,
    with ``best.keras``. An interrupted run has no such record, whichever files it
    left, and :func:`fit` resumes it. Introduced in notebook 06, which evaluates
    only finished runs."""
    run_dir = Path(run_dir)
    return (
        resume.training_ended(run_dir) is not None
        and (run_dir / "best.keras").is_file()
    )


def read_history(path) -> dict:
    """A run's ``history.csv`` as ``{metric: [value per epoch]}``, resumed parts
    included; ``{}`` when there is none yet. Missing values (``NA``) become NaN;
    a row that is not numbers raises
    :class:`~cifar_helpers.resume.DamagedRunError` naming the file and the row."""
    import csv

    path = Path(path)
    if not path.is_file():
        return {}
    with open(path, newline="", errors="replace") as handle:
        rows = list(csv.DictReader(handle))
    history = {key: [] for key in (rows[0] if rows else {}) if key != "epoch"}
    for number, row in enumerate(rows, 2):
        for key, values in history.items():
            text = row.get(key)
            try:
                values.append(float("nan") if text in ("", "NA") else float(text))
            except (TypeError, ValueError):
                raise resume.DamagedRunError(
                    f"{path}, line {number}: {key} is {text!r}, not a number: the "
                    "log is damaged. Mend that line, or train into another --out "
                    "folder (this one is left as it is)."
                ) from None
    return history


def make_reproducible(seed: int):
    """Seed Python's, NumPy's, TensorFlow's and Keras' random numbers with ``seed``
    and make TensorFlow's operations deterministic, so that a run repeats bit for
    bit on the same hardware and software. Call it once, before building the
    model; determinism cannot be turned off again in the process, and it can slow
    some GPU operations."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


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
    training it, or a copy. Introduced in notebook 07.
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
        model.fit(data, steps_per_epoch=per_call, epochs=1, shuffle=False, verbose=0)
    timer = _TrainTimer()
    model.fit(
        data,
        steps_per_epoch=steps,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[timer],
    )
    return batch_size * steps / timer.seconds


def record_result(
    run,
    notebook: str,
    *,
    model: str,
    epochs: int,
    val_accuracy,
    test_accuracy,
    note=None,
) -> Path:
    """Write a notebook's headline numbers (the model, the precision policy it
    trained in, epochs run, validation and test accuracy as fractions) to
    ``run.result_file(notebook)`` (``run`` is the notebook's
    :class:`cifar_helpers.config.RunConfig`: ``runs/results/02.json``, or
    ``runs/results_smoke/...`` in a smoke run), for the results table of ``make
    series`` (``tools/series.py``), which reads them after it runs the notebook.
    Written atomically; a later run of the notebook replaces it."""
    record = {
        "notebook": notebook,
        "model": model,
        "precision": keras.mixed_precision.global_policy().name,
        "epochs": int(epochs),
        "val_accuracy": None if val_accuracy is None else float(val_accuracy),
        "test_accuracy": None if test_accuracy is None else float(test_accuracy),
    }
    if note:
        record["note"] = note
    path = Path(run.result_file(notebook))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(record, indent=2) + "\n")
    return path


# Names that lived here before cifar_helpers 0.2.
__getattr__ = moved(
    __name__,
    {
        "recipes": [
            "ORIGINAL",
            "MODERN",
            "ModernRecipe",
            "OneCycle",
            "SmoothedSparseCrossentropy",
            "LearningRateLogger",
            "compile_model",
        ],
        "resume": [
            "AtomicCheckpoint",
            "AtomicBackupAndRestore",
            "ResumableEarlyStopping",
            "random_states",
            "committed_backup",
        ],
        "devices": [
            "precision_for",
            "choose_precision",
            "use_precision",
            "STRATEGIES",
            "StrategyError",
            "strategy_kind",
            "choose_strategy",
            "for_strategy",
            "is_chief",
        ],
        "pipeline": ["split_datasets", "eval_batch_size"],
    },
    renamed={"Recipe": ("recipes", "OriginalRecipe")},
)
