"""Where a classifier fails: accuracies, confusions, calibration, test-time flips.

Plain NumPy on predicted class probabilities (``N x classes``) and integer labels, so
every number can be checked by hand; :func:`predict` and :func:`flip_predict` get the
probabilities from a model. Introduced in notebook 06.
"""

import keras
import numpy as np


def _check(probabilities, labels):
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or labels.shape != (len(probabilities),):
        raise ValueError(
            f"probabilities {probabilities.shape} and labels {labels.shape}: give an "
            "N x classes array of probabilities and N integer labels."
        )
    return probabilities, labels


def top_k_accuracy(probabilities, labels, k: int = 1) -> float:
    """Share of images whose label is among the ``k`` most probable classes
    (ties broken towards the lower class index, as ``np.argsort`` is stable)."""
    probabilities, labels = _check(probabilities, labels)
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def per_class_accuracy(predicted, labels, classes: int) -> np.ndarray:
    """Top-1 accuracy of each class (``classes`` floats; NaN for a class without
    images). ``predicted`` holds class indices, like ``labels``."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    totals = np.bincount(labels, minlength=classes)
    right = np.bincount(labels[predicted == labels], minlength=classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, right / np.maximum(totals, 1), np.nan)


def superclass_accuracy(predicted, labels, fine_to_coarse) -> float:
    """Share of images whose predicted fine class lies in the right superclass."""
    mapping = np.asarray(fine_to_coarse)
    return float(np.mean(mapping[np.asarray(predicted)] == mapping[np.asarray(labels)]))


def mistakes_in_right_superclass(predicted, labels, fine_to_coarse) -> float:
    """Of the wrong fine-class predictions, the share that still names a class of
    the right superclass (a maple for an oak: both "trees"); NaN without mistakes."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    wrong = predicted != labels
    if not wrong.any():
        return float("nan")
    mapping = np.asarray(fine_to_coarse)
    return float(np.mean(mapping[predicted[wrong]] == mapping[labels[wrong]]))


def confusion_matrix(predicted, labels, classes: int) -> np.ndarray:
    """``classes x classes`` counts: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    return matrix


def superclass_confusion(predicted, labels, fine_to_coarse) -> np.ndarray:
    """The 20 x 20 (superclasses x superclasses) confusion of fine predictions."""
    mapping = np.asarray(fine_to_coarse)
    return confusion_matrix(
        mapping[np.asarray(predicted)], mapping[np.asarray(labels)], mapping.max() + 1
    )


def most_confused_pairs(matrix, count: int = 10):
    """The ``count`` largest off-diagonal cells of a confusion matrix, as
    ``(true class, predicted class, images)``, most first (ties: lower index first)."""
    matrix = np.asarray(matrix).copy()
    np.fill_diagonal(matrix, 0)
    order = np.argsort(-matrix, axis=None, kind="stable")[:count]
    rows, cols = np.unravel_index(order, matrix.shape)
    return [
        (int(r), int(c), int(matrix[r, c]))
        for r, c in zip(rows, cols, strict=True)
        if matrix[r, c] > 0
    ]


def reliability(probabilities, labels, bins: int = 15) -> dict:
    """Calibration of the top-1 confidence in ``bins`` equal-width bins over (0, 1].

    Returns ``confidence`` and ``accuracy`` (mean per bin, NaN where a bin is empty),
    ``counts``, ``edges`` and ``ece``: the expected calibration error, the
    count-weighted mean of ``|accuracy - confidence|`` over the bins (Guo et al.,
    2017). A perfectly calibrated model has an ECE of 0.
    """
    probabilities, labels = _check(probabilities, labels)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds confidences in (edges[i], edges[i + 1]]; a confidence of 0 goes
    # to the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, bins) / counts
        mean_accuracy = np.bincount(index, correct.astype(float), bins) / counts
    gaps = np.abs(np.nan_to_num(mean_accuracy) - np.nan_to_num(mean_confidence))
    return {
        "confidence": mean_confidence,
        "accuracy": mean_accuracy,
        "counts": counts,
        "edges": edges,
        "ece": float(np.sum(counts * gaps) / len(labels)),
    }


def predict(model, images, *, batch_size: int = 500) -> np.ndarray:
    """Class probabilities of ``model`` for uint8 ``images`` (``N x 32 x 32 x 3``),
    as float32 ``N x classes``, at inference (no augmentation, no DropBlock).
    Other shapes or dtypes get a ``ValueError`` that says how to fix them."""
    from cifar_helpers.models import check_images

    images = check_images(images)
    return np.asarray(model.predict(images, batch_size=batch_size, verbose=0))


def flip_predict(model, images, *, batch_size: int = 500) -> np.ndarray:
    """Test-time augmentation: the mean of the probabilities of each image and of
    its mirror image (flipped left to right). Report its accuracy beside, never
    instead of, the single-view accuracy of :func:`predict`: it costs two forward
    passes per image."""
    images = np.asarray(images)
    return (
        predict(model, images, batch_size=batch_size)
        + predict(model, images[:, :, ::-1], batch_size=batch_size)
    ) / 2


def _last_feature_map(model):
    """The last layer whose output is a 4-D feature map (``N x H x W x C``)."""
    for layer in reversed(model.layers):
        if len(layer.output.shape) == 4:
            return layer.name
    raise ValueError(f"model {model.name!r} has no layer with a 4-D feature map.")


def _logits(model):
    """The scores before the final softmax (the model's output if it has none)."""
    last = model.layers[-1]
    if getattr(last, "activation", None) is keras.activations.softmax and (
        type(last) is keras.layers.Activation
    ):
        return last.input
    return model.output


def grad_cam(model, images, *, classes=None, layer=None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al., 2017): where in each image the evidence for a
    class lies, as float32 ``N x H x W`` maps in [0, 1] (each divided by its maximum;
    all zeros where nothing speaks for the class).

    For each image, the class's score before the softmax (its logit) is
    differentiated with respect to ``layer``'s feature maps (default: the last
    layer with a 4-D output, the network's most abstract map); each channel's
    weight is its mean gradient, and the map is the ReLU of the weighted sum of the
    channels, resized bilinearly from the layer's resolution to the image's.
    ``images``: uint8 ``N x H x W x 3``; ``classes``: one class per image, default
    the predicted one. Runs at inference (no augmentation, no DropBlock).
    """
    import tensorflow as tf

    images = np.asarray(images)
    probe = keras.Model(
        model.input,
        [model.get_layer(layer or _last_feature_map(model)).output, _logits(model)],
    )
    inputs = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        features, logits = probe(inputs, training=False)
        if classes is None:
            classes = tf.argmax(logits, axis=1)
        score = tf.gather(logits, tf.cast(classes, tf.int32), axis=1, batch_dims=1)
    gradients = tf.cast(tape.gradient(score, features), tf.float32)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    maps = tf.nn.relu(tf.reduce_sum(weights * tf.cast(features, tf.float32), axis=-1))
    maps = tf.image.resize(maps[..., None], images.shape[1:3])[..., 0]
    peak = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(maps, peak).numpy()
