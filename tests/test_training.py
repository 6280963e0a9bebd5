"""fit and its callbacks: their wiring, a run, a run interrupted and resumed, and a
run that diverges."""

import csv
import dataclasses

import keras
import numpy as np
import pytest

from cifar_helpers import data, models, pipeline, recipes, resume, training
from cifar_helpers.dropblock import KeepProbSchedule


def test_every_callback_is_wired_to_the_validation_split(tmp_path):
    model = models.original_resnet(widths=(4, 4, 4, 4), hidden=8)
    chosen = {type(c).__name__: c for c in training.callbacks(model, tmp_path)}
    assert set(chosen) == {
        "EpochTimer",
        "AtomicBackupAndRestore",
        "AtomicCheckpoint",
        "ResumableEarlyStopping",
        "LearningRateScheduler",
        "CSVLogger",
        "StopOnNaN",
        "KeepProbSchedule",
        "TensorBoard",
        "RecordTrainingEnd",
    }
    assert chosen["AtomicCheckpoint"].monitor == "val_loss"
    assert chosen["AtomicCheckpoint"].save_best_only
    stop = chosen["ResumableEarlyStopping"]
    assert (stop.monitor, stop.patience, stop.restore_best_weights) == (
        "val_loss",
        10,
        True,
    )
    assert chosen["KeepProbSchedule"].duration == 40
    # The backup commits an epoch only after its checkpoint and log row are written.
    names = [type(c).__name__ for c in training.callbacks(model, tmp_path)]
    assert names.index("AtomicBackupAndRestore") == len(names) - 1
    # The record that training ended is written before the backup is deleted.
    assert names.index("RecordTrainingEnd") == len(names) - 2


def test_a_model_without_dropblock_gets_no_keep_prob_schedule(tmp_path):
    model = models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8)
    chosen = training.callbacks(model, tmp_path, tensorboard=False)
    assert not any(isinstance(c, KeepProbSchedule) for c in chosen)


THREE_EPOCHS = dataclasses.replace(recipes.ORIGINAL, epochs=3)


def _datasets(cifar):
    split = data.with_validation_split(cifar, val_per_class=2, seed=0)
    train = pipeline.make_dataset(
        split.x_train, split.y_train, batch_size=100, training=True
    )
    val = pipeline.make_dataset(
        split.x_val, split.y_val, batch_size=100, training=False
    )
    return train, val


def _narrow_resnet():
    keras.utils.set_random_seed(0)
    return recipes.compile_model(models.original_resnet(widths=(4, 4, 8, 8), hidden=16))


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt  # as if the session died after epoch 1


def _fit_until_killed(cifar, run_dir, recipe):
    """Train the narrow network into ``run_dir`` until the session dies after its
    first epoch; return the datasets, to resume with."""
    train, val = _datasets(cifar)
    with pytest.raises(KeyboardInterrupt):
        training.fit(
            _narrow_resnet(),
            train,
            val,
            run_dir,
            recipe,
            verbose=0,
            extra_callbacks=[_Interrupt()],
        )
    return train, val


@pytest.fixture(scope="module")
def resumed_run(cifar, tmp_path_factory):
    """A 3-epoch run interrupted after its first epoch, then resumed: the run
    folder, whether it counted as finished when interrupted, and the resumed
    session's History."""
    run_dir = tmp_path_factory.mktemp("run")
    train, val = _fit_until_killed(cifar, run_dir, THREE_EPOCHS)
    interrupted = (
        (run_dir / "best.keras").is_file(),
        training.run_finished(run_dir),
        resume.committed_backup(run_dir),
    )
    resumed = training.fit(
        _narrow_resnet(), train, val, run_dir, THREE_EPOCHS, verbose=0
    )
    return run_dir, interrupted, resumed


def test_fit_runs_the_recipe_and_writes_the_run_folder(resumed_run):
    run_dir, _, _ = resumed_run
    logged = training.read_history(run_dir / "history.csv")
    assert logged["learning_rate"] == pytest.approx([5e-4 * 0.98**e for e in range(3)])
    assert logged["keep_prob"] == pytest.approx([1.0, 0.995, 0.99])
    assert {"val_loss", "val_accuracy", "val_top5"} <= set(logged)
    assert all(seconds > 0 for seconds in logged["epoch_seconds"])
    assert np.all(np.isfinite(logged["loss"]))
    assert (run_dir / "best.keras").is_file() and training.run_finished(run_dir)
    assert [row["epoch"] for row in _rows(run_dir / "history.csv")] == ["0", "1", "2"]
    assert any((run_dir / "logs").iterdir())


