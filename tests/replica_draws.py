"""Print whether the two replicas of a MirroredStrategy (two logical CPU devices) draw
the same augmentation and the same DropBlock mask; the distribution tests run it in
a fresh process (logical devices are fixed once TensorFlow starts)."""

import json

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

from cifar_helpers.augment import Augment  # noqa: E402
from cifar_helpers.dropblock import DropBlock  # noqa: E402

strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
with strategy.scope():
    augment, dropblock = Augment(seed=1), DropBlock(0.5, 3, seed=1)
# Every replica gets the same inputs: any difference comes from the random draws.
images = np.tile(
    np.arange(32 * 32 * 3, dtype=np.uint8).reshape(1, 32, 32, 3), [4, 1, 1, 1]
)
features = tf.ones([4, 8, 8, 4])


@tf.function
def step():
    return strategy.run(
        lambda: (augment(images, training=True), dropblock(features, training=True))
    )


augmented, dropped = step()
same = {
    name: bool(
        np.array_equal(*(t.numpy() for t in strategy.experimental_local_results(v)))
    )
    for name, v in (("augment", augmented), ("dropblock", dropped))
}
print(json.dumps(same))
