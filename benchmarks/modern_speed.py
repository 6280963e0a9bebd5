"""The modern residual network against the original: speed, FLOP rate, augmentation.

Measured side by side in one run:

- the machine's dense matmul FLOP rate (a chain of ``n x n`` matmuls in the
  models' compute dtype, XLA-compiled): the reference a training step is held to;
- for the original part-7 model (``original_resnet``, full size, the original
  recipe) and the modern one (``resnet9`` or ``preact_resnet18``, full size, the
  modern recipe with its XLA and steps per execution), each with its recipe from
  ``models.CATALOGUE``, the training step's images per
  second through ``Model.fit`` on synthetic uint8 batches, with the in-model
  augmentation on, and the FLOP rate it achieves (6 x forward multiply-accumulates
  per image, see ``models.macs_per_image``) as a fraction of the matmul rate;
- the epoch time of each (50,000 images at that rate) and the modern model's
  speed-up per epoch;
- the share of the modern step spent in the in-model augmentation (crop, flip,
  cutout): end to end (the same model with and without it; as precise as the
  machine is quiet) and alone (the ``Augment`` layer timed on the same batch).

On a CPU, where Keras compiles the original recipe's step without XLA, the original
is also timed with XLA, and the speed-up is taken against the faster of the two.
Rounds alternate (matmul, original, modern, modern without augmentation, original
with XLA) so that a noisy neighbour slows all of them; medians over rounds are
reported, with ranges.
``--gpu`` is the variant for an accelerator: the precision policy the hardware
calls for (``devices.choose_precision``), XLA for every model, the recipes' own
batch sizes, more steps.

Prints a table and writes JSON (default benchmarks/results/modern_speed.json, or
modern_speed_gpu.json with --gpu).
Usage: python benchmarks/modern_speed.py [--batch 64] [--rounds 3] [--modern resnet9]
       [--gpu] [--out F]
"""

import argparse
import dataclasses
import statistics
import time

import keras
import numpy as np
import tensorflow as tf
from report import save

from cifar_helpers import devices, models, recipes, training
from cifar_helpers.augment import Augment

TARGETS = {"flop_fraction": 0.65, "augmentation_share": 0.05, "speedup": 4.0}
EPOCH_IMAGES = 50_000