def test_a_resumed_run_continues_from_its_last_finished_epoch(resumed_run):
    _, (had_checkpoint, was_finished, _), resumed = resumed_run
    # Epoch 0's checkpoint existed, but the backup said the run was not finished.
    assert had_checkpoint and not was_finished
    assert resumed.history["learning_rate"] == pytest.approx(
        [5e-4 * 0.98, 5e-4 * 0.98**2]
    )
    assert resumed.history["keep_prob"] == pytest.approx([0.995, 0.99])


def test_the_backup_holds_the_random_generators_states(resumed_run):
    # Keras' save_weights leaves out the SeedGenerator states; the backup keeps
    # them, so that a resumed run draws the same augmentations and masks.
    _, (_, _, backup), _ = resumed_run
    model = _narrow_resnet()  # augmentation, four DropBlock and two dropout layers
    fresh = [v.numpy().tolist() for v in resume.random_states(model)]
    assert len(fresh) == 7 and len(backup["random_states"]) == 7
    advanced = zip(backup["random_states"], fresh, strict=True)
    assert all(saved != start for saved, start in advanced)


class _WeightsAtStart(keras.callbacks.Callback):
    """Keeps the state (model and optimizer) ``fit`` starts its first epoch with,
    after the backup's restore, then stops the session. The schedules set
    ``keep_prob`` and the learning rate for the new epoch just before, so those
    two are left out."""

    SCHEDULED = ("keep_prob", "learning_rate")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.state = _state(self.model)
        raise KeyboardInterrupt


def _state(model) -> list:
    """(name, value) of the model's weights and optimizer variables, in order (the
    order depends on the architecture only; paths also on what was built before)."""
    variables = [*model.weights, *model.optimizer.variables]
    return [
        (v.name, v.numpy())
        for v in variables
        if not any(name in v.path for name in _WeightsAtStart.SCHEDULED)
    ]


def test_a_resumed_run_starts_from_the_backups_weights(cifar, tmp_path):
    # Keras <= 3.6 never restored this backup (stack.KERAS_FIXES): a resume then
    # trained on from fresh weights with the backup's epoch number. Nothing but a
    # comparison with the backup itself notices that, so it is made here.
    train, val = _fit_until_killed(cifar, tmp_path, THREE_EPOCHS)
    record = resume.committed_backup(tmp_path)
    saved = _narrow_resnet()
    saved.optimizer.build(saved.trainable_variables)
    saved.load_weights(tmp_path / "backup" / record["weights"])
    keras.utils.set_random_seed(1)  # other initial weights than the backup's
    fresh = recipes.compile_model(
        models.original_resnet(widths=(4, 4, 8, 8), hidden=16)
    )
    fresh.optimizer.build(fresh.trainable_variables)
    initial = _state(fresh)
    start = _WeightsAtStart()
    with pytest.raises(KeyboardInterrupt):
        training.fit(
            fresh,
            train,
            val,
            tmp_path,
            THREE_EPOCHS,
            verbose=0,
            extra_callbacks=[start],
        )
    assert start.epoch == record["epoch"] == 1
    backup = _state(saved)
    assert [n for n, _ in start.state] == [n for n, _ in backup] and len(backup) > 50
    pairs = zip(initial, backup, strict=True)
    assert not all(np.array_equal(a, b) for (_, a), (_, b) in pairs)  # a real restore
    for (name, restored), (_, value) in zip(start.state, backup, strict=True):
        np.testing.assert_array_equal(restored, value, err_msg=name)


