"""The series' models, built from :mod:`cifar_helpers.blocks`.

Every model takes raw ``uint8`` images (``N x 32 x 32 x 3``) and returns class
probabilities (``N x 100``, float32 under any precision policy), so a saved model
needs no preprocessing outside it. Introduced in notebook 02 (``baseline_cnn``);
``seed_resnet`` is the subject of notebook 04.
"""

import keras

from cifar_helpers.augment import Augment
from cifar_helpers.blocks import (
    ORIGINAL_MOMENTUM,
    cnn_block,
    dense_block,
    residual_block,
)

ORIGINAL_WIDTHS = (128, 256, 512, 1024)
BASELINE_FILTERS = (64, 128, 256, 512)
BASELINE_KERNELS = (7, 5, 3, 3)


def _check_sizes(**sizes):
    """Each size, or each entry of a tuple of sizes, must be a whole number >= 1."""
    for name, value in sizes.items():
        for entry in value if isinstance(value, tuple | list) else (value,):
            if not isinstance(entry, int) or isinstance(entry, bool) or entry < 1:
                raise ValueError(f"{name}={entry!r}: use a whole number of at least 1.")


def _scaled_inputs(augment: bool):
    """uint8 image input, optional in-model augmentation, then the original's
    scaling of pixels to [-1, 1]."""
    inputs = keras.Input((32, 32, 3), dtype="uint8", name="images")
    x = Augment(name="augment")(inputs) if augment else inputs
    return inputs, keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_minus1_1")(x)


def _head(x, hidden: int, classes: int, dropout: float, momentum: float):
    """Flatten, two dense blocks, a dense + batch-norm output and a float32 softmax."""
    x = keras.layers.Flatten(name="flatten")(x)
    for index in (1, 2):
        x = dense_block(
            x,
            hidden,
            dropout=dropout,
            momentum=momentum,
            name=f"fully_connected{index}",
        )
    x = dense_block(
        x, classes, dropout=0.0, activation=False, momentum=momentum, name="logits"
    )
    return keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)


def baseline_cnn(
    *,
    filters=BASELINE_FILTERS,
    kernels=BASELINE_KERNELS,
    hidden: int = 2048,
    classes: int = 100,
    conv_dropout: float = 0.15,
    dropout: float = 0.5,
    augment: bool = True,
    bn_momentum: float = ORIGINAL_MOMENTUM,
    name: str = "baseline_cnn",
):
    """The original series' first CNN (part 2), layer for layer.

    Four :func:`~cifar_helpers.blocks.cnn_block`\\ s of ``filters`` filters with
    ``kernels`` kernels (each halving the map: 32 to 2 pixels), dropout
    ``conv_dropout`` after each (the original kept 85 %), then the same head as
    :func:`seed_resnet` with ``hidden``-unit dense layers. ``bn_momentum`` as in
    :func:`seed_resnet`.
    """
    if len(filters) != 4 or len(kernels) != 4:
        raise ValueError(
            f"filters={filters!r}, kernels={kernels!r}: give four of each, like "
            f"{BASELINE_FILTERS} and {BASELINE_KERNELS}."
        )
    _check_sizes(hidden=hidden, classes=classes, filters=filters, kernels=kernels)
    inputs, x = _scaled_inputs(augment)
    for index, (width, kernel) in enumerate(zip(filters, kernels, strict=True), 1):
        x = cnn_block(
            x,
            width,
            kernel,
            dropout=conv_dropout,
            momentum=bn_momentum,
            name=f"conv{index}",
        )
    outputs = _head(x, hidden, classes, dropout, bn_momentum)
    return keras.Model(inputs, outputs, name=name)


def seed_resnet(
    *,
    widths=ORIGINAL_WIDTHS,
    hidden: int = 4096,
    classes: int = 100,
    block_size: int = 5,
    dropout: float = 0.5,
    augment: bool = True,
    bn_momentum: float = ORIGINAL_MOMENTUM,
    name: str = "seed_resnet",
):
    """The original part-7 residual network, layer for layer.

    Inputs scaled to [-1, 1] as the original did; four :func:`residual_block`\\ s of
    ``widths`` filters (each halving the map: 32, 16, 8, 4, then 2 pixels);
    flatten; two ``hidden``-unit dense blocks with batch norm and dropout; a
    ``classes``-way output (dense without bias, then batch norm, as the original)
    and a float32 softmax. DropBlocks start at keep_prob 1, for
    :class:`~cifar_helpers.dropblock.KeepProbSchedule` to lower. At full size
    (the defaults) it has 77,791,822 trainable parameters; smaller ``widths`` and
    ``hidden`` build a narrow copy for smoke runs. With ``augment`` (the default,
    as the original trained with augmentation) an :class:`~cifar_helpers.augment.
    Augment` layer (crop, flip, cutout; the identity at inference) comes first.
    ``bn_momentum`` is the original's 0.997; smoke runs, too short for such slow
    running averages, pass a lower one (see :func:`~cifar_helpers.blocks.batch_norm`).
    """
    if len(widths) != 4:
        raise ValueError(
            f"widths={widths!r}: give four stage widths, like (128, 256, 512, 1024)."
        )
    _check_sizes(hidden=hidden, classes=classes, widths=widths)
    inputs, x = _scaled_inputs(augment)
    for index, filters in enumerate(widths, start=1):
        x = residual_block(
            x,
            filters,
            block_size=block_size,
            momentum=bn_momentum,
            name=f"residual{index}",
        )
    outputs = _head(x, hidden, classes, dropout, bn_momentum)
    return keras.Model(inputs, outputs, name=name)


def macs_per_image(model) -> int:
    """Multiply-accumulates of one image's forward pass through ``model``.

    Counts the layers that dominate: ``Conv2D`` (output pixels x kernel area x input
    channels x filters) and ``Dense`` (inputs x units), nested models included;
    batch norm, activations, pooling and DropBlock add comparatively little and are
    left out. A training step costs about three times this (forward, and the two
    products of the backward pass).
    """
    total = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, filters = layer.output.shape
            kernel_h, kernel_w = layer.kernel_size
            total += (
                height * width * kernel_h * kernel_w * layer.input.shape[-1] * filters
            )
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)
