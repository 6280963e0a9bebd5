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


class _BatchAugmentation(keras.layers.Layer):
    """What the series' augmentation layers share: a batch ``B x H x W x C`` in
    (uint8 pixels, say), cast to the layer's compute dtype, so floats in 0..255
    come out; the identity at inference; in training, :meth:`augment` with a fresh
    stateless seed per call, different on each replica (:func:`per_replica_seed`),
    drawn from a Keras ``SeedGenerator`` (``seed``: an int for reproducible draws).
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.input_spec = keras.layers.InputSpec(ndim=4)  # a batch B x H x W x C

    def augment(self, images, seed):
        """The augmented batch, for a stateless ``seed`` (shape ``[2]``)."""
        raise NotImplementedError

    def call(self, images, training=None):
        images = keras.ops.cast(images, self.compute_dtype)
        if not training:
            return images
        seed = per_replica_seed(
            keras.random.randint([2], 0, 2**31 - 1, seed=self.seed_generator)
        )
        return self.augment(images, seed)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="cifar_helpers")
class Augment(_BatchAugmentation):
    """Keras layer: :func:`augment_batch` during training, the identity otherwise.

    Put it first in a model so augmentation runs on the accelerator. It casts its
    input (uint8 pixels, say) to the layer's compute dtype, so it outputs floats in
    0..255 either way; normalisation comes after it, inside the model.
    """

    def __init__(self, padding=4, flip=True, cutout_size=8, seed=None, **kwargs):
        super().__init__(seed, **kwargs)
        _check_arguments(padding, cutout_size)
        self.padding = padding
        self.flip = flip
        self.cutout_size = cutout_size

    def augment(self, images, seed):
        return augment_batch(
            images,
            seed,
            padding=self.padding,
            flip=self.flip,
            cutout_size=self.cutout_size,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "padding": self.padding,
            "flip": self.flip,
            "cutout_size": self.cutout_size,
        }


# The original series' augmentation ---------------------------------------------
#
# TrainResNet.py augmented each batch of 250 float32 images with imgaug 0.2.8:
#
#     iaa.SomeOf((0, None), [
#         iaa.Crop(px=(0, 12)),
#         iaa.Fliplr(0.5),
#         iaa.CoarseDropout((0.0, 0.20), size_percent=(0.02, 0.25), per_channel=0.5),
#     ], random_order=True)
#
# The functions below rebuild each imgaug behaviour as batched TensorFlow ops.


def some_of(batch, count: int, seed):
    """Which of ``count`` augmenters each image gets (``batch x count`` booleans),
    as imgaug's ``SomeOf((0, None), ...)`` draws them: a number ``n`` from 0 to
    ``count`` (all equally likely) per image, then ``n`` of the augmenters chosen
    uniformly at random. Each augmenter is active for half the images on average."""
    count_seed, pick_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    chosen = tf.random.stateless_uniform(
        [batch, 1], count_seed, minval=0, maxval=count + 1, dtype=tf.int32
    )
    # A random ranking of the augmenters per image; the n ranked first are active.
    priorities = tf.random.stateless_uniform([batch, count], pick_seed)
    rank = tf.argsort(tf.argsort(priorities, axis=1), axis=1)
    return rank < chosen


def area_enlarge_weights(start, length, size: int):
    """``B x size x size`` weights that enlarge the window ``[start, start + length)``
    of an axis of ``size`` pixels back to ``size`` pixels, as OpenCV's
    ``resize(..., INTER_AREA)`` does when it enlarges (``start``, ``length``: int
    tensors of shape ``[B]``, ``1 <= length <= size``).

    Output pixel ``i`` covers the source interval ``[i L / size, (i + 1) L / size)``
    of the window (``L = length``), shorter than one source pixel: it takes source
    pixel ``s = floor(i L / size)``, blended with pixel ``s + 1`` by the fraction of
    the interval that lies beyond ``s + 1`` (OpenCV's "area mode" weights). A window
    as long as the axis gives the identity; one of half its length, each pixel twice.
    """
    i = tf.range(size)[None, :]
    start, length = start[:, None], length[:, None]
    source = (i * length) // size
    beyond = tf.maximum((i + 1) * length - (source + 1) * size, 0)
    blend = tf.cast(beyond, tf.float32) / tf.cast(length, tf.float32)
    first = tf.one_hot(start + source, size) * (1.0 - blend)[..., None]
    # When blend is 0, the second index may fall outside the window (or the axis,
    # where one_hot gives zeros); its weight is 0 either way.
    return first + tf.one_hot(start + source + 1, size) * blend[..., None]


def crop_and_enlarge(images, top, right, bottom, left):
    """Cut ``top``/``right``/``bottom``/``left`` pixels (int tensors, one per image)
    off each image and enlarge what is left back to the full size with
    :func:`area_enlarge_weights`: imgaug's ``Crop(keep_size=True)``. Its resize
    (``imresize_single_image`` without an interpolation) chooses OpenCV's
    ``INTER_AREA`` whenever it enlarges, which is always the case after a crop; the
    weights here reproduce that rule exactly. Floats in, the same floats out."""
    shape = tf.shape(images)
    height, width = images.shape[1] or shape[1], images.shape[2] or shape[2]
    top, right, bottom, left = (
        tf.cast(side, tf.int32) for side in (top, right, bottom, left)
    )
    rows = area_enlarge_weights(top, height - top - bottom, height)
    cols = area_enlarge_weights(left, width - left - right, width)
    rows, cols = tf.cast(rows, images.dtype), tf.cast(cols, images.dtype)
    images = tf.einsum("bip,bpqc->biqc", rows, images)
    return tf.einsum("bjq,biqc->bijc", cols, images)


def original_crop(images, seed, *, px: int = 12):
    """imgaug's ``Crop(px=(0, px))``: cut 0 to ``px`` pixels (each equally likely)
    off each side of each image, the four sides drawn independently, then enlarge
    the rest back to the image's size (:func:`crop_and_enlarge`)."""
    amounts = tf.random.stateless_uniform(
        [tf.shape(images)[0], 4], seed, minval=0, maxval=px + 1, dtype=tf.int32
    )
    top, right, bottom, left = tf.unstack(amounts, axis=1)
    return crop_and_enlarge(images, top, right, bottom, left)


def flip_some(images, seed, *, p: float = 0.5):
    """imgaug's ``Fliplr(p)``: mirror each image left-right with probability ``p``."""
    flip = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed) < p
    return tf.where(flip, tf.reverse(images, axis=[2]), images)