class _Poison(keras.callbacks.Callback):
    """Sets a kernel to NaN before step 3 of epoch 2, as a diverging run would."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 1 and batch == 2:
            kernel = self.model.trainable_weights[0]
            kernel.assign(np.full(kernel.shape, np.nan, kernel.dtype))


def test_a_nan_loss_stops_at_its_step_and_keeps_the_last_good_state(cifar, tmp_path):
    import cifar_helpers.models  # noqa: F401  registers the custom layers

    split = data.with_validation_split(cifar, val_per_class=2, seed=0)
    train, val = pipeline.split_datasets(split, batch_size=100)
    model = recipes.compile_model(models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8))
    with pytest.raises(training.TrainingDiverged, match="at epoch 2, step 3") as stop:
        training.fit(
            model,
            train,
            val,
            tmp_path,
            THREE_EPOCHS,
            verbose=0,
            extra_callbacks=[_Poison()],
        )
    assert "the backup after 1 epoch(s) and best.keras" in str(stop.value)
    assert resume.committed_backup(tmp_path)["epoch"] == 1  # not the broken epoch
    assert len(_rows(tmp_path / "history.csv")) == 1
    best = keras.saving.load_model(tmp_path / "best.keras")
    assert all(np.all(np.isfinite(w)) for w in best.get_weights())


# The original's early stopping (TrainResNet.py): after each epoch, stop when the
# monitored loss rose in each of the last 10 epochs (epochs counted from 0 here).
ORIGINAL_STOP = {
    "ten rises after a best": ([5.0, 1.0] + [1.0 + i for i in range(1, 11)], 11),
    "nine rises only": ([5.0, 1.0] + [1.0 + i for i in range(1, 10)], None),
    "a tie breaks the run": (
        [5.0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
        15,
    ),
    "the first epoch's value counts": ([1.0, 9] + [9 + i for i in range(1, 10)], 10),
}


def _stopping_epoch(values, rises=10, split=0):
    """Feed ``values`` epoch by epoch to a fresh callback, as a run that resumed
    at epoch ``split`` (0: never interrupted); the epoch it stopped at, or None."""
    import types

    model = types.SimpleNamespace(stop_training=False)
    callback = training.ConsecutiveRiseStopping(rises=rises, logged=values[:split])
    callback.set_model(model)
    callback.on_train_begin()
    for epoch in range(split, len(values)):
        callback.on_epoch_end(epoch, {"val_loss": values[epoch]})
        if model.stop_training:
            assert callback.stopped_epoch == epoch
            return epoch
    return None


@pytest.mark.parametrize("case", ORIGINAL_STOP)
def test_consecutive_rise_stopping_stops_where_the_original_loop_did(case):
    values, expected = ORIGINAL_STOP[case]
    assert _stopping_epoch(values) == expected


def test_consecutive_rises_and_patience_disagree():
    # A slow climb from the best (epoch 0) with a dip every third epoch: never ten
    # rises in a row, so the original's rule never stops; patience 10 stops at 10.
    climb = [1.0] + [2.0 + i - 1.5 * (i % 3 == 0) for i in range(1, 30)]
    assert _stopping_epoch(climb) is None
    import types

    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=10)
    stop.set_model(types.SimpleNamespace(stop_training=False))
    stop.on_train_begin()
    for epoch, value in enumerate(climb):
        stop.on_epoch_end(epoch, {"val_loss": value})
        if stop.model.stop_training:
            break
    assert epoch == 10


@pytest.mark.parametrize("split", [1, 5, 10, 11])
def test_a_resumed_run_stops_where_an_uninterrupted_one_would(split):
    values, expected = ORIGINAL_STOP["ten rises after a best"]
    assert _stopping_epoch(values, split=split) == expected


def test_a_nan_counts_as_a_rise_as_in_the_original():
    assert training.rose_in_each_of_last([1.0, float("nan"), 2.0], 2)
    assert not training.rose_in_each_of_last([1.0, 2.0], 2)  # needs rises + 1 values


def test_a_resumed_faithful_run_gives_the_rise_rule_the_losses_before_the_kill(
    cifar, tmp_path
):
    """The faithful recipe's stopping rule, wired by ``callbacks``, is handed the
    test losses the run logged before it was killed, so it stops where an
    uninterrupted run would (the rule itself: the tests above)."""
    recipe = dataclasses.replace(recipes.FAITHFUL, epochs=3)
    _fit_until_killed(cifar, tmp_path, recipe)
    logged = training.read_history(tmp_path / "history.csv")["val_loss"]
    assert len(logged) == 1 and (tmp_path / training.LAST_MODEL).is_file()
    chosen = training.callbacks(_narrow_resnet(), tmp_path, recipe, tensorboard=False)
    rule = next(c for c in chosen if isinstance(c, training.ConsecutiveRiseStopping))
    assert rule.logged == logged
