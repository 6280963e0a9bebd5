"""Exact resume: a run killed at any moment carries on from its last finished epoch,
and a seeded run ends bit for bit as one that was never interrupted.

Every piece of the resume machinery of :func:`cifar_helpers.training.fit` lives
here, and it is the part of the package that leans hardest on Keras' internals
(the others: ``dropblock.dropblock_layers`` and ``models.macs_per_image`` walk
``Model._flatten_layers``; ``devices.check_fit_supported`` asks a strategy whether
it spans several workers):

- :class:`AtomicCheckpoint`: ``ModelCheckpoint`` writing under a partial name;
- :class:`AtomicBackupAndRestore`: ``BackupAndRestore`` committing an epoch in one
  step, with the random generators' states (:func:`random_states`);
- :class:`ResumableEarlyStopping`: ``EarlyStopping`` that carries on counting;
- :func:`prepare`: what a start or a resume checks and cleans up first (a damaged
  or inconsistent folder is refused with :class:`DamagedRunError`; partial files
  and log rows of uncommitted epochs are deleted);
- :class:`RecordTrainingEnd` and :func:`training_ended`: the explicit record,
  ``trained.json``, that training ended (never inferred from which files exist);
- :func:`fast_forward`: the training dataset's shuffles replayed.

Checked against Keras 3.10 (TensorFlow 2.16, ``constraints-lowest.txt``) and Keras
3.15 (TensorFlow 2.21, ``constraints.txt``): CI runs the tests on both. Older Keras
releases resume silently wrong, so importing this module refuses them
(:func:`cifar_helpers.stack.require_supported`).
The private names it touches, each a place to look when Keras changes:
``ModelCheckpoint._save_model``; ``BackupAndRestore._save_model``,
``_load_model``, ``_current_epoch``, ``_last_batch_seen``,
``_training_metadata_path``; ``Model._initial_epoch`` (the epoch ``fit`` starts
from); ``EarlyStopping._set_monitor_op`` and ``_is_improvement``; and how many
times ``fit`` starts iterating a dataset per epoch
(``keras/src/trainers/epoch_iterator.py``, see :func:`iterations_started`).
``tests/test_resume.py`` checks the pieces (a Keras that starts its iterations
differently fails there by name), and ``tests/test_faults.py`` kills real runs to
check the whole.
"""

import json
import warnings
from pathlib import Path

import keras

from cifar_helpers import atomic, stack

stack.require_supported()  # older Keras restores no weights and replays other shuffles

TRAINED = "trained.json"  # written when training ends, before the backup goes
FINISHED = "finished.json"  # written last by cifar_helpers.runs.train
LAST_MODEL = "last.keras"  # the last epoch's model, for recipes that keep it


class DamagedRunError(ValueError):
    """A run folder whose files are damaged or disagree with each other; the
    message names the file, says what is wrong, and what can still be done."""


ANOTHER_FOLDER = "Train into another --out folder (this one is left as it is)."


def _start_again(run_dir) -> str:
    return f"{ANOTHER_FOLDER[:-1]}, or delete {run_dir} to start again there."