def nearest_cells(cells, size: int):
    """``B x size`` indices: which of ``cells`` (one count per image) each of
    ``size`` pixels falls in when OpenCV's ``INTER_NEAREST`` enlarges ``cells``
    pixels to ``size``: ``min(floor(i cells / size), cells - 1)``."""
    i = tf.range(size)[None, :]
    return tf.minimum((i * cells[:, None]) // size, cells[:, None] - 1)


def coarse_dropout_mask(
    shape,
    seed,
    *,
    p=(0.0, 0.2),
    size_percent=(0.02, 0.25),
    per_channel: float = 0.5,
    min_size: int = 4,
):
    """The keep masks (float 0/1, ``shape`` = ``B x H x W x C``) of imgaug's
    ``CoarseDropout(p, size_percent=..., per_channel=..., min_size=...)``, and the
    mask resolution of each image (``B x 2`` cells: rows, columns).

    Per image: a drop probability drawn uniformly from ``p``; a grid of ``h x w``
    cells, with ``h = max(int(H u), min_size)`` and ``w = max(int(W v),
    min_size)`` for ``u`` and ``v`` drawn independently and uniformly from
    ``size_percent`` (for 32-pixel images: 4 to 7 cells a side, 4 most often, as
    ``int(32 u) < 4`` for most of the range); each cell dropped with the drop
    probability; the grid enlarged to ``H x W`` by nearest neighbour
    (:func:`nearest_cells`), so each cell becomes a rectangle of 4 to 8 pixels a
    side. For a share ``per_channel`` of the images each channel has its own grid
    of the same size; the others share one.
    """
    batch, height, width = shape[0], shape[1], shape[2]
    drop_seed, size_seed, cell_seed, channel_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4)
    )
    drop = tf.random.stateless_uniform(
        [batch, 1, 1, 1], drop_seed, minval=p[0], maxval=p[1]
    )
    percents = tf.random.stateless_uniform(
        [batch, 2], size_seed, minval=size_percent[0], maxval=size_percent[1]
    )
    sides = tf.cast(tf.stack([height, width]), tf.float32)
    cells = tf.maximum(tf.cast(percents * sides, tf.int32), min_size)
    # One draw per cell: cell (r, c) of image b is read at pixel (r, c) of a
    # full-size noise map, of which only the top-left h x w corner is used.
    kept = tf.random.stateless_uniform(shape, cell_seed) >= drop
    own = tf.random.stateless_uniform([batch, 1, 1, 1], channel_seed) < per_channel
    kept = tf.where(own, kept, kept[..., :1])
    rows = nearest_cells(cells[:, 0], height)
    cols = nearest_cells(cells[:, 1], width)
    return _gather_pixels(tf.cast(kept, tf.float32), rows, cols), cells


