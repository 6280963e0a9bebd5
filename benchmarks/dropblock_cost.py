"""DropBlock's share of a training step, measured with and without it in one run.

The network has the original part-7 residual model's four stages: 32, 16, 8 and 4
pixel maps with 128, 256, 512 and 1024 filters, four 3x3 convolutions each (each
after batch norm and ReLU, as in the original ``conv_block``), DropBlock after each
stage and a 3x3 stride-2 max pool between stages; a global-average-pool and
100-way softmax head stands in for the original's dense layers (which would only
make DropBlock's share smaller). Each stage alone gets random features of its input
shape and the same head.

For the whole network and for each stage, the same model is built twice, with and
without DropBlock, and both are compiled the same way (SGD, cross-entropy; XLA only
with ``--jit``). One training step (forward, backward, update) is timed with
``train_on_batch``; the two variants alternate (ABBA...), so a noisy neighbour slows
both, and the end-to-end overhead is the median over repeats of ``with / without -
1``, printed with its range over the repeats.
That ratio is only as precise as the machine is quiet (a few per cent on a shared
CPU), so each DropBlock is also timed alone, forward and backward on a batch of its
input shape, less the same computation without it; the sum over the model's
DropBlocks, as a share of the step without them, is the "layer alone" column.

Prints a table and writes JSON (default benchmarks/results/dropblock_cost.json).
Usage: python benchmarks/dropblock_cost.py [--batch 32] [--steps 2] [--repeats 5]
       [--block-size 5] [--keep-prob 0.8] [--jit] [--out F]
"""

import argparse
import statistics
import time

import keras
import numpy as np
import tensorflow as tf
from report import save

from cifar_helpers.dropblock import DropBlock, dropblock_layers

STAGES = [(32, 128), (16, 256), (8, 512), (4, 1024)]  # (map side, filters)
TARGET = 0.05  # the whole network's step may grow by at most 5 %


def stage(x, filters, dropblock, last):
    for _ in range(4):
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    if dropblock is not None:
        x = dropblock()(x)
    if not last:
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same")(x)
    return x


def build(first, last, dropblock):
    """Stages ``first .. last`` (0-based) with a pooling head; DropBlock optional."""
    side, _ = STAGES[first]
    channels = 3 if first == 0 else STAGES[first - 1][1]
    inputs = keras.Input((side, side, channels))
    x = inputs
    for index in range(first, last + 1):
        x = stage(x, STAGES[index][1], dropblock, last=index == 3)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(100, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def step_seconds(model, x, y, steps):
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / steps


def layer_seconds(layer, shape, repeats):
    """Forward + backward time of ``layer`` alone on a ``shape`` batch, less the
    same computation without it (median of alternating timings)."""
    x = tf.random.normal(shape)
    upstream = tf.random.normal(shape)

    def timed(apply):
        @tf.function
        def forward_backward(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = apply(x)
            return tape.gradient(y, x, output_gradients=upstream)

        return forward_backward

    def in_training(x):
        return layer(x, training=True)

    functions = [timed(in_training), timed(tf.identity)]
    for function in functions:
        function(x).numpy()
    differences = []
    for _ in range(repeats):
        seconds = []
        for function in functions:
            start = time.perf_counter()
            for _ in range(10):
                result = function(x)
            result.numpy()
            seconds.append((time.perf_counter() - start) / 10)
        differences.append(seconds[0] - seconds[1])
    return statistics.median(differences)


def measure(first, last, args):
    """DropBlock's cost on stages ``first .. last``: end to end and in isolation."""
    keras.utils.set_random_seed(0)
    models = {}
    for name, dropblock in (
        ("without", None),
        ("with", lambda: DropBlock(args.keep_prob, args.block_size, seed=0)),
    ):
        model = build(first, last, dropblock)
        model.compile(
            optimizer=keras.optimizers.SGD(0.01),
            loss="sparse_categorical_crossentropy",
            jit_compile=args.jit,
        )
        models[name] = model
    shape = models["with"].input_shape[1:]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, *shape)).astype("float32")
    y = rng.integers(0, 100, args.batch)
    for model in models.values():  # trace and warm up
        step_seconds(model, x, y, 2)
    times = {"without": [], "with": []}
    for repeat in range(args.repeats):
        order = ["without", "with"] if repeat % 2 == 0 else ["with", "without"]
        for name in order:  # alternate who goes first, so neither gains from order
            times[name].append(step_seconds(models[name], x, y, args.steps))
    ratios = [w / wo - 1 for w, wo in zip(times["with"], times["without"], strict=True)]
    without = statistics.median(times["without"])
    layers = dropblock_layers(models["with"])
    isolated = sum(
        layer_seconds(layer, (args.batch, *layer.input.shape[1:]), args.repeats)
        for layer in layers
    )
    return {
        "step_seconds_without": without,
        "step_seconds_with": statistics.median(times["with"]),
        "overhead": statistics.median(ratios),
        "overhead_per_repeat": ratios,
        "dropblock_seconds_isolated": isolated,
        "dropblock_share_isolated": isolated / without,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="images per step")
    parser.add_argument("--steps", type=int, default=2, help="steps per timing")
    parser.add_argument("--repeats", type=int, default=5, help="alternating timings")
    parser.add_argument("--block-size", type=int, default=5, help="as the original")
    parser.add_argument("--keep-prob", type=float, default=0.8, help="as the original")
    parser.add_argument("--jit", action="store_true", help="compile with XLA")
    parser.add_argument(
        "--out", default="benchmarks/results/dropblock_cost.json", help="JSON path"
    )
    args = parser.parse_args()
    cases = {"whole network (4 stages)": (0, 3)}
    for index, (side, filters) in enumerate(STAGES):
        cases[f"stage {index + 1} alone ({side}x{side}, {filters} filters)"] = (
            index,
            index,
        )
    print(
        f"{'batch ' + str(args.batch):38s} {'step without':>13s} {'with':>9s}"
        f" {'end to end (range)':>25s} {'layer alone':>12s}"
    )
    results = {}
    for name, (first, last) in cases.items():
        result = measure(first, last, args)
        results[name] = result
        print(
            f"{name:38s} {result['step_seconds_without'] * 1e3:>11.0f}ms"
            f" {result['step_seconds_with'] * 1e3:>7.0f}ms"
            f" {result['overhead']:>+8.1%}"
            f" ({min(result['overhead_per_repeat']):+.0%} .. "
            f"{max(result['overhead_per_repeat']):+.0%})"
            f" {result['dropblock_share_isolated']:>12.1%}",
            flush=True,
        )
    whole = results["whole network (4 stages)"]["overhead"]
    isolated = results["whole network (4 stages)"]["dropblock_share_isolated"]
    summary = {
        "results": results,
        "whole_network_overhead": whole,
        "whole_network_within_target_alone": isolated <= TARGET,
        "whole_network_within_target_end_to_end": whole <= TARGET,
        "settings": vars(args),
    }
    print(
        f"whole network: DropBlock adds {whole:+.1%} to a training step end to end, "
        f"{isolated:.1%} timed alone (target <= {TARGET:.0%})"
    )
    save(summary, args.out)


if __name__ == "__main__":
    main()
