"""The faithful recipe: the original part-7 run rebuilt piece by piece, and a run of
it that says plainly what it did (all training images in one order, the test set
watched, the last epoch's model kept)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from cifar_helpers import (
    augment,
    cli,
    data,
    dropblock,
    models,
    pipeline,
    recipes,
    resume,
    runs,
    sharpen,
    training,
)

SMOKE = ["--data", "synthetic", "--smoke", "--epochs", "2"]


def test_the_faithful_recipe_is_the_original_one_with_the_originals_choices():
    faithful, original = recipes.FAITHFUL, recipes.ORIGINAL
    for field in (
        "learning_rate",
        "decay_per_epoch",
        "clip_global_norm",
        "batch_size",
        "epochs",
        "keep_prob_final",
        "keep_prob_per_epoch",
    ):
        assert getattr(faithful, field) == getattr(original, field), field
    assert (faithful.validation, faithful.reshuffle) == ("test", False)
    assert (faithful.patience, faithful.rises, faithful.keep) == (None, 10, "last")
    assert faithful.watches_test and not original.watches_test
    assert set(recipes.RECIPES) == {"original", "faithful", "modern"}


def test_the_faithful_model_sharpens_augments_and_drops_as_the_original():
    options = dict(recipes.FAITHFUL.model_options)
    model = models.original_resnet(widths=(4, 4, 8, 8), hidden=16, **options)
    first = [layer for layer in model.layers[1:3]]
    assert isinstance(first[0], sharpen.Sharpen)
    assert isinstance(first[1], augment.OriginalAugment)
    blocks = dropblock.dropblock_layers(model)
    assert len(blocks) == 4
    assert {(b.gamma, b.oversize, b.block_size) for b in blocks} == {
        ("paper", "identity", 5)
    }


def test_the_callbacks_stop_after_ten_rises_and_keep_the_last_model(tmp_path):
    model = models.original_resnet(widths=(4, 4, 8, 8), hidden=16)
    chosen = training.callbacks(model, tmp_path, recipes.FAITHFUL, tensorboard=False)
    kinds = {type(c) for c in chosen}
    assert training.ConsecutiveRiseStopping in kinds
    assert resume.ResumableEarlyStopping not in kinds
    stopping = next(
        c for c in chosen if isinstance(c, training.ConsecutiveRiseStopping)
    )
    assert (stopping.rises, stopping.monitor) == (10, "val_loss")
    checkpoints = [c for c in chosen if isinstance(c, resume.AtomicCheckpoint)]
    assert {c.filepath.rsplit("/", 1)[-1] for c in checkpoints} == {
        "best.keras",
        training.LAST_MODEL,
    }
    last = next(c for c in checkpoints if c.filepath.endswith(training.LAST_MODEL))
    assert not last.save_best_only


def test_every_training_image_trains_and_the_test_set_takes_the_validation_place(
    synthetic_archive,
):
    settings = runs.RunSettings(
        model="original_resnet", data=str(synthetic_archive), recipe="faithful"
    )
    split = settings.load_split()
    whole = data.load_cifar100(str(synthetic_archive))
    assert len(split.y_train) == len(whole.y_train)
    np.testing.assert_array_equal(split.x_val, whole.x_test)
    np.testing.assert_array_equal(split.y_val, whole.y_test)


def order_of(dataset):
    return np.concatenate([labels.numpy() for _, labels in dataset])


def test_one_shuffle_repeats_every_epoch_unless_reshuffled():
    images = np.zeros((40, 32, 32, 3), np.uint8)
    labels = np.arange(40)
    fixed = pipeline.make_dataset(
        images, labels, batch_size=8, training=True, reshuffle=False
    )
    first, second = order_of(fixed), order_of(fixed)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, labels)  # shuffled once, as the original did
    moving = pipeline.make_dataset(images, labels, batch_size=8, training=True)
    assert not np.array_equal(order_of(moving), order_of(moving))


def test_with_test_as_validation_refuses_data_that_has_a_split(synthetic_archive):
    whole = data.load_cifar100(str(synthetic_archive))
    split = data.with_validation_split(whole, val_per_class=2)
    with pytest.raises(ValueError, match="already has a validation split"):
        data.with_test_as_validation(split)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "resnet9", "recipe": "faithful"}, "use it with original_resnet"),
        ({"model": "original_resnet", "recipe": "tf1"}, "recipe 'tf1'"),
    ],
)
def test_a_recipe_that_cannot_be_used_is_refused(kwargs, message):
    with pytest.raises(runs.RunError, match=message):
        runs.RunSettings(**kwargs)


def test_a_run_recorded_before_recipes_had_names_is_the_same_run():
    old = runs.RunSettings(model="original_resnet", data="synthetic")
    named = runs.RunSettings(
        model="original_resnet", data="synthetic", recipe="original"
    )
    assert old.known_as() == named.known_as()
    assert old.known_as().recipe == "original"
    faithful = runs.RunSettings(
        model="original_resnet", data="synthetic", recipe="faithful"
    )
    assert faithful.known_as() != named.known_as()


@pytest.fixture(scope="module")
def faithful_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "faithful"
    argv = ["train", "--model", "original_resnet", "--recipe", "faithful"]
    return out, [*argv, "--out", str(out), *SMOKE]


def test_a_faithful_smoke_run_names_its_recipe_and_says_the_test_set_was_watched(
    faithful_run, capsys
):
    out, argv = faithful_run
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "the test set is watched by early stopping" in printed
    assert "note: early stopping watched the test set" in printed
    assert "train_accuracy" in printed
    assert json.loads((out / "run.json").read_text())["recipe"] == "faithful"
    results = json.loads((out / "results.json").read_text())
    assert results["recipe"] == "faithful" and results["test_set_watched"]
    assert "optimistic" in results["note"]
    assert results["model_kept"] == "last"
    assert 0 <= results["train_accuracy"] <= 1 and results["train_loss"] > 0
    # The model kept is the last epoch's: the weights of last.keras.
    kept = training.LAST_MODEL
    import keras

    saved = keras.saving.load_model(out / "model.keras")
    last = keras.saving.load_model(out / kept)
    for a, b in zip(saved.get_weights(), last.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert isinstance(saved.get_layer("sharpen"), sharpen.Sharpen)


def test_evaluating_a_faithful_run_says_so_too(faithful_run, capsys):
    out, _ = faithful_run
    assert cli.main(["evaluate", str(out)]) == 0
    assert "watched the test set" in capsys.readouterr().out


def test_sharpening_is_part_of_the_saved_model_at_inference(faithful_run):
    import keras

    out, _ = faithful_run
    model = keras.saving.load_model(out / "model.keras")
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), np.uint8)
    inner = keras.Model(model.input, model.get_layer("to_minus1_1").output)
    scaled = inner.predict(images, verbose=0)
    expected = sharpen.sharpen(tf.constant(images)).numpy() / 127.5 - 1
    np.testing.assert_allclose(scaled, expected, atol=1e-6)
