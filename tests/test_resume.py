"""Exact resume, piece by piece (cifar_helpers.resume): what a resumed run takes
over from the interrupted one, and the Keras behaviours it relies on. A Keras
release that changes one of them fails here by name, before the bitwise fault
tests of tests/test_faults.py do."""

import dataclasses
import json

import keras
import numpy as np
import pytest

from cifar_helpers import models, pipeline, recipes, resume, training


def test_early_stopping_carries_on_counting_after_a_resume(tmp_path):
    def tiny(seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])

    best = tiny(0)
    best.save(tmp_path / "best.keras")
    settings = dict(monitor="val_loss", patience=2, restore_best_weights=True)
    resumed, afresh = tiny(1), tiny(1)
    logged = [3.0, 2.0, 2.5]  # val_loss of the epochs before the resume
    stop = resume.ResumableEarlyStopping(logged, tmp_path / "best.keras", **settings)
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


def test_a_backup_whose_random_states_do_not_fit_resumes_with_a_warning(tmp_path):
    model = recipes.compile_model(models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8))
    model.optimizer.build(model.trainable_variables)
    (tmp_path / "backup").mkdir()
    model.save_weights(tmp_path / "backup" / "epoch-1.weights.h5")
    record = {"epoch": 1, "weights": "epoch-1.weights.h5", "random_states": [[0, 1]]}
    (tmp_path / "backup" / "training_metadata.json").write_text(json.dumps(record))
    backup = resume.AtomicBackupAndRestore(str(tmp_path / "backup"))
    backup.set_model(model)
    with pytest.warns(UserWarning, match="will not repeat bit for bit"):
        backup._load_model()
    assert model._initial_epoch == 1


def test_a_resume_replays_the_shuffles_fit_had_drawn():
    # fast_forward relies on how often Keras' fit starts iterating a dataset; if a
    # Keras release changes it, this says so before the bitwise fault tests fail.
    images = np.zeros((40, 32, 32, 3), "uint8")
    labels = np.arange(40)

    def shuffled():
        keras.utils.set_random_seed(0)
        return pipeline.make_dataset(images, labels, batch_size=10, training=True)

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
        resume.fast_forward(dataset, epoch)  # what a run resumed here replays
        order = [b.numpy().tolist() for _, b in dataset]
        assert order == per_epoch[epoch], f"epoch {epoch}"


def _interrupted_after(run_dir, epochs):
    """A backup committed after ``epochs`` epochs, as an interrupted run leaves."""
    (run_dir / "backup").mkdir()
    record = {"epoch": epochs, "batch": 0, "weights": f"epoch-{epochs}.weights.h5"}
    record["random_states"] = []
    (run_dir / "backup" / "training_metadata.json").write_text(json.dumps(record))
    (run_dir / "backup" / record["weights"]).write_bytes(b"weights")  # unread here


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


def _model():
    return models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8)


def test_a_backup_that_commits_more_epochs_than_the_log_holds_is_refused(tmp_path):
    _interrupted_after(tmp_path, 99)
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss\n0,4.0,3.5\n")
    with pytest.raises(resume.DamagedRunError, match="commits 99 epoch.*logs 1"):
        training.callbacks(_model(), tmp_path)


def test_a_backup_that_commits_more_epochs_than_asked_is_refused(tmp_path):
    _interrupted_after(tmp_path, 2)
    (tmp_path / "history.csv").write_text("epoch,loss\n0,4.0\n1,3.0\n")
    recipe = dataclasses.replace(recipes.ORIGINAL, epochs=1)
    with pytest.raises(resume.DamagedRunError, match="more than the 1 this run asks"):
        training.callbacks(_model(), tmp_path, recipe)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncated record", "training_metadata.json: cannot be read"),
        ("empty record", "training_metadata.json: cannot be read"),
        ("record of another kind", r"holds \[1, 2\], not a JSON object"),
        ("weights outside the backup", "not a backup record"),
        ("weights missing", "epoch-1.weights.h5 is missing"),
    ],
)
def test_a_damaged_backup_is_named_with_how_to_start_again(tmp_path, damage, message):
    _interrupted_after(tmp_path, 1)
    record = tmp_path / "backup" / "training_metadata.json"
    if damage == "truncated record":
        record.write_text(record.read_text()[:20])
    elif damage == "empty record":
        record.write_text("")
    elif damage == "record of another kind":
        record.write_text("[1, 2]")
    elif damage == "weights outside the backup":
        edited = {**json.loads(record.read_text()), "weights": "../best.keras"}
        record.write_text(json.dumps(edited))
    else:
        (tmp_path / "backup" / "epoch-1.weights.h5").unlink()
    with pytest.raises(resume.DamagedRunError, match=message) as caught:
        resume.committed_backup(tmp_path)
    assert "Train into another --out folder" in str(caught.value)


def test_a_run_is_finished_only_when_its_record_says_so(tmp_path):
    # What a run killed after its first epoch's checkpoint and log row, before the
    # backup committed it, leaves: best.keras, a log row, no backup.
    (tmp_path / "best.keras").write_bytes(b"a model")
    (tmp_path / "history.csv").write_text("epoch,loss\n0,4.0\n")
    assert not training.run_finished(tmp_path)
    (tmp_path / resume.TRAINED).write_text('{"epochs_run": 1, "epochs": 1}')
    assert training.run_finished(tmp_path)
    (tmp_path / resume.TRAINED).write_text('{"epochs_run": 1,')
    with pytest.raises(resume.DamagedRunError, match="trained.json: cannot be read"):
        training.run_finished(tmp_path)


def test_a_fresh_start_deletes_the_records_of_an_earlier_end(tmp_path):
    for record in (resume.TRAINED, resume.FINISHED):
        (tmp_path / record).write_text("{}")
    chosen = training.callbacks(_model(), tmp_path)
    (end,) = [c for c in chosen if isinstance(c, resume.RecordTrainingEnd)]
    end.on_train_begin()
    assert not (tmp_path / resume.TRAINED).exists()
    assert not (tmp_path / resume.FINISHED).exists()


def test_a_damaged_log_row_is_named(tmp_path):
    log = tmp_path / "history.csv"
    log.write_text("epoch,loss,val_loss\n0,4.0,3.5\n1,3.x,3.2\n")
    with pytest.raises(resume.DamagedRunError, match="line 3: loss is '3.x'"):
        training.read_history(log)
