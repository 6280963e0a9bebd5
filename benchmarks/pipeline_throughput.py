"""Host input-pipeline throughput: where should augmentation run?

Measures, in one run on the same in-memory uint8 CIFAR-sized data (50,000 random
images, batch 256), the images per second that five tf.data pipelines deliver to a
model:

  (a) augmentation inside the model: shuffle, batch, prefetch only;
  (a0) the same without ``cache()``: what caching in-memory arrays is worth;
  (b) our batched crop + flip + cutout (cifar_helpers.augment) mapped over batches;
  (c) a per-image tf.image crop + flip map (the common tutorial recipe);
  (d) Keras RandomCrop + RandomFlip layers mapped over batches.

Prints a table and writes JSON (default benchmarks/results/pipeline_throughput.json).
Usage: python benchmarks/pipeline_throughput.py [--batches 200] [--repeats 3] [--out F]
"""

import argparse

import keras
import numpy as np
import tensorflow as tf
from report import save

from cifar_helpers import augment, pipeline

BATCH = 256
IMAGES = 50_000


def per_image_crop_flip(image, label):
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]], mode="REFLECT")
    image = tf.image.random_crop(padded, [32, 32, 3])
    return tf.image.random_flip_left_right(image), label


def pipelines(x, y):
    base = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    shuffled = base.shuffle(IMAGES, seed=0)
    auto = tf.data.AUTOTUNE
    keras_crop = keras.layers.RandomCrop(32, 32, seed=0)
    keras_flip = keras.layers.RandomFlip("horizontal", seed=0)

    def keras_layers(images, labels):
        padded = tf.pad(images, [[0, 0], [4, 4], [4, 4], [0, 0]], mode="REFLECT")
        return keras_flip(keras_crop(padded, training=True), training=True), labels

    return {
        "(a) in-model augmentation: shuffle, batch, prefetch": pipeline.make_dataset(
            x, y, batch_size=BATCH, training=True
        ),
        "(a0) (a) without cache()": tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(IMAGES, seed=0)
        .batch(BATCH, drop_remainder=True)
        .prefetch(auto),
        "(b) batched crop+flip+cutout in tf.data (ours)": pipeline.make_dataset(
            x, y, batch_size=BATCH, training=True, augment=augment.augment_batch
        ),
        "(c) per-image tf.image crop+flip map": shuffled.map(
            per_image_crop_flip, num_parallel_calls=auto
        )
        .batch(BATCH, drop_remainder=True)
        .prefetch(auto),
        "(d) Keras RandomCrop+RandomFlip layers": shuffled.batch(
            BATCH, drop_remainder=True
        )
        .map(keras_layers, num_parallel_calls=auto)
        .prefetch(auto),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=200, help="timed batches")
    parser.add_argument("--repeats", type=int, default=3, help="best of N timings")
    parser.add_argument(
        "--out", default="benchmarks/results/pipeline_throughput.json", help="JSON path"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (IMAGES, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 100, IMAGES)
    results = {}
    for name, ds in pipelines(x, y).items():
        # Each pipeline is warmed (cache filled, graphs traced) before the best of N.
        pipeline.images_per_second(ds, batches=IMAGES // BATCH, warmup=2)
        rates = [
            pipeline.images_per_second(ds, batches=args.batches)
            for _ in range(args.repeats)
        ]
        results[name] = max(rates)
        print(f"{name:55s} {results[name]:>10,.0f} img/s", flush=True)
    a, b, c, d = results.values()
    summary = {
        "images_per_second": results,
        "a_at_least_80k": a >= 80_000,
        "b_vs_best_of_c_d": b / max(c, d),
        "batch_size": BATCH,
        "timed_batches": args.batches,
        "repeats": args.repeats,
    }
    print(
        f"(a) >= 80k img/s: {summary['a_at_least_80k']}; "
        f"(b) / max((c), (d)) = {summary['b_vs_best_of_c_d']:.2f}"
    )
    save(summary, args.out)


if __name__ == "__main__":
    main()
