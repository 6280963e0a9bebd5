"""The modern residual networks and the modern recipe (notebook 05)."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from cifar_helpers import models, training
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


def test_one_cycle_rises_then_falls_to_zero():
    schedule = training.OneCycle(peak=0.4, total_steps=100, warmup_steps=20)
    values = [float(schedule(step)) for step in range(0, 121)]
    assert values[0] == pytest.approx(0.02)  # the first step already trains
    assert values[9] == pytest.approx(0.2)
    assert values[19] == values[20] == pytest.approx(0.4)
    assert values[60] == pytest.approx(0.2)
    assert values[99] == pytest.approx(0.005)  # the last step, still > 0
    assert values[100] == 0.0 and values[120] == 0.0
    assert np.all(np.diff(values[:20]) > 0) and np.all(np.diff(values[20:101]) < 0)
    clone = training.OneCycle.from_config(json.loads(json.dumps(schedule.get_config())))
    assert float(clone(37)) == pytest.approx(float(schedule(37)))
    with pytest.raises(ValueError, match="warmup_steps=0"):
        training.OneCycle(0.4, 100, 0)


def test_smoothed_crossentropy_against_hand_computed_values():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "float32")
    labels = np.array([0, 1])
    smoothing = 0.3
    target = np.full((2, 3), smoothing / 3)
    target[[0, 1], labels] += 1 - smoothing
    expected = np.mean(-np.sum(target * np.log(probabilities), axis=1))
    loss = training.SmoothedSparseCrossentropy(smoothing)
    assert float(loss(labels, probabilities)) == pytest.approx(expected, rel=1e-5)
    plain = keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)
    unsmoothed = training.SmoothedSparseCrossentropy(0.0)(labels, probabilities)
    assert float(unsmoothed) == pytest.approx(float(plain), rel=1e-5)
    with pytest.raises(ValueError, match="label_smoothing=1"):
        training.SmoothedSparseCrossentropy(1)


def test_modern_recipe_defaults_and_bad_values():
    recipe = training.ModernRecipe()
    assert (recipe.batch_size, recipe.epochs, recipe.peak_learning_rate) == (
        512,
        40,
        0.4,
    )
    assert recipe.jit_compile and recipe.steps_per_execution > 1 and not recipe.patience
    with pytest.raises(ValueError, match="warmup_fraction=1"):
        training.ModernRecipe(warmup_fraction=1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        recipe.make_optimizer()


def test_scaling_for_replicas_multiplies_batch_and_learning_rate():
    modern = training.ModernRecipe().for_replicas(4)
    assert (modern.batch_size, modern.peak_learning_rate) == (2048, 1.6)
    original = training.Recipe().for_replicas(2)
    assert (original.batch_size, original.learning_rate) == (500, 1e-3)
    one = training.for_strategy(training.MODERN, tf.distribute.get_strategy())
    assert one == training.MODERN  # one device: nothing changes


def test_weight_decay_shrinks_kernels_but_not_batch_norm():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="dense")(inputs)
    outputs = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("bn").gamma.assign([2.0, 2.0, 2.0])
    recipe = training.ModernRecipe(epochs=1, weight_decay=0.5)
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


def test_eval_batch_size_splits_the_set_evenly():
    assert training.eval_batch_size(10_000, 512) == 500
    assert training.eval_batch_size(1_000, 512) == 500
    assert training.eval_batch_size(300, 512) == 300
    assert training.eval_batch_size(1_009, 512) == 512  # a prime: no even split
    assert training.eval_batch_size(10_000, 4096, replicas=8) == 2000


@pytest.mark.parametrize(
    "kind, capability, policy",
    [
        ("TPU", None, "mixed_bfloat16"),
        ("GPU", (9, 0), "mixed_bfloat16"),  # H100
        ("GPU", (8, 0), "mixed_bfloat16"),  # A100
        ("GPU", (8, 9), "mixed_bfloat16"),  # L4
        ("GPU", (7, 5), "mixed_float16"),  # T4
        ("GPU", (7, 0), "mixed_float16"),  # V100
        ("GPU", (6, 0), "float32"),  # P100
        ("GPU", None, "float32"),
        ("CPU", None, "float32"),
    ],
)
def test_precision_follows_the_device(kind, capability, policy):
    assert training.precision_for(kind, capability) == policy


def test_this_machine_trains_in_float32():
    assert training.choose_precision() == "float32"  # CI machines have no GPU
    try:
        assert training.use_precision("mixed_float16") == "mixed_float16"
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


CLUSTER = json.dumps(
    {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}
)


@pytest.mark.parametrize(
    "tpu, gpus, tf_config, kind",
    [
        (True, 0, None, "tpu"),
        (True, 0, CLUSTER, "tpu"),
        (False, 8, CLUSTER, "multiworker"),
        (False, 2, None, "mirrored"),
        (False, 1, None, "default"),
        (False, 0, None, "default"),
        (False, 1, json.dumps({"cluster": {"worker": ["a:1"]}}), "default"),
    ],
)
def test_strategy_choice(tpu, gpus, tf_config, kind):
    assert training.strategy_kind(tpu=tpu, gpus=gpus, tf_config=tf_config) == kind


def test_strategy_errors_say_what_to_do():
    with pytest.raises(ValueError, match="not valid JSON"):
        training.strategy_kind(tpu=False, gpus=0, tf_config="{cluster")
    with pytest.raises(ValueError, match="use one of auto"):
        training.choose_strategy("horovod")
    with pytest.raises(ValueError, match="no TPU found"):
        training.choose_strategy("tpu")
    strategy = training.choose_strategy("auto")
    assert strategy.num_replicas_in_sync == 1 and training.is_chief(strategy)


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
        training.MODERN, batch_size=32, epochs=3, steps_per_execution=4
    )
    train = tf.data.Dataset.from_tensor_slices((images, labels)).batch(
        32, drop_remainder=True
    )
    model = models.resnet9(widths=(8, 8, 16, 16))
    training.compile_model(model, recipe, steps_per_epoch=len(train))
    history = training.fit(
        model, train, train.take(2), tmp_path, recipe, verbose=0, tensorboard=False
    ).history
    assert history["loss"][-1] < history["loss"][0]
    rates = history["learning_rate"]  # logged after each epoch's last step
    assert rates[-1] == pytest.approx(0.0, abs=1e-6) and max(rates) > 0
    assert history["keep_prob"][-1] == pytest.approx(recipe.keep_prob_final)
    assert "val_loss" in history and (tmp_path / "best.keras").is_file()
    reloaded = keras.saving.load_model(tmp_path / "best.keras")
    assert isinstance(reloaded.get_layer("layer3_dropblock"), DropBlock)


def test_fit_refuses_epochs_that_the_one_cycle_schedule_does_not_span(tmp_path):
    model = training.compile_model(
        models.resnet9(widths=(8, 8, 16, 16)), training.MODERN, steps_per_epoch=10
    )
    with pytest.raises(ValueError, match=r"dataclasses.replace\(recipe, epochs=3\)"):
        training.fit(model, None, None, tmp_path, training.MODERN, epochs=3)


def test_training_speed_times_whole_executions_after_one_warm_up():
    recipe = dataclasses.replace(training.MODERN, steps_per_execution=2)
    model = training.compile_model(
        models.resnet9(widths=(8, 8, 16, 16)), recipe, steps_per_epoch=10
    )
    assert training.training_speed(model, 8, steps=3) > 0
    # The warm-up is one execution (2 steps); 3 steps round up to 2 executions.
    assert int(model.optimizer.iterations) == 2 + 4
    assert training.training_speed(model, 8, steps=2, warmup=False) > 0
    assert int(model.optimizer.iterations) == 6 + 2
