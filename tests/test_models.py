"""The original series' blocks and models: shapes, wiring, settings, sizes."""

from pathlib import Path

import keras
import numpy as np
import pytest

from cifar_helpers import blocks, models, recipes
from cifar_helpers.augment import Augment
from cifar_helpers.dropblock import DropBlock, dropblock_layers


def _model(build, shape):
    inputs = keras.Input(shape)
    return keras.Model(inputs, build(inputs))


def test_conv_block_keeps_the_map_and_sets_the_channels():
    model = _model(lambda x: blocks.conv_block(x, 16, name="c"), (8, 6, 3))
    assert model.output_shape == (None, 8, 6, 16)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    norms = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(convs) == len(norms) == 2
    assert not any(conv.use_bias for conv in convs)
    assert all((bn.momentum, bn.epsilon) == (0.997, 1e-5) for bn in norms)


def test_residual_block_halves_the_map_and_has_one_dropblock():
    model = _model(
        lambda x: blocks.residual_block(x, 8, block_size=3, name="r"), (16, 16, 4)
    )
    assert model.output_shape == (None, 8, 8, 8)
    (dropblock,) = dropblock_layers(model)
    assert dropblock.block_size == 3
    assert float(keras.ops.convert_to_numpy(dropblock.keep_prob)) == 1.0


def test_the_skip_connection_starts_after_the_first_conv_block():
    # With the second conv block silenced, the block must reduce to
    # pool(ReLU(h1 + 0)) = pool(h1), h1 being the first conv block after its ReLU.
    model = _model(lambda x: blocks.residual_block(x, 8, name="r"), (8, 8, 4))
    conv = model.get_layer("r_block2_conv2")
    conv.set_weights([np.zeros_like(w) for w in conv.get_weights()])
    h1 = keras.Model(model.input, model.get_layer("r_relu1").output)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 4)).astype("float32")
    pooled = keras.layers.MaxPooling2D(3, strides=2, padding="same")(h1(x))
    np.testing.assert_allclose(model(x), pooled, rtol=1e-6)


def test_dense_block_has_no_bias_and_optional_relu_and_dropout():
    model = _model(lambda x: blocks.dense_block(x, 6, dropout=0.5, name="d"), (4,))
    assert not model.get_layer("d_dense").use_bias
    assert model.get_layer("d_dropout").rate == 0.5
    plain = _model(
        lambda x: blocks.dense_block(x, 6, dropout=0.0, activation=False, name="d"),
        (4,),
    )
    names = {layer.name for layer in plain.layers}
    assert "d_relu" not in names and "d_dropout" not in names


def test_the_full_size_original_resnet_has_the_original_parameter_count():
    conv = sum(
        9 * c_in * c_out + 9 * c_out * c_out * 3
        for c_in, c_out in zip((3, 128, 256, 512), (128, 256, 512, 1024), strict=True)
    )
    conv_norms = sum(
        2 * (c_in + c_out) + 4 * c_out
        for c_in, c_out in zip((3, 128, 256, 512), (128, 256, 512, 1024), strict=True)
    )
    dense = 2 * 4096 * 4096 + 2 * 2 * 4096 + 4096 * 100 + 2 * 100
    model = models.original_resnet()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == conv + conv_norms + dense == 77_791_822
    assert len(dropblock_layers(model)) == 4


def test_a_narrow_original_resnet_maps_uint8_images_to_probabilities():
    model = models.original_resnet(widths=(4, 4, 8, 8), hidden=16)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    probabilities = keras.ops.convert_to_numpy(model(images))
    assert probabilities.shape == (3, 100) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


def test_the_input_is_scaled_to_minus_one_one_as_the_original():
    model = models.original_resnet(widths=(4, 4, 4, 4), hidden=8)
    scale = keras.Model(model.input, model.get_layer("to_minus1_1").output)
    images = np.zeros((1, 32, 32, 3), np.uint8)
    images[0, 0, 0, 0] = 255
    out = keras.ops.convert_to_numpy(scale(images))
    assert (out.min(), out.max()) == (-1.0, 1.0)


def test_a_narrow_original_resnet_trains_and_survives_a_keras_round_trip(tmp_path):
    model = models.original_resnet(widths=(4, 4, 8, 8), hidden=16)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, 8)
    history = model.fit(images, labels, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert all(isinstance(layer, DropBlock) for layer in dropblock_layers(loaded))
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-5
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"widths": (8, 8, 8)}, "widths=.*four stage widths"),
        ({"widths": (8, 8, 0, 8)}, "widths=0"),
        ({"hidden": 0}, "hidden=0"),
    ],
)
def test_invalid_model_sizes_are_rejected_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.original_resnet(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filters": (8, 8, 8)}, "give four of each"),
        ({"kernels": (3, 3, 0, 3)}, "kernels=0"),
    ],
)
def test_invalid_baseline_sizes_are_rejected_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.baseline_cnn(**kwargs)


