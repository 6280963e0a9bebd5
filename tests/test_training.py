"""The original recipe, its callbacks, and fit: values, wiring, a run and a resume."""

import csv
import json

import keras
import numpy as np
import pytest

from cifar_helpers import data, models, training
from cifar_helpers.dropblock import KeepProbSchedule


def test_the_recipe_is_the_originals():
    recipe = training.Recipe()
    assert (recipe.learning_rate, recipe.decay_per_epoch) == (5e-4, 0.98)
    assert (recipe.clip_global_norm, recipe.batch_size, recipe.epochs) == (100, 250, 75)
    assert (recipe.keep_prob_final, recipe.keep_prob_per_epoch) == (0.8, 0.005)
    assert recipe.keep_prob_epochs == 40 and recipe.patience == 10
    assert recipe.monitor == "val_loss"  # the validation split, never the test set
    assert recipe.learning_rate_at(3) == pytest.approx(5e-4 * 0.98**3)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("learning_rate", 0, "learning_rate=0: use a value > 0"),
        ("decay_per_epoch", 1.5, r"decay_per_epoch=1.5: use a factor in \(0, 1\]"),
        ("batch_size", 2.5, "batch_size=2.5: use a whole number >= 1"),
        ("keep_prob_final", 0, r"keep_prob_final=0: use a value in \(0, 1\]"),
    ],
)
def test_invalid_recipes_name_the_setting(field, value, message):
    with pytest.raises(ValueError, match=message):
        training.Recipe(**{field: value})


def test_compile_uses_adam_with_global_norm_clipping():
    model = training.compile_model(models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8))
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.optimizer.global_clipnorm == 100
    assert float(model.optimizer.learning_rate) == pytest.approx(5e-4)


def test_every_callback_is_wired_to_the_validation_split(tmp_path):
    model = models.seed_resnet(widths=(4, 4, 4, 4), hidden=8)
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


def test_early_stopping_carries_on_counting_after_a_resume(tmp_path):
    def tiny(seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])

    best = tiny(0)
    best.save(tmp_path / "best.keras")
    settings = dict(monitor="val_loss", patience=2, restore_best_weights=True)
    resumed, afresh = tiny(1), tiny(1)
    logged = [3.0, 2.0, 2.5]  # val_loss of the epochs before the resume
    stop = training.ResumableEarlyStopping(logged, tmp_path / "best.keras", **settings)
    plain = keras.callbacks.EarlyStopping(**settings)
    for callback, model in ((stop, resumed), (plain, afresh)):
        callback.set_model(model)
        callback.on_train_begin()
        callback.on_epoch_end(3, {"val_loss": 2.4})
    # Epoch 1 was the best; epochs 2 and 3 did not improve: patience 2 is spent.
    assert (stop.best, stop.best_epoch, stop.wait) == (2.0, 1, 2)
    assert resumed.stop_training and not getattr(afresh, "stop_training", False)
    stop.on_train_end()  # restores epoch 1's weights, from best.keras
    for restored, saved in zip(resumed.get_weights(), best.get_weights(), strict=True):
        np.testing.assert_array_equal(restored, saved)


def test_a_model_without_dropblock_gets_no_keep_prob_schedule(tmp_path):
    model = models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8)
    chosen = training.callbacks(model, tmp_path, tensorboard=False)
    assert not any(isinstance(c, KeepProbSchedule) for c in chosen)


def _datasets(cifar):
    split = data.with_validation_split(cifar, val_per_class=2, seed=0)
    train = data.make_dataset(
        split.x_train, split.y_train, batch_size=100, training=True
    )
    val = data.make_dataset(split.x_val, split.y_val, batch_size=100, training=False)
    return train, val


def _narrow_resnet():
    keras.utils.set_random_seed(0)
    return training.compile_model(models.seed_resnet(widths=(4, 4, 8, 8), hidden=16))


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt  # as if the session died after epoch 1


@pytest.fixture(scope="module")
def resumed_run(cifar, tmp_path_factory):
    """A 3-epoch run interrupted after its first epoch, then resumed: the run
    folder, whether it counted as finished when interrupted, and the resumed
    session's History."""
    run_dir = tmp_path_factory.mktemp("run")
    train, val = _datasets(cifar)
    with pytest.raises(KeyboardInterrupt):
        training.fit(
            _narrow_resnet(),
            train,
            val,
            run_dir,
            epochs=3,
            verbose=0,
            extra_callbacks=[_Interrupt()],
        )
    interrupted = (
        (run_dir / "best.keras").is_file(),
        training.run_finished(run_dir),
        training.committed_backup(run_dir),
    )
    resumed = training.fit(_narrow_resnet(), train, val, run_dir, epochs=3, verbose=0)
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
    fresh = [v.numpy().tolist() for v in training.random_states(model)]
    assert len(fresh) == 7 and len(backup["random_states"]) == 7
    advanced = zip(backup["random_states"], fresh, strict=True)
    assert all(saved != start for saved, start in advanced)


