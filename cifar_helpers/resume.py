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
- :func:`prepare`: what a resume cleans up first (partial files, log rows of
  uncommitted epochs);
- :func:`fast_forward`: the training dataset's shuffles replayed.

Checked against Keras 3.15 (TensorFlow 2.21), the versions in ``constraints.txt``.
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

from cifar_helpers import atomic


def committed_backup(run_dir) -> dict | None:
    """The backup an interrupted run in ``run_dir`` resumes from: ``{"epoch": epochs
    finished, "weights": file name, ...}``, or None when there is none."""
    return _record(Path(run_dir) / "backup" / "training_metadata.json")


def _record(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def prepare(run_dir) -> dict | None:
    """Make ``run_dir`` ready for a run to start or resume; return its
    :func:`committed_backup`. Deletes the partial files a killed process left and,
    when resuming, the log rows of epochs the backup did not commit (see
    :func:`trim_history`)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.remove_partials(run_dir)
    backup = committed_backup(run_dir)
    if backup is not None:
        trim_history(run_dir / "history.csv", backup["epoch"])
    return backup


def trim_history(path: Path, epochs: int):
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
        record = _record(Path(self._training_metadata_path))
        if record is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(Path(self.backup_dir) / record["weights"])
        states, saved = random_states(self.model), record["random_states"]
        if len(saved) == len(states):
            for variable, value in zip(states, saved, strict=True):
                variable.assign(value)
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
            saved = keras.saving.load_model(self.best_path, compile=False)
            self.best_weights = saved.get_weights()


def iterations_started(epochs: int, dataset) -> int:
    """How many times ``Model.fit`` (Keras 3.15) has started iterating a training
    ``dataset`` before epoch ``epochs``: once per epoch, plus, for a dataset of
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