def read_json(path: Path, what: str, fix: str):
    """The JSON object (a dict) at ``path``, or None when there is no file; a
    truncated or unreadable one, or one that is not an object, raises
    :class:`DamagedRunError` saying ``what`` it should hold and ``fix``."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DamagedRunError(
            f"{path}: cannot be read ({type(error).__name__}: {error}); it should "
            f"hold {what}. {fix}"
        ) from None
    if not isinstance(record, dict):
        raise DamagedRunError(
            f"{path}: holds {json.dumps(record)[:40]}, not a JSON object; it should "
            f"hold {what}. {fix}"
        )
    return record


def committed_backup(run_dir) -> dict | None:
    """The backup an interrupted run in ``run_dir`` resumes from: ``{"epoch": epochs
    finished, "weights": file name, ...}``, or None when there is none. A record
    that is damaged, or names a weights file that is missing, raises
    :class:`DamagedRunError`."""
    return backup_record(Path(run_dir) / "backup")


def backup_record(backup_dir) -> dict | None:
    """:func:`committed_backup`, given the backup folder itself."""
    path = Path(backup_dir) / "training_metadata.json"
    run_dir = path.parent.parent
    record = read_json(path, "the epoch the backup committed", _start_again(run_dir))
    if record is None:
        return None
    epoch, weights = record.get("epoch"), record.get("weights")
    states = record.get("random_states")
    if (
        type(epoch) is not int
        or epoch < 0
        or not isinstance(weights, str)
        or Path(weights).name != weights  # a file of the backup folder, no path
        or not isinstance(states, list)
    ):
        raise DamagedRunError(
            f"{path}: not a backup record (an epoch, the name of a weights file in "
            "the backup folder and the random generators' states). "
            + _start_again(run_dir)
        )
    if not (path.parent / weights).is_file():
        raise DamagedRunError(
            f"{path}: commits epoch {epoch}, but its weights file {weights} is "
            f"missing, so the run cannot resume. " + _start_again(run_dir)
        )
    return record


def drop_backup(run_dir):
    """Delete the backup of a run whose training ended (``BackupAndRestore`` does
    it as ``fit`` ends; a process killed at that moment leaves it behind)."""
    import shutil

    shutil.rmtree(Path(run_dir) / "backup", ignore_errors=True)


def training_ended(run_dir) -> dict | None:
    """The record :class:`RecordTrainingEnd` wrote when training in ``run_dir``
    ended (``{"epochs_run": N, "epochs": asked}``), or None: training has not
    ended there (it never started, or was interrupted)."""
    record = read_json(
        Path(run_dir) / TRAINED,
        "the record that training ended",
        "Delete it, and the same command resumes the run from its backup (or, "
        "with none, starts it again).",
    )
    if record is not None and not all(
        type(record.get(key)) is int for key in ("epochs_run", "epochs")
    ):
        raise DamagedRunError(
            f"{Path(run_dir) / TRAINED}: not a record of training's end (the "
            "epochs run and asked for). Delete it, and the same command resumes the "
            "run from its backup (or, with none, starts it again)."
        )
    return record


def logged_epochs(path: Path) -> int:
    """How many whole rows a CSV history holds (0 when there is none)."""
    if not path.is_file():
        return 0
    lines = path.read_text(errors="replace").splitlines(keepends=True)
    return sum(1 for line in lines[1:] if line.endswith("\n"))


def prepare(run_dir, epochs: int | None = None) -> dict | None:
    """Make ``run_dir`` ready for a run of ``epochs`` epochs to start or resume;
    return its :func:`committed_backup` (None: the run starts from epoch 0).

    Refuses, with :class:`DamagedRunError`, a folder whose backup is damaged, names
    an epoch ``history.csv`` does not log, or more epochs than asked. Deletes the
    partial files a killed process left; when resuming, the log rows of epochs the
    backup did not commit (see :func:`trim_history`).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for folder in (run_dir, run_dir / "backup"):  # where partial files are written
        atomic.remove_partials(folder)
    backup = committed_backup(run_dir)
    history = run_dir / "history.csv"
    if backup is None:
        return None
    logged = logged_epochs(history)
    if backup["epoch"] > logged:
        raise DamagedRunError(
            f"{run_dir}: the backup commits {backup['epoch']} epoch(s), but "
            f"{history.name} logs {logged}: the files disagree (one was replaced or "
            "cut short). " + _start_again(run_dir)
        )
    if epochs is not None and backup["epoch"] > epochs:
        raise DamagedRunError(
            f"{run_dir}: the backup commits {backup['epoch']} epoch(s), more than the "
            f"{epochs} this run asks for. Ask for at least {backup['epoch']} epochs "
            "to resume it; " + _start_again(run_dir)
        )
    trim_history(history, backup["epoch"])
    return backup


def trim_history(path: Path, epochs: int):
    """Keep the rows of the first ``epochs`` epochs of a CSV history: a crash after
    a row was logged but before its epoch's backup was committed leaves a row that
    the resumed run logs again (and perhaps a half-written last line)."""
    if not path.is_file():
        return
    # A half-written last row may end inside a multi-byte character.
    lines = path.read_text(errors="replace").splitlines(keepends=True)
    kept = lines[: 1 + epochs]
    if len(kept) > 1 and not kept[-1].endswith("\n"):
        kept = kept[:-1]  # a half-written row
    if kept != lines:
        atomic.write_text(path, "".join(kept))


