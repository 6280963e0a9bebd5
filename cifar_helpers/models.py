"""The series' models, built from :mod:`cifar_helpers.blocks`.

Every model takes raw ``uint8`` images (``N x 32 x 32 x 3``) and returns class
probabilities (``N x 100``, float32 under any precision policy), so a saved model
needs no preprocessing outside it. Introduced in notebook 04.
"""

import keras

from cifar_helpers.blocks import dense_block, residual_block

ORIGINAL_WIDTHS = (128, 256, 512, 1024)


def _check_positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r}: use a whole number of at least 1.")


def seed_resnet(
    *,
    widths=ORIGINAL_WIDTHS,
    hidden: int = 4096,
    classes: int = 100,
    block_size: int = 5,
    dropout: float = 0.5,
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
    ``hidden`` build a narrow copy for smoke runs.
    """
    if len(widths) != 4:
        raise ValueError(
            f"widths={widths!r}: give four stage widths, like (128, 256, 512, 1024)."
        )
    for argument, value in [
        ("hidden", hidden),
        ("classes", classes),
        *(("widths", w) for w in widths),
    ]:
        _check_positive(argument, value)
    inputs = keras.Input((32, 32, 3), dtype="uint8", name="images")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_minus1_1")(inputs)
    for index, filters in enumerate(widths, start=1):
        x = residual_block(x, filters, block_size=block_size, name=f"residual{index}")
    x = keras.layers.Flatten(name="flatten")(x)
    for index in (1, 2):
        x = dense_block(x, hidden, dropout=dropout, name=f"fully_connected{index}")
    x = dense_block(x, classes, dropout=0.0, activation=False, name="logits")
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(
        x
    )
    return keras.Model(inputs, outputs, name=name)
