"""The original series' augmentation (imgaug 0.2.8's SomeOf of Crop, Fliplr and
CoarseDropout), checked against imgaug's definitions: how many augmenters each image
gets, the share of images flipped, crops that are enlarged windows (as OpenCV's
resize with INTER_AREA enlarges them, which imgaug chose), the crop amounts, the
coarse masks (grids of imgaug's sizes enlarged as OpenCV's INTER_NEAREST does) and
the share of values they zero."""

import math

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from cifar_helpers import augment

SEED = tf.constant([5, 6])


def within(observed, expected, n, sigmas=4.5):
    """Whether a share observed over n independent trials is within sampling error."""
    return abs(observed - expected) <= sigmas * math.sqrt(expected * (1 - expected) / n)


def test_some_of_draws_0_to_3_augmenters_equally_often_and_any_subset():
    active = augment.some_of(20_000, 3, SEED).numpy()
    counts = active.sum(axis=1)
    for n in range(4):
        assert within((counts == n).mean(), 1 / 4, 20_000)
    for index in range(3):  # each augmenter: E[n] / 3 = 1.5 / 3
        assert within(active[:, index].mean(), 1 / 2, 20_000)
    single = active[counts == 1]  # which one, when one: each a third of the time
    for index in range(3):
        assert within(single[:, index].mean(), 1 / 3, len(single))


def opencv_enlarge(window, interpolation=cv2.INTER_AREA):
    """A 2-D float32 window enlarged to 32 x 32 by OpenCV's resize."""
    return cv2.resize(np.float32(window), (32, 32), interpolation=interpolation)


@pytest.mark.parametrize("height", [8, 13, 20, 26, 31, 32])
@pytest.mark.parametrize("width", [8, 17, 32])
def test_a_crop_is_its_window_enlarged_by_opencvs_inter_area(height, width):
    picture = np.random.default_rng(height * width).uniform(0, 255, (32, 32))
    top, left = (32 - height) // 3, 32 - width
    bottom, right = 32 - height - top, 0
    got = augment.crop_and_enlarge(
        tf.constant(picture[None, :, :, None], tf.float32),
        *(tf.constant([v]) for v in (top, right, bottom, left)),
    ).numpy()[0, :, :, 0]
    window = picture[top : 32 - bottom, left : 32 - right]
    np.testing.assert_allclose(got, opencv_enlarge(window), atol=2e-3)
    if (height, width) != (32, 32):  # imgaug's choice matters: not INTER_LINEAR
        assert np.abs(got - opencv_enlarge(window, cv2.INTER_LINEAR)).max() > 1


def test_a_whole_window_is_the_identity_and_a_half_window_doubles_each_pixel():
    images = tf.constant(np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)))
    images = tf.cast(images, tf.float32)
    zeros = tf.zeros([2], tf.int32)
    np.testing.assert_allclose(
        augment.crop_and_enlarge(images, zeros, zeros, zeros, zeros), images
    )
    eight = tf.fill([2], 8)
    half = augment.crop_and_enlarge(images, eight, eight, eight, eight).numpy()
    middle = images.numpy()[:, 8:24, 8:24]
    np.testing.assert_allclose(half, middle.repeat(2, axis=1).repeat(2, axis=2))


def coordinates(batch):
    """Images whose channel 0 holds the row and channel 1 the column of each pixel."""
    rows, cols = np.meshgrid(np.arange(32.0), np.arange(32.0), indexing="ij")
    image = np.stack([rows, cols, np.zeros((32, 32))], axis=-1)
    return tf.constant(np.repeat(image[None], batch, axis=0), tf.float32)


def test_crops_cut_0_to_12_pixels_off_each_side_independently_and_enlarge_the_window():
    images = coordinates(4_000)
    out = augment.original_crop(images, SEED, px=12).numpy()
    # The first output row and column are the window's first; the last, its last.
    top, left = out[:, 0, 0, 0], out[:, 0, 0, 1]
    bottom, right = 31 - out[:, 31, 0, 0], 31 - out[:, 0, 31, 1]
    amounts = np.stack([top, right, bottom, left], axis=1).round().astype(int)
    for side in amounts.T:
        assert side.min() == 0 and side.max() == 12
        for value in range(13):
            assert within((side == value).mean(), 1 / 13, len(side))
    assert abs(np.corrcoef(amounts.T)[np.triu_indices(4, 1)]).max() < 0.08
    # Each output is the window those amounts name, enlarged as OpenCV enlarges.
    for image, (top, right, bottom, left) in zip(out[:50], amounts, strict=False):
        for channel in (0, 1):
            window = images.numpy()[0, top : 32 - bottom, left : 32 - right, channel]
            np.testing.assert_allclose(
                image[..., channel], opencv_enlarge(window), atol=2e-3
            )


def asymmetric(batch):
    rng = np.random.default_rng(3)
    return tf.constant(rng.integers(1, 256, (batch, 32, 32, 3)), tf.float32)


