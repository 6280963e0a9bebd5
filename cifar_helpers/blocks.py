"""Building blocks of the series' networks, as Keras functional helpers.

Each helper takes a tensor and returns a tensor, naming its layers after ``name``
so that ``model.summary()`` reads like the original code. Settings follow the
original TF1 code: batch norm with momentum 0.997 and epsilon 1e-5, convolutions
and dense layers without biases, as the original (batch norm follows most of them
and has its own shift), Glorot-uniform ("Xavier") initial weights. Introduced in
notebook 02 (``cnn_block``, ``dense_block``) and notebook 04 (the residual blocks).

The modern blocks of notebook 05 (``conv_bn_relu``, ``resnet9_residual``,
``preact_block``) use He-normal initial weights, as residual networks since He et
al. (2015) do, and batch norm with momentum 0.9 (PyTorch's default of 0.1 in its
own convention), which also settles within a smoke run's few steps.
"""

import keras

from cifar_helpers.dropblock import DropBlock

ORIGINAL_MOMENTUM = 0.997


MODERN_MOMENTUM = 0.9


def batch_norm(
    name: str, momentum: float = ORIGINAL_MOMENTUM, *, synchronized: bool = False
):
    """Batch normalisation with the original's settings.

    ``momentum`` weighs the old running mean and variance (used at inference)
    against each batch's: 0.997 averages over roughly the last 300 batches, so a
    short smoke run needs a lower value for its inference statistics to settle.
    ``synchronized``: under a ``tf.distribute`` strategy, compute the batch
    statistics over the global batch (all replicas) instead of each replica's
    share; it costs one all-reduce per layer and step.
    """
    return keras.layers.BatchNormalization(
        momentum=momentum, epsilon=1e-5, synchronized=synchronized, name=name
    )


def conv_block(
    x, filters: int, *, kernel_size: int = 3, momentum=ORIGINAL_MOMENTUM, name: str
):
    """BN, ReLU, convolution, twice (the original part-7 ``run_conv_block``).

    ``x`` is ``N x H x W x C``; the result is ``N x H x W x filters``. Normalising
    and activating *before* each convolution is the "pre-activation" order.
    """
    for index in (1, 2):
        x = batch_norm(f"{name}_bn{index}", momentum)(x)
        x = keras.layers.ReLU(name=f"{name}_relu{index}")(x)
        x = keras.layers.Conv2D(
            filters,
            kernel_size,
            padding="same",
            use_bias=False,
            name=f"{name}_conv{index}",
        )(x)
    return x


def cnn_block(
    x, filters, kernel_size, *, dropout: float, momentum=ORIGINAL_MOMENTUM, name: str
):
    """The original part-2 CNN block: ``N x H x W x C -> N x H/2 x W/2 x filters``.

    BN, convolution, 2x2 max pool, BN, ReLU, dropout (the original's
    ``run_conv_block`` of its first CNN).
    """
    x = batch_norm(f"{name}_bn1", momentum)(x)
    x = keras.layers.Conv2D(
        filters, kernel_size, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.MaxPooling2D(2, padding="same", name=f"{name}_pool")(x)
    x = batch_norm(f"{name}_bn2", momentum)(x)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def residual_block(
    x,
    filters: int,
    *,
    keep_prob: float = 1.0,
    block_size: int = 5,
    momentum=ORIGINAL_MOMENTUM,
    gamma: str = "exact",
    oversize: str = "clip",
    name: str,
):
    """The original part-7 residual block: ``N x H x W x C -> N x H/2 x W/2 x filters``.

    ``h1 = ReLU(conv_block(x))``, ``h2 = conv_block(h1)``, then ``ReLU(h1 + h2)``,
    DropBlock and a 3x3 stride-2 max pool. The skip connection starts after the
    first conv block, not at the block's input as in He et al.'s residual unit, so
    the block can change the number of channels without a projection. ``gamma``
    and ``oversize`` go to :class:`~cifar_helpers.dropblock.DropBlock`.
    """
    h1 = keras.layers.ReLU(name=f"{name}_relu1")(
        conv_block(x, filters, momentum=momentum, name=f"{name}_block1")
    )
    h2 = conv_block(h1, filters, momentum=momentum, name=f"{name}_block2")
    h = keras.layers.Add(name=f"{name}_add")([h1, h2])
    h = keras.layers.ReLU(name=f"{name}_relu2")(h)
    h = DropBlock(
        keep_prob, block_size, gamma=gamma, oversize=oversize, name=f"{name}_dropblock"
    )(h)
    return keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(
        h
    )


def dense_block(
    x, units, *, dropout, activation=True, momentum=ORIGINAL_MOMENTUM, name: str
):
    """Dense (no bias), BN, optional ReLU, dropout: the original ``run_hidden_layer``.

    ``x`` is ``N x F``; the result is ``N x units``.
    """
    x = keras.layers.Dense(units, use_bias=False, name=f"{name}_dense")(x)
    x = batch_norm(f"{name}_bn", momentum)(x)
    if activation:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def he_conv(filters, kernel_size=3, strides=1, *, name):
    """The modern blocks' convolution: ``same`` padding, no bias (batch norm
    follows or precedes it), He-normal initial weights."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def conv_bn_relu(
    x, filters, *, momentum=MODERN_MOMENTUM, synchronized=False, name: str
):
    """3x3 convolution, batch norm, ReLU ("post-activation", ResNet-9's unit).

    ``N x H x W x C -> N x H x W x filters``.
    """
    x = he_conv(filters, name=f"{name}_conv")(x)
    x = batch_norm(f"{name}_bn", momentum, synchronized=synchronized)(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def resnet9_residual(x, *, momentum=MODERN_MOMENTUM, synchronized=False, name: str):
    """ResNet-9's residual unit: ``x + conv_bn_relu(conv_bn_relu(x))``.

    Same shape in and out, so the shortcut is the identity.
    """
    filters = x.shape[-1]
    h = x
    for index in (1, 2):
        h = conv_bn_relu(
            h,
            filters,
            momentum=momentum,
            synchronized=synchronized,
            name=f"{name}_{index}",
        )
    return keras.layers.Add(name=f"{name}_add")([x, h])


def preact_block(
    x,
    filters: int,
    *,
    strides: int = 1,
    momentum=MODERN_MOMENTUM,
    synchronized=False,
    name: str,
):
    """He et al.'s (2016) pre-activation basic block with a projection shortcut.

    ``a = ReLU(BN(x))``; the residual branch is ``conv3x3(strides) -> BN -> ReLU ->
    conv3x3``; the shortcut is ``x`` itself when the shape is kept, otherwise a
    1x1 convolution of ``a`` with the same ``strides`` (a projection). Nothing
    follows the addition, so an identity path runs from input to output.
    ``N x H x W x C -> N x H/strides x W/strides x filters``.
    """
    a = batch_norm(f"{name}_bn1", momentum, synchronized=synchronized)(x)
    a = keras.layers.ReLU(name=f"{name}_relu1")(a)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = he_conv(filters, 1, strides, name=f"{name}_projection")(a)
    else:
        shortcut = x
    h = he_conv(filters, 3, strides, name=f"{name}_conv1")(a)
    h = batch_norm(f"{name}_bn2", momentum, synchronized=synchronized)(h)
    h = keras.layers.ReLU(name=f"{name}_relu2")(h)
    h = he_conv(filters, 3, name=f"{name}_conv2")(h)
    return keras.layers.Add(name=f"{name}_add")([shortcut, h])
