"""The recipes: the original's and the modern one's values, their shared checks,
their schedules, losses and optimizers (notebooks 02 and 05)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from cifar_helpers import devices, models, recipes
from cifar_helpers.dropblock import KeepProbSchedule


def test_the_recipe_is_the_originals():
    recipe = recipes.OriginalRecipe()
    assert (recipe.learning_rate, recipe.decay_per_epoch) == (5e-4, 0.98)
    assert (recipe.clip_global_norm, recipe.batch_size, recipe.epochs) == (100, 250, 75)
    assert (recipe.keep_prob_final, recipe.keep_prob_per_epoch) == (0.8, 0.005)
    assert recipe.keep_prob_epochs == 40 and recipe.patience == 10
    assert recipe.monitor == "val_loss"  # the validation split, never the test set
    assert recipe.learning_rate_at(3) == pytest.approx(5e-4 * 0.98**3)
    # TF1's AdamOptimizer, which the original used, has epsilon 1e-8 (Keras: 1e-7).
    optimizer = recipe.make_optimizer()
    assert optimizer.epsilon == 1e-8 and optimizer.global_clipnorm == 100


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
        recipes.OriginalRecipe(**{field: value})


def test_compile_uses_adam_with_global_norm_clipping():
    model = recipes.compile_model(models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8))
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.optimizer.global_clipnorm == 100
    assert float(model.optimizer.learning_rate) == pytest.approx(5e-4)


def test_one_cycle_rises_then_falls_to_zero():
    schedule = recipes.OneCycle(peak=0.4, total_steps=100, warmup_steps=20)
    values = [float(schedule(step)) for step in range(0, 121)]
    assert values[0] == pytest.approx(0.02)  # the first step already trains
    assert values[9] == pytest.approx(0.2)
    assert values[19] == values[20] == pytest.approx(0.4)
    assert values[60] == pytest.approx(0.2)
    assert values[99] == pytest.approx(0.005)  # the last step, still > 0
    assert values[100] == 0.0 and values[120] == 0.0
    assert np.all(np.diff(values[:20]) > 0) and np.all(np.diff(values[20:101]) < 0)
    clone = recipes.OneCycle.from_config(json.loads(json.dumps(schedule.get_config())))
    assert float(clone(37)) == pytest.approx(float(schedule(37)))
    with pytest.raises(ValueError, match="warmup_steps=0"):
        recipes.OneCycle(0.4, 100, 0)


def test_smoothed_crossentropy_against_hand_computed_values():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "float32")
    labels = np.array([0, 1])
    smoothing = 0.3
    target = np.full((2, 3), smoothing / 3)
    target[[0, 1], labels] += 1 - smoothing
    expected = np.mean(-np.sum(target * np.log(probabilities), axis=1))
    loss = recipes.SmoothedSparseCrossentropy(smoothing)
    assert float(loss(labels, probabilities)) == pytest.approx(expected, rel=1e-5)
    plain = keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)
    unsmoothed = recipes.SmoothedSparseCrossentropy(0.0)(labels, probabilities)
    assert float(unsmoothed) == pytest.approx(float(plain), rel=1e-5)
    with pytest.raises(ValueError, match="label_smoothing=1"):
        recipes.SmoothedSparseCrossentropy(1)


def test_modern_recipe_defaults_and_bad_values():
    recipe = recipes.ModernRecipe()
    assert (recipe.batch_size, recipe.epochs, recipe.peak_learning_rate) == (
        512,
        40,
        0.4,
    )
    assert recipe.jit_compile and recipe.steps_per_execution > 1 and not recipe.patience
    with pytest.raises(ValueError, match="warmup_fraction=1"):
        recipes.ModernRecipe(warmup_fraction=1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        recipe.make_optimizer()


def test_scaling_for_replicas_multiplies_batch_and_learning_rate():
    modern = recipes.ModernRecipe().for_replicas(4)
    assert (modern.batch_size, modern.peak_learning_rate) == (2048, 1.6)
    original = recipes.OriginalRecipe().for_replicas(2)
    assert (original.batch_size, original.learning_rate) == (500, 1e-3)
    one = devices.for_strategy(recipes.MODERN, tf.distribute.get_strategy())
    assert one == recipes.MODERN  # one device: nothing changes


def test_weight_decay_shrinks_kernels_but_not_batch_norm():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="dense")(inputs)
    outputs = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("bn").gamma.assign([2.0, 2.0, 2.0])
    recipe = recipes.ModernRecipe(epochs=1, weight_decay=0.5)
    optimizer = recipe.make_optimizer(steps_per_epoch=10)
    before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    # Zero gradients: only the decoupled decay can move a weight.
    optimizer.apply(
        [tf.zeros_like(v) for v in model.trainable_variables], model.trainable_variables
    )
    rate = float(recipe.learning_rate_schedule(10)(0))
    for variable, old in zip(model.trainable_variables, before, strict=True):
        name = variable.path
        if name.endswith("kernel"):
            # float32: the step may round differently by an ulp (1.2e-7 relative);
            # the decay itself moves every kernel by rate x 0.5 (10 % here).
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(variable), old * (1 - rate * 0.5), rtol=1e-6
            )
        else:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), old)


@pytest.mark.parametrize("kind", [recipes.OriginalRecipe, recipes.ModernRecipe])
def test_both_recipes_check_their_shared_settings_alike(kind):
    name = kind.__name__
    with pytest.raises(ValueError, match=f"{name} epochs=0: use a whole number >= 1"):
        kind(epochs=0)
    with pytest.raises(ValueError, match=f"{name} steps_per_execution=0"):
        kind(steps_per_execution=0)
    with pytest.raises(ValueError, match=f"{name} patience=0"):
        kind(patience=0)


@pytest.mark.parametrize(
    ("recipe", "rate_logger", "keep_prob_epochs"),
    [
        (recipes.ORIGINAL, "LearningRateScheduler", 40),
        (recipes.MODERN, "LearningRateLogger", 39),
    ],
)
def test_each_recipe_schedules_its_rate_and_keep_prob(
    recipe, rate_logger, keep_prob_epochs
):
    chosen = recipe.schedule_callbacks(models.resnet9(widths=(4, 4, 4, 4)))
    assert [type(c).__name__ for c in chosen] == [rate_logger, "KeepProbSchedule"]
    assert isinstance(chosen[1], KeepProbSchedule)
    assert chosen[1].duration == keep_prob_epochs == recipe.keep_prob_epochs