def test_cnn_block_halves_the_map_with_the_original_order():
    model = _model(
        lambda x: blocks.cnn_block(x, 8, 5, dropout=0.15, name="c"), (16, 16, 3)
    )
    assert model.output_shape == (None, 8, 8, 8)
    kinds = [type(layer).__name__ for layer in model.layers[1:]]
    assert kinds == [
        "BatchNormalization",
        "Conv2D",
        "MaxPooling2D",
        "BatchNormalization",
        "ReLU",
        "Dropout",
    ]
    assert model.get_layer("c_conv").kernel_size == (5, 5)


def test_the_baseline_cnn_has_the_original_part_2_parameter_count():
    filters, kernels = (64, 128, 256, 512), (7, 5, 3, 3)
    c_ins = (3, *filters[:-1])
    conv = sum(k * k * i * o for k, i, o in zip(kernels, c_ins, filters, strict=True))
    norms = 2 * sum(c_ins) + 2 * sum(filters)
    dense = 2 * 2048 * 2048 + 2 * 2 * 2048 + 2048 * 100 + 2 * 100
    model = models.baseline_cnn()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == conv + norms + dense == 10_293_390
    assert model.get_layer("conv1_dropout").rate == 0.15


def test_models_augment_in_training_only_and_can_leave_it_out():
    model = models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8)
    assert isinstance(model.get_layer("augment"), Augment)
    plain = models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8, augment=False)
    assert "augment" not in {layer.name for layer in plain.layers}


def test_macs_count_convolutions_and_dense_layers_by_hand():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    assert models.macs_per_image(model) == 8 * 8 * 9 * 3 * 4 + 8 * 8 * 4 * 10


def test_the_original_resnet_costs_about_2_1_giga_macs_per_image():
    widths = models.ORIGINAL_WIDTHS
    stages = zip((32, 16, 8, 4), (3, *widths[:-1]), widths, strict=True)
    convs = sum(s * s * 9 * (c_in * c + 3 * c * c) for s, c_in, c in stages)
    dense = 2 * 4096 * 4096 + 4096 * 100
    macs = models.macs_per_image(models.original_resnet())
    assert macs == convs + dense and round(macs / 1e9, 1) == 2.1


def test_the_old_name_seed_resnet_builds_the_same_model_with_a_warning():
    with pytest.warns(DeprecationWarning, match="models.original_resnet"):
        old = models.seed_resnet
    assert old is models.original_resnet
    with pytest.warns(DeprecationWarning, match="'original_resnet'"):
        assert models.spec("seed_resnet") is models.CATALOGUE["original_resnet"]


def test_the_catalogue_names_each_models_builder_recipe_precision_and_smoke_sizes():
    assert list(models.CATALOGUE) == [
        "baseline_cnn",
        "original_resnet",
        "resnet9",
        "preact_resnet18",
    ]
    for name, spec in models.CATALOGUE.items():
        assert spec.name == name and spec.build is getattr(models, name)
        assert spec.precision in ("float32", "auto")
        assert (
            Path(__file__).parents[1] / "notebooks" / f"{spec.notebook}.ipynb"
        ).is_file()
    original, modern = (models.spec(n) for n in ("original_resnet", "resnet9"))
    assert original.recipe is recipes.ORIGINAL and original.precision == "float32"
    assert modern.recipe is recipes.MODERN and modern.precision == "auto"


@pytest.mark.parametrize("name", list(models.CATALOGUE))
def test_a_smoke_model_is_the_full_models_layers_narrower(name):
    spec = models.spec(name)
    full, narrow = spec.model(), spec.model(smoke=True)
    assert [type(layer) for layer in narrow.layers] == [
        type(layer) for layer in full.layers
    ]
    assert narrow.count_params() < full.count_params() / 20


def test_an_unknown_model_name_lists_the_catalogue():
    with pytest.raises(ValueError, match="use one of baseline_cnn, original_resnet"):
        models.spec("vgg")


def test_block_costs_group_resnet9_by_its_stages():
    model = models.resnet9(widths=(8, 16, 16, 32))
    costs = models.block_costs(model)
    assert [b for b in costs if b.startswith(("prep", "layer"))] == [
        "prep",
        "layer1",
        "layer2",
        "layer3",
    ]
    layer1 = [w for w in model.trainable_weights if w.path.startswith("layer1")]
    assert costs["layer1"][1] == sum(int(np.prod(w.shape)) for w in layer1)
    assert costs["layer3"][0] == (4, 4, 32)


def test_block_costs_sum_each_blocks_layers():
    model = models.original_resnet(widths=(4, 4, 8, 8), hidden=16)
    costs = models.block_costs(model)
    assert list(costs)[:2] == ["augment", "to_minus1_1"]
    assert {"residual1", "residual4", "fully_connected1", "logits"} <= set(costs)
    assert sum(p for _, p, _ in costs.values()) == sum(
        int(np.prod(w.shape)) for w in model.trainable_weights
    )
    assert sum(m for _, _, m in costs.values()) == models.macs_per_image(model)
    assert costs["residual1"][0] == (16, 16, 4)  # after the block's pool
