"""From arrays to batches: the ``tf.data`` pipelines that feed training and
evaluation, and how fast they deliver.

:func:`make_dataset` caches the uint8 arrays, shuffles training data afresh every
epoch, batches, optionally augments whole batches, and prefetches;
:func:`split_datasets` makes the two datasets that
:func:`cifar_helpers.training.fit` takes from a split with a validation part, with
validation batches of :func:`eval_batch_size`. Introduced in notebook 01
(:func:`eval_batch_size` in notebook 05, :func:`split_datasets` in notebook 06).
"""

import time
from collections.abc import Callable

import numpy as np


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    training: bool,
    seed: int = 0,
    augment: Callable | None = None,
    reshuffle: bool = True,
):
    """A ``tf.data`` pipeline of ``(uint8 images, int labels)`` batches.

    The uint8 arrays are cached as they are (4x smaller than floats). For training:
    a seeded shuffle that changes every epoch (with ``reshuffle=False``, one
    shuffle whose order every epoch repeats, as the original series trained),
    whole batches only (``drop_remainder``,
    so a compiled step always sees one shape), then ``augment(images, seed)`` mapped
    over each batch with a fresh stateless seed (shape ``[2]``) per batch. Evaluation
    keeps order and the last partial batch. Both prefetch.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, labels)).cache()
    if training:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=reshuffle)
    ds = ds.batch(batch_size, drop_remainder=training)
    if augment is not None:
        if not training:
            raise ValueError(
                "make_dataset: augment only training data (training=True)."
            )
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, seeds.batch(2)).map(
            lambda batch, s: (augment(batch[0], s), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def images_per_second(dataset, *, batches: int = 100, warmup: int = 10) -> float:
    """Images per second that ``dataset`` delivers, timed after ``warmup`` batches.

    Iterates the pipeline alone (no model), so it measures what the host can feed.
    The dataset is repeated, so small datasets can be timed over many batches.
    """
    iterator = iter(dataset.repeat())
    for _ in range(warmup):
        next(iterator)
    count, start = 0, time.perf_counter()
    for _ in range(batches):
        count += int(next(iterator)[0].shape[0])
    return count / (time.perf_counter() - start)


def split_datasets(split, batch_size: int, replicas: int = 1, *, reshuffle=True):
    """``(train, validation)`` datasets of a split with a validation part (see
    :func:`cifar_helpers.data.with_validation_split`), as
    :func:`cifar_helpers.training.fit` takes them:
    shuffled full training batches of ``batch_size`` (``reshuffle``: see
    :func:`make_dataset`), and validation batches of :func:`eval_batch_size`."""
    train = make_dataset(
        split.x_train,
        split.y_train,
        batch_size=batch_size,
        training=True,
        reshuffle=reshuffle,
    )
    val_batch = eval_batch_size(len(split.y_val), batch_size, replicas)
    val = make_dataset(split.x_val, split.y_val, batch_size=val_batch, training=False)
    return train, val


def eval_batch_size(count: int, preferred: int, replicas: int = 1) -> int:
    """The largest batch size up to ``preferred`` that splits ``count`` images into
    whole batches, and splits evenly across ``replicas`` devices, so that a
    compiled (XLA) evaluation sees one batch shape on every device. Falls back to
    ``preferred`` (one smaller last batch, one extra compilation) when no such
    size of at least ``preferred // 4`` exists."""
    for size in range(min(preferred, count), max(1, preferred // 4) - 1, -1):
        if count % size == 0 and size % replicas == 0:
            return size
    return preferred
