"""Train a narrow ResNet-9 for two epochs under one ``tf.distribute`` strategy and
save its losses and final weights. The distribution tests run it in fresh
processes, because a process's devices and cluster are fixed once TensorFlow starts.

Usage: python tests/distributed_run.py STRATEGY OUT.npz [fit|loop]
STRATEGY: ``default`` (one device), ``mirrored`` (two logical CPU devices), or
``multiworker`` (the cluster that ``TF_CONFIG`` describes). It trains with Keras'
own ``Model.fit`` (not ``training.fit``: the tests record what Keras does), or with
``loop`` (:func:`cifar_helpers.loop.fit`, writing its run folder beside OUT). The
tests run it with GPUs hidden (``tests/conftest.py``), so that it compares CPU
devices anywhere.
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

kind, out = sys.argv[1], sys.argv[2]
trainer = sys.argv[3] if len(sys.argv) > 3 else "fit"
if kind == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

import keras  # noqa: E402

from cifar_helpers import devices, loop, models, recipes  # noqa: E402

REPLICAS = 2  # the distributed runs have two; the one-device run copies their recipe
strategy = devices.choose_strategy(kind)
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (128, 32, 32, 3), dtype=np.uint8)
labels = rng.integers(0, 100, 128)
# Nothing random in a step: no augmentation, keep_prob stays 1 (DropBlock is the
# identity), batch statistics over the global batch, and batches in a fixed order
# (a distributed dataset shuffles with seeds of its own). A step is then the same
# computation however its batch is split between devices.
# A gentle peak learning rate: at the recipe's 0.4 x 2 replicas, eight steps of this
# tiny network amplify float32 rounding differences (summation order) a
# thousandfold, which would hide what the test checks. At 0.05 x 2 they still
# grew to 6e-3 in the weights on one CPU (Sapphire Rapids, TF 2.21): at 0.01 x 2
# the same runs agree to 2e-7 in the loss and 1.3e-4 in the weights.
recipe = dataclasses.replace(
    recipes.ModernRecipe(),
    batch_size=16,
    epochs=2,
    keep_prob_final=1.0,
    peak_learning_rate=0.01,
)
if kind == "default":
    # The same global batch and learning rate, compiled as the distributed runs are
    # (see devices.for_strategy), so that only the distribution differs.
    recipe = dataclasses.replace(
        recipe.for_replicas(REPLICAS), jit_compile=False, steps_per_execution=1
    )
else:
    assert strategy.num_replicas_in_sync == REPLICAS
    recipe = devices.for_strategy(recipe, strategy)
train = tf.data.Dataset.from_tensor_slices((images, labels)).batch(
    recipe.batch_size, drop_remainder=True
)
with strategy.scope():
    model = models.resnet9(widths=(8, 16, 16, 32), augment=False, sync_batch_norm=True)
    recipes.compile_model(model, recipe, steps_per_epoch=len(train))
if trainer == "loop":
    run_dir = Path(out).with_suffix(".run")
    # Validated on the training batches: the checkpoint needs a val_loss.
    history = loop.fit(model, train, train, run_dir, recipe, verbose=0)
else:
    history = model.fit(train, epochs=recipe.epochs, verbose=0)
np.savez(
    out,
    loss=np.array(history.history["loss"]),
    replicas=strategy.num_replicas_in_sync,
    chief=devices.is_chief(strategy),
    batch_size=recipe.batch_size,
    **{f"w{i}": w for i, w in enumerate(model.get_weights())},
)
