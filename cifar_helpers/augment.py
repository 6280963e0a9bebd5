"""Batched data augmentation: reflect-pad + random crop, horizontal flip, cutout.

Introduced in notebook 01. Each function takes a whole batch ``B x H x W x C`` (any
dtype; uint8 stays uint8) and a stateless seed (an int tensor of shape ``[2]``), draws
one set of parameters per image, and applies them with a few vectorised ops: no
per-image Python or ``map_fn``. The same functions serve twice:

- in ``tf.data``: ``pipeline.make_dataset(..., augment=augment_batch)`` maps them over
  batches on the host CPU;
- in the model: the :class:`Augment` layer calls them inside ``fit``, so they run on
  the GPU or TPU with the rest of the step, and do nothing at inference.
"""

import keras
import tensorflow as tf


def _reflect(index, size):
    """Mirror out-of-range indices back inside ``0..size-1`` (NumPy's 'reflect')."""
    index = tf.abs(index)
    return tf.where(index >= size, 2 * (size - 1) - index, index)


def _gather_pixels(images, rows, cols):
    """Output pixel ``[b, i, j]`` is input pixel ``[b, rows[b, i], cols[b, j]]``.

    One gather over the flattened pixels moves every image through its own window
    (crop) and column order (flip) in a single pass over memory.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    flat = tf.reshape(rows[:, :, None] * width + cols[:, None, :], [batch, -1])
    pixels = tf.reshape(images, [batch, height * width, shape[3]])
    return tf.reshape(tf.gather(pixels, flat, batch_dims=1), shape)


def _crop_indices(shape, seed, padding):
    """Rows and columns (``B x H``, ``B x W``) of one random window per image."""
    offsets = tf.random.stateless_uniform(
        [shape[0], 2], seed, minval=-padding, maxval=padding + 1, dtype=tf.int32
    )
    rows = _reflect(offsets[:, :1] + tf.range(shape[1])[None], shape[1])
    cols = _reflect(offsets[:, 1:] + tf.range(shape[2])[None], shape[2])
    return rows, cols


def _flip_columns(cols, seed):
    """Reverse the column order of each image's window with probability 1/2."""
    flip = tf.random.stateless_uniform([tf.shape(cols)[0], 1], seed) < 0.5
    return tf.where(flip, tf.reverse(cols, axis=[1]), cols)


def _identity_indices(shape):
    rows = tf.tile(tf.range(shape[1])[None], [shape[0], 1])
    cols = tf.tile(tf.range(shape[2])[None], [shape[0], 1])
    return rows, cols


def random_crop(images, seed, *, padding: int = 4):
    """Pad each image by ``padding`` pixels (reflecting), then crop a random window.

    The result keeps the input's shape: each image is shifted by up to ``padding``
    pixels in each direction, with mirrored content filling in. The padded image is
    never built: the crop gathers pixels through reflected indices.
    """
    rows, cols = _crop_indices(tf.shape(images), seed, padding)
    return _gather_pixels(images, rows, cols)


def random_flip(images, seed):
    """Mirror each image left-right with probability 1/2."""
    rows, cols = _identity_indices(tf.shape(images))
    return _gather_pixels(images, rows, _flip_columns(cols, seed))


def cutout(images, seed, *, size: int = 8):
    """Zero one ``size x size`` square per image, centred anywhere in the image.

    As in DeVries & Taylor (2017, arXiv 1708.04552), the square may hang over the
    border, where it is clipped; 8 pixels was their best size for CIFAR-100.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    centre = tf.random.stateless_uniform([batch, 2], seed)
    top = tf.cast(centre[:, :1] * tf.cast(height, tf.float32), tf.int32) - size // 2
    left = tf.cast(centre[:, 1:] * tf.cast(width, tf.float32), tf.int32) - size // 2
    rows = tf.range(height)[None] - top
    cols = tf.range(width)[None] - left
    in_rows = tf.cast((rows >= 0) & (rows < size), images.dtype)
    in_cols = tf.cast((cols >= 0) & (cols < size), images.dtype)
    # A multiply by a 0/1 mask is cheaper than tf.where over the whole batch.
    return images * (1 - in_rows[:, :, None, None] * in_cols[:, None, :, None])


def augment_batch(
    images, seed, *, padding: int = 4, flip: bool = True, cutout_size: int = 8
):
    """Random crop, then flip, then cutout; ``padding=0`` or ``cutout_size=0`` skip.

    ``seed`` is a stateless seed (int tensor of shape ``[2]``): the same seed gives the
    same batch. Crop and flip share one gather; the result equals
    ``cutout(random_flip(random_crop(images, s1), s2), s3)`` for the seeds
    ``s1, s2, s3`` that ``tf.random.experimental.stateless_split(seed, 3)`` gives.
    """
    crop_seed, flip_seed, cutout_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3)
    )
    shape = tf.shape(images)
    if padding or flip:
        rows, cols = (
            _crop_indices(shape, crop_seed, padding)
            if padding
            else _identity_indices(shape)
        )
        if flip:
            cols = _flip_columns(cols, flip_seed)
        images = _gather_pixels(images, rows, cols)
    if cutout_size:
        images = cutout(images, cutout_seed, size=cutout_size)
    return images


def per_replica_seed(seed):
    """``seed`` made different on each replica of a ``tf.distribute`` strategy.

    A random layer's Keras ``SeedGenerator`` advances in lockstep on every replica,
    so under ``MirroredStrategy`` (or on a TPU) each device would draw the same
    numbers, and image ``i`` of every device's share would get the same crop, flip
    and cutout. Folding the replica's index into the stateless seed makes the draws
    independent; with one replica the seed is returned unchanged.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return seed
    return tf.random.experimental.stateless_fold_in(
        seed, context.replica_id_in_sync_group
    )


def _check_arguments(padding, cutout_size):
    if not isinstance(padding, int) or not 0 <= padding < 32:
        raise ValueError(f"Augment: padding={padding!r}; use an int from 0 to 31.")
    if not isinstance(cutout_size, int) or not 0 <= cutout_size <= 32:
        raise ValueError(
            f"Augment: cutout_size={cutout_size!r}; use an int from 0 to 32."
        )


@keras.saving.register_keras_serializable(package="cifar_helpers")
class Augment(keras.layers.Layer):
    """Keras layer: :func:`augment_batch` during training, the identity otherwise.

    Put it first in a model so augmentation runs on the accelerator. It casts its
    input (uint8 pixels, say) to the layer's compute dtype, so it outputs floats in
    0..255 either way; normalisation comes after it, inside the model.
    """

    def __init__(self, padding=4, flip=True, cutout_size=8, seed=None, **kwargs):
        super().__init__(**kwargs)
        _check_arguments(padding, cutout_size)
        self.padding = padding
        self.flip = flip
        self.cutout_size = cutout_size
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.input_spec = keras.layers.InputSpec(ndim=4)  # a batch B x H x W x C

    def call(self, images, training=None):
        images = keras.ops.cast(images, self.compute_dtype)
        if not training:
            return images
        seed = per_replica_seed(
            keras.random.randint([2], 0, 2**31 - 1, seed=self.seed_generator)
        )
        return augment_batch(
            images,
            seed,
            padding=self.padding,
            flip=self.flip,
            cutout_size=self.cutout_size,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "padding": self.padding,
            "flip": self.flip,
            "cutout_size": self.cutout_size,
            "seed": self.seed,
        }
