"""The series' models, built from :mod:`cifar_helpers.blocks`, and their catalogue.

Every model takes raw ``uint8`` images (``N x 32 x 32 x 3``) and returns class
probabilities (``N x 100``, float32 under any precision policy), so a saved model
needs no preprocessing outside it. Introduced in notebook 02 (``baseline_cnn``);
``original_resnet`` is the subject of notebook 04, ``resnet9`` and
``preact_resnet18`` (the modern residual networks) of notebook 05.

:data:`CATALOGUE` maps each name to a :class:`ModelSpec`: its builder, the recipe
it trains with, its precision rule and the narrow sizes of a smoke run. The
command line, the notebooks, the tests and the benchmarks all read it.
"""

import dataclasses
import re
import warnings
from collections.abc import Callable

import keras
import numpy as np

from cifar_helpers._moved import REMOVED_IN, moved
from cifar_helpers.augment import Augment, OriginalAugment
from cifar_helpers.blocks import (
    MODERN_MOMENTUM,
    ORIGINAL_MOMENTUM,
    batch_norm,
    cnn_block,
    conv_bn_relu,
    dense_block,
    he_conv,
    preact_block,
    residual_block,
    resnet9_residual,
)
from cifar_helpers.dropblock import DropBlock
from cifar_helpers.recipes import MODERN, ORIGINAL, BaseRecipe
from cifar_helpers.sharpen import Sharpen

ORIGINAL_WIDTHS = (128, 256, 512, 1024)
BASELINE_FILTERS = (64, 128, 256, 512)
BASELINE_KERNELS = (7, 5, 3, 3)
MODERN_WIDTHS = (64, 128, 256, 512)


def check_images(images) -> np.ndarray:
    """``images`` as the series' models take them, uint8 ``N x 32 x 32 x 3``, or a
    ``ValueError`` that says what is wrong and how to fix it. (A Keras model would
    cast floats in [0, 1] to uint8 silently: all zeros.)"""
    images = np.asarray(images)
    if images.shape == (32, 32, 3):
        raise ValueError(
            "images of shape (32, 32, 3): that is one image; give a batch, "
            "images[None] (shape (1, 32, 32, 3))."
        )
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise ValueError(
            f"images of shape {images.shape}: the models take N x 32 x 32 x 3 RGB "
            "images; read files with inference.read_image, which resizes them."
        )
    if images.dtype != np.uint8:
        hint = (
            " (values in [0, 1]: multiply by 255 first)"
            if images.size
            and np.issubdtype(images.dtype, np.floating)
            and images.max() <= 1
            else ""
        )
        raise ValueError(
            f"images of dtype {images.dtype}: the models take uint8 pixels 0..255; "
            f"convert with images.astype(np.uint8){hint}."
        )
    return images


def _check_sizes(**sizes):
    """Each size, or each entry of a tuple of sizes, must be a whole number >= 1."""
    for name, value in sizes.items():
        for entry in value if isinstance(value, tuple | list) else (value,):
            if not isinstance(entry, int) or isinstance(entry, bool) or entry < 1:
                raise ValueError(f"{name}={entry!r}: use a whole number of at least 1.")


AUGMENTATIONS = {True: Augment, "original": OriginalAugment}


def _scaled_inputs(augment, sharpen: bool = False):
    """uint8 image input, the original's sharpening (when ``sharpen``), in-model
    augmentation (``augment``: True for :class:`~cifar_helpers.augment.Augment`,
    ``"original"`` for :class:`~cifar_helpers.augment.OriginalAugment`, False for
    none), then the original's scaling of pixels to [-1, 1]."""
    if augment not in (False, None, *AUGMENTATIONS):
        raise ValueError(
            f"augment={augment!r}: use True (crop, flip, cutout), 'original' (the "
            "original's imgaug augmentation) or False."
        )
    inputs = keras.Input((32, 32, 3), dtype="uint8", name="images")
    x = Sharpen(name="sharpen")(inputs) if sharpen else inputs
    if augment:
        x = AUGMENTATIONS[augment](name="augment")(x)
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
    :func:`original_resnet` with ``hidden``-unit dense layers. ``bn_momentum`` as in
    :func:`original_resnet`.
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