def coarse_dropout(images, seed, **options):
    """imgaug's ``CoarseDropout``: zero rectangles of each image, with the masks of
    :func:`coarse_dropout_mask` (``options`` are its keyword arguments). The
    expected share of zeroed values is the mean drop probability (0.1 for the
    original's ``p=(0.0, 0.2)``)."""
    shape = tf.shape(images)
    shape = [
        shape[0],
        images.shape[1] or shape[1],
        images.shape[2] or shape[2],
        shape[3],
    ]
    mask, _ = coarse_dropout_mask(shape, seed, **options)
    return images * tf.cast(mask, images.dtype)


ORIGINAL_AUGMENTERS = ("crop", "flip", "coarse_dropout")


def original_augment_batch(
    images,
    seed,
    *,
    crop_px: int = 12,
    flip: float = 0.5,
    dropout=(0.0, 0.2),
    size_percent=(0.02, 0.25),
    per_channel: float = 0.5,
    min_size: int = 4,
):
    """The original series' augmentation of one batch (float images in, the same
    floats out; integers are cast to float32): imgaug's ``SomeOf((0, None), [Crop,
    Fliplr, CoarseDropout], random_order=True)``.

    Each image gets a random number (0 to 3) of the three augmenters
    (:func:`some_of`); they run in one random order per batch, the same for every
    image of the batch, as imgaug drew one order per call: :func:`original_crop`,
    :func:`flip_some` and :func:`coarse_dropout`, each applied to the images for
    which it is active. ``crop_px=0`` makes the crop the identity.
    """
    if images.dtype.is_integer:
        images = tf.cast(images, tf.float32)
    order_seed, active_seed, crop_seed, flip_seed, drop_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 5)
    )
    active = some_of(tf.shape(images)[0], 3, active_seed)
    augmenters = (
        lambda x: original_crop(x, crop_seed, px=crop_px),
        lambda x: flip_some(x, flip_seed, p=flip),
        lambda x: coarse_dropout(
            x,
            drop_seed,
            p=dropout,
            size_percent=size_percent,
            per_channel=per_channel,
            min_size=min_size,
        ),
    )
    order = tf.argsort(tf.random.stateless_uniform([3], order_seed))

    def apply(index, x):
        where = active[:, index, None, None, None]
        return tf.where(where, augmenters[index](x), x)

    for position in range(3):
        images = tf.switch_case(
            order[position],
            [lambda i=i, x=images: apply(i, x) for i in range(3)],
        )
    return images


def _check_pair(name, value, low, high):
    ok = (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, int | float) for v in value)
        and low <= value[0] <= value[1] <= high
    )
    if not ok:
        raise ValueError(
            f"OriginalAugment: {name}={value!r}; use two numbers (a, b) with "
            f"{low} <= a <= b <= {high}."
        )
    return tuple(float(v) for v in value)


@keras.saving.register_keras_serializable(package="cifar_helpers")
class OriginalAugment(_BatchAugmentation):
    """Keras layer: the original series' imgaug augmentation
    (:func:`original_augment_batch`) during training, the identity otherwise.

    Like :class:`Augment`, it comes first in a model, casts its input (uint8
    pixels) to the layer's compute dtype and outputs floats in 0..255. The
    arguments are imgaug's: ``crop_px`` (``Crop(px=(0, crop_px))``), ``flip``
    (``Fliplr(flip)``), and ``dropout``, ``size_percent``, ``per_channel`` and
    ``min_size`` (``CoarseDropout``); the defaults are ``TrainResNet.py``'s.
    """

    def __init__(
        self,
        crop_px=12,
        flip=0.5,
        dropout=(0.0, 0.2),
        size_percent=(0.02, 0.25),
        per_channel=0.5,
        min_size=4,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed, **kwargs)
        if not isinstance(crop_px, int) or not 0 <= crop_px < 16:
            raise ValueError(
                f"OriginalAugment: crop_px={crop_px!r}; use an int from 0 to 15."
            )
        for name, value in (("flip", flip), ("per_channel", per_channel)):
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(
                    f"OriginalAugment: {name}={value!r}; use a probability in [0, 1]."
                )
        if not isinstance(min_size, int) or min_size < 1:
            raise ValueError(
                f"OriginalAugment: min_size={min_size!r}; use an int of at least 1."
            )
        self.crop_px, self.flip, self.per_channel = crop_px, flip, per_channel
        self.dropout = _check_pair("dropout", dropout, 0, 1)
        self.size_percent = _check_pair("size_percent", size_percent, 0, 1)
        self.min_size = min_size

    def augment(self, images, seed):
        return original_augment_batch(
            images,
            seed,
            crop_px=self.crop_px,
            flip=self.flip,
            dropout=self.dropout,
            size_percent=self.size_percent,
            per_channel=self.per_channel,
            min_size=self.min_size,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "crop_px": self.crop_px,
            "flip": self.flip,
            "dropout": list(self.dropout),
            "size_percent": list(self.size_percent),
            "per_channel": self.per_channel,
            "min_size": self.min_size,
        }
