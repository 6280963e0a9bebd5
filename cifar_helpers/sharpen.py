"""The original series' preprocessing: every image sharpened by unsharp masking.

The original's final ``PreprocessData.py`` sharpened all 60,000 images, training and
test, before anything else (its README: "Used Unsharp masking kernel to sharpen the
blurry images"), and its ``Prediction_Interface.py`` sharpened each image it was asked
to classify. It ran OpenCV's ``cv2.filter2D(image, -1, kernel)`` on the uint8 pixels
with the 5 x 5 kernel ``2 x identity - G`` in 256ths, where ``G`` is the binomial
(Gaussian-like) blur ``[1, 4, 6, 4, 1]`` times its transpose: it adds to each pixel
its difference from a blurred copy. :class:`Sharpen` rebuilds that filter as a Keras
layer, exactly: OpenCV's mirrored border (``BORDER_REFLECT_101``), its rounding to the
nearest integer (ties to even) and its clipping to 0..255. Inside a model it sharpens
training, test and user images alike, as the original did. Introduced in notebook 04
(the faithful recipe).
"""

import keras
import numpy as np
import tensorflow as tf

BLUR = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1])  # sums to 256
# The original's kernel times 256: 2 x 256 at the centre minus the blur.
UNSHARP_256 = -BLUR
UNSHARP_256[2, 2] += 2 * 256  # -36 + 512 = 476, the original's centre value
assert UNSHARP_256.sum() == 256  # a flat image stays as it is


def sharpen(images):
    """``images`` (uint8 or whole numbers, ``B x H x W x C``, H and W at least 3)
    sharpened as the original's ``cv2.filter2D`` did, with the input's dtype.

    The sum is taken in int32 (256 times the filtered value, exact), then divided
    by 256 with rounding half to even, as OpenCV rounds, and clipped to 0..255.
    """
    dtype = images.dtype
    pixels = tf.cast(images, tf.int32)
    padded = tf.pad(pixels, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="REFLECT")
    height, width = tf.shape(pixels)[1], tf.shape(pixels)[2]
    total = tf.zeros_like(pixels)
    for dy in range(5):
        for dx in range(5):
            window = padded[:, dy : dy + height, dx : dx + width, :]
            total += int(UNSHARP_256[dy, dx]) * window
    whole, rest = total // 256, total % 256  # floor division: rest in 0..255
    up = (rest > 128) | ((rest == 128) & (whole % 2 == 1))
    rounded = whole + tf.cast(up, tf.int32)
    return tf.cast(tf.clip_by_value(rounded, 0, 255), dtype)


@keras.saving.register_keras_serializable(package="cifar_helpers")
class Sharpen(keras.layers.Layer):
    """Keras layer: :func:`sharpen`, in training and at inference alike. Put it
    first in a model, before augmentation, on the uint8 images (it returns uint8)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def call(self, images):
        return sharpen(images)

    def compute_output_shape(self, input_shape):
        return input_shape