def original_resnet(
    *,
    widths=ORIGINAL_WIDTHS,
    hidden: int = 4096,
    classes: int = 100,
    block_size: int = 5,
    dropout: float = 0.5,
    augment: bool | str = True,
    bn_momentum: float = ORIGINAL_MOMENTUM,
    sharpen: bool = False,
    dropblock_gamma: str = "exact",
    dropblock_oversize: str = "clip",
    name: str = "original_resnet",
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

    The faithful recipe (:data:`~cifar_helpers.recipes.FAITHFUL`) builds it as the
    original trained it: ``sharpen=True`` (a :class:`~cifar_helpers.sharpen.Sharpen`
    layer first, as the original sharpened every image), ``augment="original"``
    (its imgaug augmentation) and ``dropblock_gamma="paper"``,
    ``dropblock_oversize="identity"`` (its DropBlock layer's behaviour).
    """
    if len(widths) != 4:
        raise ValueError(
            f"widths={widths!r}: give four stage widths, like (128, 256, 512, 1024)."
        )
    _check_sizes(hidden=hidden, classes=classes, widths=widths)
    inputs, x = _scaled_inputs(augment, sharpen)
    for index, filters in enumerate(widths, start=1):
        x = residual_block(
            x,
            filters,
            block_size=block_size,
            momentum=bn_momentum,
            gamma=dropblock_gamma,
            oversize=dropblock_oversize,
            name=f"residual{index}",
        )
    outputs = _head(x, hidden, classes, dropout, bn_momentum)
    return keras.Model(inputs, outputs, name=name)


def _linear_head(x, classes: int, *, pool: str, scale: float = 1.0):
    """Global pooling, one linear layer in float32 (the logits), a float32 softmax.

    Under a mixed-precision policy everything before the head computes in 16 bits;
    the logits and the softmax stay in float32, where small differences between
    large logits survive.
    """
    pooling = {
        "max": keras.layers.GlobalMaxPooling2D,
        "average": keras.layers.GlobalAveragePooling2D,
    }[pool]
    x = pooling(name=f"global_{pool}_pool")(x)
    x = keras.layers.Dense(classes, dtype="float32", name="logits")(x)
    if scale != 1.0:
        x = keras.layers.Rescaling(scale, dtype="float32", name="logit_scale")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)


def _late_dropblock(x, block_size: int, name: str):
    """A DropBlock at keep_prob 1, for the recipe's schedule to lower."""
    return DropBlock(1.0, min(block_size, x.shape[1]), name=name)(x)


def resnet9(
    *,
    widths=MODERN_WIDTHS,
    classes: int = 100,
    block_size: int = 3,
    augment: bool = True,
    bn_momentum: float = MODERN_MOMENTUM,
    sync_batch_norm: bool = False,
    name: str = "resnet9",
):
    """The DAWNBench-style ResNet-9 (Page, 2018) with DropBlock in its late stages.

    ``prep``: a 3x3 convolution to ``widths[0]`` filters; ``layer1``: convolution to
    ``widths[1]``, 2x2 max pool (16 px), a residual unit; ``layer2``: convolution to
    ``widths[2]``, max pool (8 px), DropBlock; ``layer3``: convolution to
    ``widths[3]``, max pool (4 px), a residual unit, DropBlock; then global max
    pooling, one linear layer and Page's logit scale of 1/8. Every convolution is
    followed by batch norm and ReLU (:func:`~cifar_helpers.blocks.conv_bn_relu`).
    About 6.6 M parameters and 0.4 G multiply-accumulates per image at full size.
    DropBlocks (``block_size``, clipped to the map) start at keep_prob 1.
    ``sync_batch_norm``: batch statistics over all replicas of a ``tf.distribute``
    strategy (see :func:`~cifar_helpers.blocks.batch_norm`).
    """
    if len(widths) != 4:
        raise ValueError(f"widths={widths!r}: give four widths, like {MODERN_WIDTHS}.")
    _check_sizes(classes=classes, widths=widths, block_size=block_size)
    options = {"momentum": bn_momentum, "synchronized": sync_batch_norm}
    inputs, x = _scaled_inputs(augment)
    x = conv_bn_relu(x, widths[0], name="prep", **options)
    for index, filters in enumerate(widths[1:], start=1):
        x = conv_bn_relu(x, filters, name=f"layer{index}", **options)
        x = keras.layers.MaxPooling2D(2, name=f"layer{index}_pool")(x)
        if index != 2:
            x = resnet9_residual(x, name=f"layer{index}_residual", **options)
        if index >= 2:
            x = _late_dropblock(x, block_size, f"layer{index}_dropblock")
    outputs = _linear_head(x, classes, pool="max", scale=0.125)
    return keras.Model(inputs, outputs, name=name)


def preact_resnet18(
    *,
    widths=MODERN_WIDTHS,
    blocks=(2, 2, 2, 2),
    classes: int = 100,
    block_size: int = 3,
    augment: bool = True,
    bn_momentum: float = MODERN_MOMENTUM,
    sync_batch_norm: bool = False,
    name: str = "preact_resnet18",
):
    """He et al.'s (2016) pre-activation ResNet-18 for 32x32 images, with DropBlock.

    A 3x3 stem convolution to ``widths[0]`` filters (no pooling: CIFAR images are
    small), four stages of ``blocks`` :func:`~cifar_helpers.blocks.preact_block`\\ s
    (the first of stages 2-4 halves the map: 32, 16, 8, 4 px, with a projection
    shortcut), DropBlock after stages 3 and 4, a final batch norm and ReLU, global
    average pooling and one linear layer. About 11.2 M parameters and 0.56 G
    multiply-accumulates per image at full size.
    """
    if len(widths) != 4 or len(blocks) != 4:
        raise ValueError(
            f"widths={widths!r}, blocks={blocks!r}: give four of each, like "
            f"{MODERN_WIDTHS} and (2, 2, 2, 2)."
        )
    _check_sizes(classes=classes, widths=widths, blocks=blocks, block_size=block_size)
    options = {"momentum": bn_momentum, "synchronized": sync_batch_norm}
    inputs, x = _scaled_inputs(augment)
    x = he_conv(widths[0], name="stem_conv")(x)
    for stage, (filters, count) in enumerate(zip(widths, blocks, strict=True), 1):
        for index in range(1, count + 1):
            strides = 2 if stage > 1 and index == 1 else 1
            x = preact_block(
                x, filters, strides=strides, name=f"stage{stage}_{index}", **options
            )
        if stage >= 3:
            x = _late_dropblock(x, block_size, f"stage{stage}_dropblock")
    x = batch_norm("final_bn", bn_momentum, synchronized=sync_batch_norm)(x)
    x = keras.layers.ReLU(name="final_relu")(x)
    outputs = _linear_head(x, classes, pool="average")
    return keras.Model(inputs, outputs, name=name)


def layer_macs(layer) -> int:
    """Multiply-accumulates of one image's pass through ``layer``: ``Conv2D``
    (output pixels x kernel area x input channels x filters) and ``Dense``
    (inputs x units); 0 for other layers (batch norm, activations, pooling and
    DropBlock add comparatively little)."""
    if isinstance(layer, keras.layers.Conv2D):
        _, height, width, filters = layer.output.shape
        kernel_h, kernel_w = layer.kernel_size
        return int(
            height * width * kernel_h * kernel_w * layer.input.shape[-1] * filters
        )
    if isinstance(layer, keras.layers.Dense):
        return int(layer.input.shape[-1] * layer.units)
    return 0


# The blocks the series' models name their layers after (residual1_block2_conv1...,
# and ResNet-9's prep_conv, layer1_residual_1_conv...).
BLOCK_NAMES = r"conv\d+|residual\d+|fully_connected\d+|logits|prep|layer\d+"


def block_costs(model) -> dict:
    """Per block of ``model`` (a layer's name up to :data:`BLOCK_NAMES`; any other
    layer alone): ``{block: (output shape, trainable parameters, MACs per image)}``,
    the output shape being that of the block's last layer. Notebooks 02, 04 and 05
    print it instead of ``model.summary()``."""
    costs = {}
    for layer in model.layers[1:]:
        named = re.match(BLOCK_NAMES, layer.name)
        block = named.group() if named else layer.name
        params = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
        _, total, macs = costs.get(block, (None, 0, 0))
        costs[block] = (
            tuple(layer.output.shape[1:]),
            total + params,
            macs + layer_macs(layer),
        )
    return costs


def macs_per_image(model) -> int:
    """Multiply-accumulates of one image's forward pass through ``model``: the sum
    of :func:`layer_macs` over its layers, nested models included. A training step
    costs about three times this (forward, and the two products of the backward
    pass)."""
    layers = model._flatten_layers(include_self=False, recursive=True)
    return sum(layer_macs(layer) for layer in layers)


# ---------------------------------------------------------------- the catalogue


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One entry of the catalogue.

    ``build`` makes the full-size model (keyword sizes override it); ``recipe`` is
    the recipe it trains with (:mod:`cifar_helpers.recipes`); ``precision`` is
    ``"float32"`` (as the original trained) or ``"auto"`` (the mixed precision the
    hardware calls for, see :func:`cifar_helpers.devices.use_precision`);
    ``smoke`` are the keyword sizes of its narrow copy for smoke runs: the same
    layers, a few filters each, and batch norm's running averages at momentum 0.9,
    as so few steps cannot settle the original's 0.997 (the modern models' 0.9
    already does); ``smoke_batch`` is a smoke run's batch size where the recipe's
    is too large for a smoke subset (None: the recipe's); ``notebook`` is where
    the model is taught.
    """

    name: str
    build: Callable[..., keras.Model]
    recipe: BaseRecipe
    precision: str
    smoke: dict
    notebook: str
    smoke_batch: int | None = None

    def model(self, *, smoke: bool = False, **sizes) -> keras.Model:
        """The model, narrow when ``smoke``; ``sizes`` override either."""
        return self.build(**{**(self.smoke if smoke else {}), **sizes})


_NARROW = (16, 16, 32, 32)
_ORIGINAL_SMOKE = {"hidden": 256, "bn_momentum": 0.9}
# The modern recipe's batch of 512 is more than a quarter of a smoke subset's
# 2,000 training images; 100 gives an epoch 20 steps.
_MODERN_SMOKE_BATCH = 100

CATALOGUE = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="baseline_cnn",
            build=baseline_cnn,
            recipe=ORIGINAL,
            precision="float32",
            smoke={"filters": _NARROW, **_ORIGINAL_SMOKE},
            notebook="02_baseline_cnn",
        ),
        ModelSpec(
            name="original_resnet",
            build=original_resnet,
            recipe=ORIGINAL,
            precision="float32",
            smoke={"widths": _NARROW, **_ORIGINAL_SMOKE},
            notebook="04_residual_network",
        ),
        ModelSpec(
            name="resnet9",
            build=resnet9,
            recipe=MODERN,
            precision="auto",
            smoke={"widths": _NARROW},
            smoke_batch=_MODERN_SMOKE_BATCH,
            notebook="05_modern_resnet",
        ),
        ModelSpec(
            name="preact_resnet18",
            build=preact_resnet18,
            recipe=MODERN,
            precision="auto",
            smoke={"widths": _NARROW},
            smoke_batch=_MODERN_SMOKE_BATCH,
            notebook="05_modern_resnet",
        ),
    )
}

# Old names of catalogue entries, still accepted with a warning until REMOVED_IN.
ALIASES = {"seed_resnet": "original_resnet"}


def renamed_note(name: str) -> str:
    """What to tell a user who gave the old name ``name`` of a model."""
    return (
        f"the model name {name!r} is now {ALIASES[name]!r}; the old name goes in "
        f"cifar_helpers {REMOVED_IN}."
    )


def spec(name: str) -> ModelSpec:
    """The catalogue's entry for ``name`` (an old alias works, with a warning)."""
    if name in ALIASES:
        warnings.warn(renamed_note(name), DeprecationWarning, stacklevel=2)
        name = ALIASES[name]
    if name not in CATALOGUE:
        raise ValueError(
            f"model {name!r}: not in the catalogue; use one of {', '.join(CATALOGUE)}."
        )
    return CATALOGUE[name]


# Names that lived here before cifar_helpers 0.2.
__getattr__ = moved(
    __name__, {}, renamed={"seed_resnet": ("models", "original_resnet")}
)