def matmul_flop_rate(n, dtype, chain=8, calls=3):
    """FLOP/s of a chain of ``chain`` dependent ``n x n`` matmuls (one compiled
    call, its result read back); the best of ``calls`` calls, as the rate that
    dense arithmetic reaches here."""
    a = tf.random.normal([n, n], dtype=dtype) / n**0.5
    b = tf.random.normal([n, n], dtype=dtype)

    @tf.function(jit_compile=True)
    def run(a, b):
        for _ in range(chain):
            a = tf.matmul(a, b) / n**0.5
        return tf.reduce_sum(a)

    run(a, b).numpy()
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        run(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * chain / best


class Contender:
    """One model compiled by its recipe, timed ``steps`` training steps a round
    (``training.training_speed``)."""

    def __init__(self, name, model, recipe, batch, steps):
        self.name, self.model, self.batch, self.steps = name, model, batch, steps
        recipe = dataclasses.replace(recipe, batch_size=batch)
        if isinstance(recipe, recipes.ModernRecipe):
            recipe = dataclasses.replace(
                recipe, steps_per_execution=min(steps, recipe.steps_per_execution)
            )
        recipes.compile_model(model, recipe, steps_per_epoch=steps)
        self.macs = models.macs_per_image(model)
        self.seconds = []
        training.training_speed(model, batch, steps=steps)  # compile and warm up

    def round(self):
        speed = training.training_speed(
            self.model, self.batch, steps=self.steps, warmup=False
        )
        self.seconds.append(self.batch / speed)

    def images_per_second(self):
        return self.batch / statistics.median(self.seconds)


def augment_seconds(batch, dtype, repeats=10):
    """The ``Augment`` layer alone on one uint8 batch (training mode, compiled)."""
    layer = Augment(seed=0, dtype=dtype)
    images = tf.constant(
        np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    )

    @tf.function(jit_compile=True)
    def run(images):
        return tf.reduce_sum(tf.cast(layer(images, training=True), tf.float32))

    run(images).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        result = run(images)
    result.numpy()
    return (time.perf_counter() - start) / repeats


def spread(values):
    return f"{min(values):.3g}..{max(values):.3g}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, help="default: 64 (CPU), recipes' (GPU)")
    parser.add_argument("--rounds", type=int, default=3)
    modern_names = [
        name
        for name, spec in models.CATALOGUE.items()
        if isinstance(spec.recipe, recipes.ModernRecipe)
    ]
    parser.add_argument("--modern", default="resnet9", choices=modern_names)
    parser.add_argument("--gpu", action="store_true", help="accelerator variant")
    parser.add_argument(
        "--steps", type=int, help="steps a round (default 1 and 2; 20 and 40 --gpu)"
    )
    parser.add_argument("--out")
    args = parser.parse_args()
    policy = devices.use_precision("auto" if args.gpu else "float32")
    compute = keras.mixed_precision.global_policy().compute_dtype
    original_spec = models.spec("original_resnet")
    modern_spec = models.spec(args.modern)
    original_recipe, modern_recipe = original_spec.recipe, modern_spec.recipe
    if args.gpu:
        original_recipe = dataclasses.replace(original_recipe, jit_compile=True)
    batches = {
        "original": args.batch or (original_recipe.batch_size if args.gpu else 64),
        "modern": args.batch or (modern_recipe.batch_size if args.gpu else 64),
    }
    steps = {"original": 20, "modern": 40} if args.gpu else {"original": 1, "modern": 2}
    if args.steps:
        steps = {"original": args.steps, "modern": args.steps}
    matmul_n = 8192 if args.gpu else 2048
    print(f"policy {policy}; batches {batches}; steps a round {steps}")

    keras.utils.set_random_seed(0)
    modern_batch, original_batch = batches["modern"], batches["original"]
    contenders = [
        Contender(
            "original",
            original_spec.build(),
            original_recipe,
            original_batch,
            steps["original"],
        ),
        Contender(
            args.modern,
            modern_spec.build(),
            modern_recipe,
            modern_batch,
            steps["modern"],
        ),
        Contender(
            f"{args.modern} without augmentation",
            modern_spec.build(augment=False),
            modern_recipe,
            modern_batch,
            steps["modern"],
        ),
    ]
    if not args.gpu:
        # Keras leaves XLA off on a CPU ("auto"); the modern recipe insists on it.
        # Time the original with XLA too, and hold the modern model to the faster.
        xla = dataclasses.replace(original_recipe, jit_compile=True)
        contenders.append(
            Contender(
                "original with XLA",
                original_spec.build(),
                xla,
                original_batch,
                steps["original"],
            )
        )
    matmul = []
    for round_ in range(args.rounds):
        matmul.append(matmul_flop_rate(matmul_n, compute))
        for contender in contenders:
            contender.round()
        print(f"round {round_ + 1}/{args.rounds} done")
    rate = statistics.median(matmul)
    modern, bare = contenders[1], contenders[2]
    originals = [c for c in contenders if c.name.startswith("original")]

    rows = {}
    for contender in contenders:
        speed = contender.images_per_second()
        flops = 6 * contender.macs * speed
        rows[contender.name] = {
            "batch": contender.batch,
            "images_per_second": speed,
            "images_per_second_range": [contender.batch / s for s in contender.seconds],
            "forward_macs_per_image": contender.macs,
            "flop_per_second": flops,
            "flop_fraction_of_matmul": flops / rate,
            "epoch_seconds": EPOCH_IMAGES / speed,
        }
    fastest_original = max(originals, key=lambda c: c.images_per_second())
    speedup = (
        rows[modern.name]["images_per_second"]
        / rows[fastest_original.name]["images_per_second"]
    )
    share_rounds = [
        1 - b / m for b, m in zip(bare.seconds, modern.seconds, strict=True)
    ]
    end_to_end_share = statistics.median(share_rounds)
    alone = augment_seconds(modern.batch, compute)
    alone_share = alone / statistics.median(modern.seconds)

    print(
        f"\nmatmul ({matmul_n}x{matmul_n}, {compute}): {rate / 1e9:.1f} GFLOP/s "
        f"(rounds {spread([m / 1e9 for m in matmul])})"
    )
    header = ("model", "batch", "img/s", "GFLOP/s", "of matmul", "epoch")
    print("{:34s} {:>5s} {:>8s} {:>8s} {:>9s} {:>9s}".format(*header))
    for name, row in rows.items():
        print(
            f"{name:34s} {row['batch']:5d} {row['images_per_second']:8.1f} "
            f"{row['flop_per_second'] / 1e9:8.1f} "
            f"{row['flop_fraction_of_matmul']:9.0%} {row['epoch_seconds']:8.0f}s"
        )
    checks = {
        "flop_fraction": rows[modern.name]["flop_fraction_of_matmul"]
        >= TARGETS["flop_fraction"],
        "augmentation_share": alone_share <= TARGETS["augmentation_share"],
        "speedup": speedup >= TARGETS["speedup"],
    }
    verdict = {key: "ok" if met else "MISSED" for key, met in checks.items()}
    fraction = rows[modern.name]["flop_fraction_of_matmul"]
    print(
        f"\n{args.modern} epoch speed-up over the {fastest_original.name}: "
        f"{speedup:.1f}x "
        f"(target >= {TARGETS['speedup']:.0f}x): {verdict['speedup']}"
    )
    print(
        f"{args.modern} step at {fraction:.0%} of the matmul rate "
        f"(target >= {TARGETS['flop_fraction']:.0%}): {verdict['flop_fraction']}"
    )
    print(
        f"augmentation: {alone_share:.2%} of the step timed alone "
        f"({alone * 1e3:.2f} ms) "
        f"(target <= {TARGETS['augmentation_share']:.0%}): "
        f"{verdict['augmentation_share']}; end to end "
        f"{end_to_end_share:+.1%} (rounds {spread(share_rounds)})"
    )
    default = "benchmarks/results/modern_speed" + ("_gpu" if args.gpu else "") + ".json"
    save(
        {
            "policy": policy,
            "matmul_size": matmul_n,
            "matmul_flop_per_second": rate,
            "matmul_rounds": matmul,
            "models": rows,
            "speedup_per_epoch": speedup,
            "speedup_against": fastest_original.name,
            "augmentation_seconds_alone": alone,
            "augmentation_share_alone": alone_share,
            "augmentation_share_end_to_end": end_to_end_share,
            "augmentation_share_rounds": share_rounds,
            "targets": TARGETS,
            "targets_met": checks,
            "rounds": args.rounds,
        },
        args.out or default,
    )


if __name__ == "__main__":
    main()
