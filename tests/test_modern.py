"""The modern residual networks and the modern recipe (notebook 05)."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from cifar_helpers import models, recipes, training
from cifar_helpers.dropblock import DropBlock, dropblock_layers


def _conv(k, cin, cout):
    return k * k * cin * cout


def _bn(c):
    return 2 * c  # trainable: gamma and beta


def test_resnet9_parameters_follow_from_its_layers():
    w = (64, 128, 256, 512)
    convs = (
        _conv(3, 3, w[0])
        + _conv(3, w[0], w[1])
        + 2 * _conv(3, w[1], w[1])
        + _conv(3, w[1], w[2])
        + _conv(3, w[2], w[3])
        + 2 * _conv(3, w[3], w[3])
    )
    norms = _bn(w[0]) + 3 * _bn(w[1]) + _bn(w[2]) + 3 * _bn(w[3])
    head = w[3] * 100 + 100
    model = models.resnet9()
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == convs + norms + head == 6_619_300
    assert models.macs_per_image(model) == pytest.approx(0.379e9, rel=0.01)


def test_preact_resnet18_parameters_follow_from_its_layers():
    w = (64, 128, 256, 512)
    total = _conv(3, 3, w[0])
    cin = w[0]
    for stage, cout in enumerate(w):
        for index in range(2):
            total += _bn(cin) + _conv(3, cin, cout) + _bn(cout) + _conv(3, cout, cout)
            if stage and index == 0:
                total += _conv(1, cin, cout)  # the projection shortcut
            cin = cout
    total += _bn(w[3]) + w[3] * 100 + 100
    model = models.preact_resnet18()
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == total == 11_218_340
    assert models.macs_per_image(model) == pytest.approx(0.556e9, rel=0.01)


@pytest.mark.parametrize(
    "build, sides", [(models.resnet9, [8, 4]), (models.preact_resnet18, [8, 4])]
)
def test_dropblock_sits_in_the_late_stages_only(build, sides):
    model = build(widths=(8, 8, 16, 16))
    layers = dropblock_layers(model)
    assert [layer.input.shape[1] for layer in layers] == sides
    assert all(float(layer.keep_prob) == 1.0 for layer in layers)
    assert all(layer.block_size == 3 for layer in layers)


def test_projection_shortcut_only_where_the_shape_changes():
    model = models.preact_resnet18(widths=(8, 8, 16, 16))
    projections = [layer.name for layer in model.layers if "projection" in layer.name]
    # Stage 1 keeps 8 filters at 32 px; stages 2-4 halve the map in their first block.
    assert projections == [
        "stage2_1_projection",
        "stage3_1_projection",
        "stage4_1_projection",
    ]


@pytest.mark.parametrize("build", [models.resnet9, models.preact_resnet18])
def test_uint8_in_float32_probabilities_out_under_mixed_precision(build):
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = build(widths=(8, 8, 16, 16))
        images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), "uint8")
        probabilities = model(images, training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("logits").compute_dtype == "float32"
    assert probabilities.dtype == "float32" and probabilities.shape == (4, 100)
    np.testing.assert_allclose(np.sum(probabilities, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("build", [models.resnet9, models.preact_resnet18])
def test_bad_sizes_are_refused_by_name(build):
    with pytest.raises(ValueError, match="widths"):
        build(widths=(8, 16))
    with pytest.raises(ValueError, match="block_size=0"):
        build(block_size=0)


def test_modern_recipe_trains_a_narrow_resnet9(tmp_path):
    """XLA, several steps per execution, one-cycle, label smoothing and the
    keep_prob schedule in one short fit: the loss falls, the logs hold both
    schedules, and keep_prob reaches its final value on the last epoch."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, 256)  # 4 of the 100 classes: learnable quickly
    images[..., 0] = (labels * 60)[:, None, None]
    recipe = dataclasses.replace(
        recipes.MODERN, batch_size=32, epochs=3, steps_per_execution=4
    )
    train = tf.data.Dataset.from_tensor_slices((images, labels)).batch(
        32, drop_remainder=True
    )
    model = models.resnet9(widths=(8, 8, 16, 16))
    recipes.compile_model(model, recipe, steps_per_epoch=len(train))
    history = training.fit(
        model, train, train.take(2), tmp_path, recipe, verbose=0, tensorboard=False
    ).history
    assert history["loss"][-1] < history["loss"][0]
    rates = history["learning_rate"]  # logged after each epoch's last step
    assert rates[-1] == pytest.approx(0.0, abs=1e-6) and max(rates) > 0
    assert history["keep_prob"][-1] == pytest.approx(recipe.keep_prob_final)
    # 2 validation batches, fewer than steps_per_execution: Keras 3.3-3.4 crashed
    # and 3.5-3.6 dropped validation from the history here (stack.KERAS_FIXES).
    assert "val_loss" in history and (tmp_path / "best.keras").is_file()
    reloaded = keras.saving.load_model(tmp_path / "best.keras")
    assert isinstance(reloaded.get_layer("layer3_dropblock"), DropBlock)


def test_training_speed_times_whole_executions_after_one_warm_up():
    recipe = dataclasses.replace(recipes.MODERN, steps_per_execution=2)
    model = recipes.compile_model(
        models.resnet9(widths=(8, 8, 16, 16)), recipe, steps_per_epoch=10
    )
    assert training.training_speed(model, 8, steps=3) > 0
    # The warm-up is one execution (2 steps); 3 steps round up to 2 executions.
    assert int(model.optimizer.iterations) == 2 + 4
    assert training.training_speed(model, 8, steps=2, warmup=False) > 0
    assert int(model.optimizer.iterations) == 6 + 2