def test_a_quarter_of_the_images_are_flipped_and_a_flip_is_a_mirror_image():
    images = asymmetric(8_000)
    out = augment.original_augment_batch(
        images, SEED, crop_px=0, dropout=(0.0, 0.0)
    ).numpy()
    images = images.numpy()
    flipped = np.all(out == images[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(out == images, axis=(1, 2, 3))
    assert np.all(flipped | kept)
    # Fliplr is drawn for half the images (SomeOf) and flips half of those.
    assert within(flipped.mean(), 1 / 4, len(out))


def test_dropout_zeroes_its_mean_drop_probability_times_the_chance_it_is_drawn():
    images = asymmetric(8_000)  # no zero pixels
    out = augment.original_augment_batch(images, SEED, crop_px=0, flip=0.0).numpy()
    zeroed = (out == 0).mean(axis=(1, 2, 3))
    # Drop probability ~ U(0, 0.2), mean 0.1; CoarseDropout drawn for half.
    spread = zeroed.std() / math.sqrt(len(zeroed))
    assert abs(zeroed.mean() - 0.1 * 0.5) < 4.5 * spread


def test_coarse_masks_are_nearest_enlarged_grids_of_imgaugs_sizes():
    shape = [6_000, 32, 32, 3]
    mask, cells = augment.coarse_dropout_mask(
        shape, SEED, p=(0.5, 0.5), per_channel=0.0
    )
    mask, cells = mask.numpy(), cells.numpy()
    # int(32 u) for u ~ U(0.02, 0.25), at least 4: P(4) = (5/32 - 0.02) / 0.23.
    p4 = (5 / 32 - 0.02) / 0.23
    for side in cells.T:
        assert within((side == 4).mean(), p4, len(side))
        for value in (5, 6, 7):
            assert within((side == value).mean(), (1 / 32) / 0.23, len(side))
    i = np.arange(32)
    for image, (h, w) in zip(mask[:300], cells[:300], strict=True):
        # The h x w grid: the first pixel of each cell's rectangle.
        grid = image[np.searchsorted((i * h) // 32, np.arange(h))][
            :, np.searchsorted((i * w) // 32, np.arange(w))
        ]
        enlarged = cv2.resize(grid[..., 0], (32, 32), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(image[..., 0], enlarged)
        assert np.all(image == image[..., :1])  # per_channel=0: one mask
    assert within(1 - mask.mean(), 0.5, mask.size // 3 // 25, sigmas=6)


def test_half_the_images_have_a_mask_per_channel():
    mask, _ = augment.coarse_dropout_mask([4_000, 32, 32, 3], SEED, p=(0.5, 0.5))
    mask = mask.numpy()
    own = np.any(mask != mask[..., :1], axis=(1, 2, 3))
    assert within(own.mean(), 0.5, len(own))


def test_the_share_dropped_is_the_mean_of_p_whatever_the_resolution():
    mask, _ = augment.coarse_dropout_mask([4_000, 32, 32, 1], SEED, per_channel=0.0)
    dropped = 1 - mask.numpy().mean(axis=(1, 2, 3))
    spread = dropped.std() / math.sqrt(len(dropped))
    assert abs(dropped.mean() - 0.1) < 4.5 * spread


def test_the_layer_is_the_identity_at_inference_and_augments_in_training():
    layer = augment.OriginalAugment(seed=1)
    images = asymmetric(64)
    np.testing.assert_array_equal(layer(images, training=False), images)
    out = layer(images, training=True).numpy()
    assert out.dtype == np.float32 and out.shape == (64, 32, 32, 3)
    assert out.min() >= 0 and out.max() <= 255
    assert np.any(out != images.numpy())


def test_the_same_seed_gives_the_same_batch():
    images = asymmetric(32)
    one = augment.original_augment_batch(images, SEED)
    two = augment.original_augment_batch(images, SEED)
    three = augment.original_augment_batch(images, tf.constant([7, 8]))
    np.testing.assert_array_equal(one, two)
    assert np.any(one.numpy() != three.numpy())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"crop_px": 16}, "crop_px=16"),
        ({"flip": 1.5}, "flip=1.5"),
        ({"dropout": (0.3, 0.1)}, "dropout=(0.3, 0.1)"),
        ({"size_percent": (0.1,)}, "size_percent=(0.1,)"),
        ({"min_size": 0}, "min_size=0"),
    ],
)
def test_the_layer_rejects_bad_arguments_naming_them(kwargs, message):
    with pytest.raises(
        ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        augment.OriginalAugment(**kwargs)


def test_a_model_with_the_layer_trains_under_xla_and_saves_and_loads(tmp_path):
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = augment.OriginalAugment(crop_px=10, seed=3)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    model.compile("sgd", "sparse_categorical_crossentropy", jit_compile=True)
    images = np.random.default_rng(4).integers(0, 256, (16, 32, 32, 3), np.uint8)
    model.fit(images, np.zeros(16), batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    layer = loaded.layers[1]
    assert isinstance(layer, augment.OriginalAugment)
    assert (layer.crop_px, layer.dropout) == (10, (0.0, 0.2))
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0)
    )


def test_the_layer_runs_under_mixed_precision():
    layer = augment.OriginalAugment(seed=2, dtype="mixed_float16")
    images = np.random.default_rng(5).integers(0, 256, (16, 32, 32, 3), np.uint8)
    out = keras.ops.convert_to_numpy(layer(images, training=True))
    assert out.dtype == np.float16 and out.shape == images.shape
    assert out.min() >= 0 and out.max() <= 255
