"""The code a notebook writes out for the reader, kept equal to the package's.

A notebook teaches a block by writing it in a cell tagged ``twin`` (as d2l keeps its
saved cells); the package holds the same function for the rest of the series to
import. This test runs the tagged cells and builds each function's model beside the
package twin's: the same layers with the same settings, connected the same way (the
same weights give the same outputs)."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from cifar_helpers import augment, blocks, models
from cifar_helpers.dropblock import DropBlock

ROOT = Path(__file__).resolve().parents[1]

# Each written-out function: its package twin, what it takes (a batch of feature
# maps, of feature vectors, or nothing: it builds a whole model) and the arguments
# to compare the two at.
MAPS, VECTORS, MODEL = (16, 16, 4), (12,), None
TWINS = {
    "conv_block": (
        blocks.conv_block,
        MAPS,
        [
            dict(filters=32, name="c"),
            dict(filters=8, kernel_size=5, momentum=0.9, name="c"),
        ],
    ),
    "residual_block": (
        blocks.residual_block,
        MAPS,
        [
            dict(filters=16, name="r"),
            dict(filters=8, block_size=3, gamma="paper", oversize="identity", name="r"),
        ],
    ),
    "cnn_block": (
        blocks.cnn_block,
        MAPS,
        [
            dict(filters=8, kernel_size=7, dropout=0.15, name="b"),
            dict(filters=4, kernel_size=3, dropout=0.0, momentum=0.9, name="b"),
        ],
    ),
    "dense_block": (
        blocks.dense_block,
        VECTORS,
        [
            dict(units=16, dropout=0.5, name="d"),
            dict(units=10, dropout=0.0, activation=False, momentum=0.9, name="d"),
        ],
    ),
    "conv_bn_relu": (
        blocks.conv_bn_relu,
        MAPS,
        [dict(filters=8, name="c"), dict(filters=4, momentum=0.99, name="c")],
    ),
    "resnet9_residual": (
        blocks.resnet9_residual,
        MAPS,
        [dict(name="r"), dict(momentum=0.99, name="r")],
    ),
    "preact_block": (
        blocks.preact_block,
        MAPS,
        [
            dict(filters=4, name="p"),  # same shape: the identity shortcut
            dict(filters=8, strides=2, name="p"),  # a projection shortcut
        ],
    ),
    "baseline_cnn": (
        models.baseline_cnn,
        MODEL,
        [dict(filters=(4, 4, 8, 8), hidden=16), dict(filters=(2, 2, 2, 2), hidden=8)],
    ),
}


def twin_cells():
    """``{notebook name: [source of each cell tagged twin]}``."""
    found = {}
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        tagged = [
            "".join(c["source"])
            for c in cells
            if "twin" in c.get("metadata", {}).get("tags", [])
        ]
        if tagged:
            found[path.name] = tagged
    return found


def written_out():
    """The functions the twin cells define: ``{name: (notebook, function)}``."""
    functions = {}
    for notebook, sources in twin_cells().items():
        namespace = {
            "keras": keras,
            "np": np,
            "DropBlock": DropBlock,
            "augment": augment,
        }
        before = set(namespace)
        for source in sources:
            exec(compile(source, f"{notebook} (twin cell)", "exec"), namespace)
        for name in set(namespace) - before - {"__builtins__"}:
            functions[name] = (notebook, namespace[name])
    return functions


def test_every_written_out_function_has_a_twin_here_and_every_twin_is_written():
    assert set(written_out()) == set(TWINS)


def _model(build, shape, kwargs):
    keras.utils.set_random_seed(0)
    if shape is MODEL:
        return build(**kwargs)
    inputs = keras.Input(shape)
    return keras.Model(inputs, build(inputs, **kwargs))


@pytest.mark.parametrize("name", sorted(TWINS))
def test_the_written_out_function_builds_what_the_package_builds(name):
    _, function = written_out()[name]
    package, shape, calls = TWINS[name]
    for kwargs in calls:
        mine, theirs = _model(function, shape, kwargs), _model(package, shape, kwargs)
        assert [type(x).__name__ for x in mine.layers] == [
            type(x).__name__ for x in theirs.layers
        ]
        for a, b in zip(mine.layers[1:], theirs.layers[1:], strict=True):
            assert a.get_config() == b.get_config(), a.name
        theirs.set_weights(mine.get_weights())
        if shape is MODEL:
            images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8)
        else:
            images = np.random.default_rng(0).normal(size=(2, *shape))
        np.testing.assert_allclose(
            mine.predict(images, verbose=0),
            theirs.predict(images, verbose=0),
            atol=1e-6,
        )