class RecordTrainingEnd(keras.callbacks.Callback):
    """Write ``trained.json`` when ``fit`` ends normally (all epochs run, or early
    stopping): the one record that a run's training ended. It runs before the
    backup's ``on_train_end`` deletes the backup, so a process killed between the
    two leaves a folder that is still read as ended. ``fit`` interrupted by an
    exception or a kill never writes it. A run that starts afresh (``resuming``
    False) first deletes the records of an earlier run's end in the folder
    (``trained.json``, and ``finished.json`` of :mod:`cifar_helpers.runs`)."""

    def __init__(self, run_dir, epochs: int, *, resuming: bool = False):
        super().__init__()
        self.run_dir, self.epochs, self.resuming = Path(run_dir), epochs, resuming

    def on_train_begin(self, logs=None):
        if not self.resuming:  # the records of an earlier run's end no longer hold
            for record in (FINISHED, TRAINED):
                (self.run_dir / record).unlink(missing_ok=True)

    def on_train_end(self, logs=None):
        # The log holds one row per epoch of the run, resumed sessions included.
        epochs_run = logged_epochs(self.run_dir / "history.csv")
        record = {"epochs_run": epochs_run, "epochs": self.epochs}
        atomic.write_text(self.run_dir / TRAINED, json.dumps(record))


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


def random_states(model) -> list:
    """The state of the model's random number generators (each random layer's
    Keras ``SeedGenerator``): ``model.variables`` less its weights and metric
    variables. ``save_weights`` leaves them out, so the backup stores them itself,
    and a resumed run draws the same DropBlock masks and augmentations as one that
    was never interrupted."""
    skip = {id(v) for v in [*model.weights, *model.metrics_variables]}
    return [v for v in model.variables if id(v) not in skip]


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
        backup = Path(self.backup_dir)
        record = backup_record(backup)
        if record is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        weights = backup / record["weights"]
        try:
            self.model.load_weights(weights)
        except Exception as error:  # h5py and Keras raise many kinds
            raise DamagedRunError(
                f"{weights}: the backup of epoch {record['epoch']} cannot be loaded "
                f"({type(error).__name__}: {error}); it is damaged or belongs to "
                "another model. " + _start_again(backup.parent)
            ) from None
        states, saved = random_states(self.model), record["random_states"]
        if len(saved) == len(states):
            try:
                for variable, value in zip(states, saved, strict=True):
                    variable.assign(value)
            except Exception as error:  # values of the wrong shape or type
                raise DamagedRunError(
                    f"{backup / 'training_metadata.json'}: its random generators' "
                    f"states do not fit this model ({type(error).__name__}). "
                    + _start_again(backup.parent)
                ) from None
        else:
            warnings.warn(
                f"{self.backup_dir}: the backup holds {len(saved)} random-generator "
                f"states and this model has {len(states)}; the run resumes, but draws "
                "new random numbers, so it will not repeat bit for bit.",
                stacklevel=2,
            )
        self.model._initial_epoch = record["epoch"]


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
            from cifar_helpers.inference import read_keras_model

            saved = read_keras_model(
                self.best_path, compile=False, fix=_start_again(self.best_path.parent)
            )
            self.best_weights = saved.get_weights()


def iterations_started(epochs: int, dataset) -> int:
    """How many times ``Model.fit`` (Keras 3.7 and later) has started iterating a
    training ``dataset`` before epoch ``epochs``: once per epoch, plus, for a dataset of
    known length, one more at each epoch's end that it drops unread (see
    ``keras/src/trainers/epoch_iterator.py``). Each start reshuffles."""
    known = int(dataset.cardinality()) >= 0
    return 2 * epochs if known else epochs


def fast_forward(dataset, epochs: int):
    """Start (and drop) as many iterations of ``dataset`` as ``fit`` had started
    before epoch ``epochs``, so that a resumed run's seeded shuffle and augmentation
    draws continue where the interrupted run's stopped. A start is cheap: it does
    not read the epoch's data."""
    for _ in range(iterations_started(epochs, dataset)):
        iter(dataset)
