"""The original's sharpening: OpenCV's filter2D with the original's kernel, on uint8
pixels, rebuilt exactly (mirrored border, rounding half to even, clipping), checked
against OpenCV itself."""

import cv2
import keras
import numpy as np
import tensorflow as tf

from cifar_helpers.sharpen import Sharpen, sharpen

# PreprocessData.py's kernel, as the original wrote it.
ORIGINAL_KERNEL = (-1 / 256.0) * np.array(
    [
        [1, 4, 6, 4, 1],
        [4, 16, 24, 16, 4],
        [6, 24, -476, 24, 6],
        [4, 16, 24, 16, 4],
        [1, 4, 6, 4, 1],
    ]
)


def test_sharpen_is_opencvs_filter2d_with_the_originals_kernel_bit_for_bit():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    images[0] = rng.integers(100, 104, (32, 32, 3))  # close values: many exact ties
    out = sharpen(tf.constant(images)).numpy()
    assert out.dtype == np.uint8
    for got, image in zip(out, images, strict=True):
        np.testing.assert_array_equal(got, cv2.filter2D(image, -1, ORIGINAL_KERNEL))


def test_a_flat_image_stays_and_an_edge_is_steepened():
    flat = np.full((1, 32, 32, 3), 77, np.uint8)
    np.testing.assert_array_equal(sharpen(tf.constant(flat)), flat)
    step = np.full((1, 32, 32, 1), 100, np.uint8)
    step[:, :, 16:] = 150
    out = sharpen(tf.constant(step)).numpy()[0, 10, :, 0]
    assert out[15] < 100 and out[16] > 150  # under- and overshoot at the edge
    assert out[0] == 100 and out[31] == 150


def test_the_layer_keeps_uint8_and_saves_in_a_model(tmp_path):
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    model = keras.Model(inputs, Sharpen()(inputs))
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), np.uint8)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    out = loaded.predict(images, verbose=0)
    np.testing.assert_array_equal(out, sharpen(tf.constant(images)).numpy())
