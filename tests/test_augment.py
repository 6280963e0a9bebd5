"""Augmentation: shapes and dtypes kept, a flip is a flip, crops are windows of the
reflect-padded image, cutout zeroes one square per image."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cifar_helpers import augment


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return rng.integers(1, 256, (64, 32, 32, 3), dtype=np.uint8)


SEED = tf.constant([3, 4])


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize(
    "op",
    [augment.random_crop, augment.random_flip, augment.cutout, augment.augment_batch],
)
def test_every_op_keeps_shape_and_dtype(op, dtype, batch):
    out = op(tf.constant(batch.astype(dtype)), SEED)
    assert out.shape == batch.shape and out.dtype == tf.as_dtype(dtype)


def test_a_flip_is_a_mirror_image_or_nothing_and_both_happen(batch):
    out = augment.random_flip(tf.constant(batch), SEED).numpy()
    flipped = [np.array_equal(o, x[:, ::-1]) for o, x in zip(out, batch, strict=True)]
    kept = [np.array_equal(o, x) for o, x in zip(out, batch, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54  # about half of 64


def test_crops_are_windows_of_the_reflect_padded_image(batch):
    out = augment.random_crop(tf.constant(batch), SEED, padding=4).numpy()
    offsets = set()
    for o, x in zip(out, batch, strict=True):
        padded = np.pad(x, [(4, 4), (4, 4), (0, 0)], mode="reflect")
        matches = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if np.array_equal(padded[dy : dy + 32, dx : dx + 32], o)
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 20  # windows differ from image to image


def test_cutout_zeroes_one_clipped_square_per_image():
    ones = tf.fill([256, 32, 32, 3], tf.constant(255, tf.uint8))
    out = augment.cutout(ones, SEED, size=8).numpy()
    full_squares = 0
    for image in out:
        zero = np.all(image == 0, axis=-1)
        assert np.all((image == 0) | (image == 255))
        assert np.all(image[zero] == 0) and np.all(image[~zero] == 255)
        rows, cols = np.flatnonzero(zero.any(axis=1)), np.flatnonzero(zero.any(axis=0))
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8
        # The zeros fill exactly one rectangle ...
        assert zero.sum() == len(rows) * len(cols)
        assert np.ptp(rows) == len(rows) - 1 and np.ptp(cols) == len(cols) - 1
        # ... which is a whole 8x8 square unless it touches the border.
        inside = rows[0] > 0 and rows[-1] < 31 and cols[0] > 0 and cols[-1] < 31
        if inside:
            assert zero.sum() == 64
            full_squares += 1
    assert full_squares > 100


def test_augment_batch_equals_crop_then_flip_then_cutout(batch):
    images = tf.constant(batch)
    crop_seed, flip_seed, cutout_seed = tf.unstack(
        tf.random.experimental.stateless_split(SEED, 3)
    )
    expected = augment.cutout(
        augment.random_flip(augment.random_crop(images, crop_seed), flip_seed),
        cutout_seed,
    )
    np.testing.assert_array_equal(augment.augment_batch(images, SEED), expected)


def test_the_same_seed_gives_the_same_batch_and_another_seed_another(batch):
    images = tf.constant(batch)
    a, b = augment.augment_batch(images, SEED), augment.augment_batch(images, SEED)
    c = augment.augment_batch(images, tf.constant([3, 5]))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_zero_padding_and_zero_cutout_and_no_flip_is_the_identity(batch):
    out = augment.augment_batch(
        tf.constant(batch), SEED, padding=0, flip=False, cutout_size=0
    )
    np.testing.assert_array_equal(out, batch)


def test_the_layer_is_the_identity_at_inference_and_outputs_floats(batch):
    layer = augment.Augment(seed=0)
    out = layer(batch)
    assert out.dtype == "float32"
    np.testing.assert_array_equal(out, batch.astype(np.float32))


def test_the_layer_augments_in_training(batch):
    out = augment.Augment(seed=0)(batch, training=True)
    assert out.shape == batch.shape and not np.array_equal(out, batch)


def test_the_layer_draws_new_parameters_each_call(batch):
    layer = augment.Augment(seed=0)
    assert not np.array_equal(layer(batch, training=True), layer(batch, training=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"padding": -1}, "padding=-1"),
        ({"padding": 32}, "padding=32"),
        ({"cutout_size": 40}, "cutout_size=40"),
        ({"padding": 2.5}, "padding=2.5"),
    ],
)
def test_the_layer_rejects_bad_arguments_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        augment.Augment(**kwargs)


def test_a_model_with_the_layer_takes_uint8_and_saves_and_loads(tmp_path, batch):
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = augment.Augment(padding=2, cutout_size=6, seed=1)(inputs)
    x = keras.layers.Rescaling(1 / 255)(x)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    restored = loaded.layers[1]
    assert isinstance(restored, augment.Augment)
    assert (restored.padding, restored.cutout_size, restored.seed) == (2, 6, 1)
    np.testing.assert_allclose(
        loaded.predict(batch, verbose=0), model.predict(batch, verbose=0)
    )


def test_the_layer_trains_inside_a_compiled_xla_fit(batch):
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3), dtype="uint8"),
            augment.Augment(seed=0),
            keras.layers.Rescaling(1 / 255),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    history = model.fit(batch, np.arange(64) % 10, batch_size=32, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_the_layer_rejects_a_single_image_asking_for_a_batch(batch):
    with pytest.raises(ValueError, match="expected ndim=4, found ndim=3"):
        augment.Augment()(batch[0])


def test_one_replica_keeps_its_seed():
    seed = tf.constant([3, 4])
    assert augment.per_replica_seed(seed) is seed
