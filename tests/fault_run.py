"""Run ``python -m cifar_helpers ARGS...`` and SIGKILL it at one chosen moment.

    python tests/fault_run.py FAULT ARGS...

FAULT is ``none`` or ``KIND@EPOCH``, the process killing itself (SIGKILL: no
cleanup, no ``finally``, as when a machine is preempted or a Colab session dies):

- ``mid-epoch@E``: after the third training step of epoch E;
- ``before-commit@E``: at the end of epoch E, after its best checkpoint and its
  log row are written, before the backup commits the epoch;
- ``after-epoch@E``: at the end of epoch E, once everything is written;
- ``term-after-epoch@E``: the same moment, with SIGTERM (what a stopping Colab
  session or a preempted cloud machine sends) instead of SIGKILL;
- ``in-backup@E``: halfway through writing epoch E's backup weights;
- ``in-best@E``: halfway through writing the best checkpoint, at epoch E or later;
- ``in-final@0``: halfway through writing ``model.keras`` after training;
- ``after-trained@0``: once training's end is recorded (``trained.json``), before
  the backup is deleted;
- ``before-finished@0``: once ``results.json`` is written, before
  ``finished.json``.

"Halfway" writes the file in full, cuts it to half its size, then kills: what a
process killed mid-write leaves behind. Used by ``tests/test_faults.py``.
"""

import os
import signal
import sys
from pathlib import Path

import keras

from cifar_helpers import atomic, cli, resume, training

KIND, _, EPOCH = sys.argv[1].partition("@")
EPOCH = int(EPOCH or 0)
state = {"epoch": -1}


def _die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _half_written(path):
    path = Path(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _die()


class _Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        state["epoch"] = epoch

    def on_train_batch_end(self, batch, logs=None):
        if KIND == "mid-epoch" and state["epoch"] == EPOCH and batch == 2:
            _die()


def _with_clock(original):
    def callbacks(*args, **kwargs):
        return [_Clock(), *original(*args, **kwargs)]

    return callbacks


def _at_epoch_end(original):
    def on_epoch_end(self, epoch, logs=None):
        if KIND == "before-commit" and epoch == EPOCH:
            _die()
        original(self, epoch, logs)
        if KIND == "after-epoch" and epoch == EPOCH:
            _die()
        if KIND == "term-after-epoch" and epoch == EPOCH:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGTERM)

    return on_epoch_end


def _after_trained(original):
    def on_train_end(self, logs=None):
        original(self, logs)
        if KIND == "after-trained":
            _die()

    return on_train_end


def _writing(original):
    def write_text(path, text):
        if KIND == "before-finished" and Path(path).name == resume.FINISHED:
            _die()
        original(path, text)

    return write_text


def _saving(original, kind, name_part):
    def save(self, filepath, *args, **kwargs):
        original(self, filepath, *args, **kwargs)
        if kind == KIND and name_part in str(filepath) and state["epoch"] >= EPOCH:
            _half_written(filepath)

    return save


training.callbacks = _with_clock(training.callbacks)
resume.RecordTrainingEnd.on_train_end = _after_trained(
    resume.RecordTrainingEnd.on_train_end
)
atomic.write_text = _writing(atomic.write_text)
backup = resume.AtomicBackupAndRestore
backup.on_epoch_end = _at_epoch_end(backup.on_epoch_end)
keras.Model.save_weights = _saving(keras.Model.save_weights, "in-backup", "backup")
keras.Model.save = _saving(keras.Model.save, "in-best", "best.partial")
keras.Model.save = _saving(keras.Model.save, "in-final", "model.partial")

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[2:]))