def test_a_backup_whose_random_states_do_not_fit_resumes_with_a_warning(tmp_path):
    model = training.compile_model(models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8))
    model.optimizer.build(model.trainable_variables)
    (tmp_path / "backup").mkdir()
    model.save_weights(tmp_path / "backup" / "epoch-1.weights.h5")
    record = {"epoch": 1, "weights": "epoch-1.weights.h5", "random_states": [[0, 1]]}
    (tmp_path / "backup" / "training_metadata.json").write_text(json.dumps(record))
    backup = training.AtomicBackupAndRestore(str(tmp_path / "backup"))
    backup.set_model(model)
    with pytest.warns(UserWarning, match="will not repeat bit for bit"):
        backup._load_model()
    assert model._initial_epoch == 1


def test_a_resume_replays_the_shuffles_fit_had_drawn():
    # _fast_forward relies on how often Keras' fit starts iterating a dataset; if a
    # Keras release changes it, this says so before the bitwise fault tests fail.
    images = np.zeros((40, 32, 32, 3), "uint8")
    labels = np.arange(40)

    def shuffled():
        keras.utils.set_random_seed(0)
        return data.make_dataset(images, labels, batch_size=10, training=True)

    class Recorder(keras.Sequential):
        def train_step(self, batch):
            seen.append(batch[1].numpy().tolist())
            return super().train_step(batch)

    seen = []
    model = Recorder([keras.Input((32, 32, 3)), keras.layers.Flatten()])
    model.add(keras.layers.Dense(40))
    model.compile("sgd", "sparse_categorical_crossentropy", run_eagerly=True)
    model.fit(shuffled(), epochs=3, verbose=0, shuffle=False)
    per_epoch = [seen[e * 4 : e * 4 + 4] for e in range(3)]
    for epoch in range(3):
        dataset = shuffled()
        training._fast_forward(dataset, epoch)  # what a run resumed here replays
        order = [b.numpy().tolist() for _, b in dataset]
        assert order == per_epoch[epoch], f"epoch {epoch}"


def test_split_datasets_give_full_training_batches_and_even_validation_ones(cifar):
    split = data.with_validation_split(cifar, val_per_class=2, seed=0)  # 200 images
    train, val = training.split_datasets(split, batch_size=64, replicas=2)
    assert all(images.shape[0] == 64 for images, _ in train)
    assert len(train) == len(split.y_train) // 64
    # 50: the largest size up to 64 that divides 200 and splits over 2 replicas.
    assert [images.shape[0] for images, _ in val] == [50] * 4


def _interrupted_after(run_dir, epochs):
    """A backup committed after ``epochs`` epochs, as an interrupted run leaves."""
    (run_dir / "backup").mkdir()
    record = {"epoch": epochs, "batch": 0, "weights": f"epoch-{epochs}.weights.h5"}
    (run_dir / "backup" / "training_metadata.json").write_text(json.dumps(record))


def test_a_resume_keeps_the_checkpoints_best_score_from_before(tmp_path):
    _interrupted_after(tmp_path, 2)
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss\n0,4.0,3.5\n1,3.0,3.2\n")
    model = models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8)
    chosen = {type(c).__name__: c for c in training.callbacks(model, tmp_path)}
    assert chosen["AtomicCheckpoint"].best == pytest.approx(3.2)
    assert chosen["ResumableEarlyStopping"].logged == pytest.approx([3.5, 3.2])
    assert chosen["CSVLogger"].append


def test_a_resume_drops_log_rows_of_epochs_the_backup_did_not_commit(tmp_path):
    # Killed while logging epoch 2's row (half written), after epoch 1's row but
    # before the backup committed epoch 1: the backup says one epoch is done.
    _interrupted_after(tmp_path, 1)
    log = tmp_path / "history.csv"
    log.write_text("epoch,loss,val_loss\n0,4.0,3.5\n1,3.0,3.2\n2,2.")
    model = models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8)
    chosen = {type(c).__name__: c for c in training.callbacks(model, tmp_path)}
    assert log.read_text() == "epoch,loss,val_loss\n0,4.0,3.5\n"
    assert chosen["AtomicCheckpoint"].best == pytest.approx(3.5)


def test_partial_files_of_a_killed_save_are_removed_and_never_read(tmp_path):
    (tmp_path / "best.partial.keras").write_bytes(b"half a zip")
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "epoch-3.partial.weights.h5").write_bytes(b"half")
    model = models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8)
    training.callbacks(model, tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []


def test_a_new_run_starts_a_fresh_log_and_checkpoint(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss\n0,4.0,3.5\n")
    model = models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8)
    chosen = {type(c).__name__: c for c in training.callbacks(model, tmp_path)}
    assert chosen["AtomicCheckpoint"].best in (None, float("inf"))  # nothing to beat
    assert not chosen["CSVLogger"].append


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
    train, val = training.split_datasets(split, batch_size=100)
    model = training.compile_model(models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8))
    with pytest.raises(training.TrainingDiverged, match="at epoch 2, step 3") as stop:
        training.fit(
            model,
            train,
            val,
            tmp_path,
            epochs=3,
            verbose=0,
            extra_callbacks=[_Poison()],
        )
    assert "the backup after 1 epoch(s) and best.keras" in str(stop.value)
    assert training.committed_backup(tmp_path)["epoch"] == 1  # not the broken epoch
    assert len(_rows(tmp_path / "history.csv")) == 1
    best = keras.saving.load_model(tmp_path / "best.keras")
    assert all(np.all(np.isfinite(w)) for w in best.get_weights())
