"""The hardware a run trains on: its precision, its ``tf.distribute`` strategy, and
a record of the machine for a run's results.

Each choice is split in two: a pure decision that takes the facts as arguments
(:func:`precision_for`, :func:`strategy_kind`), tested with stated inputs, and a
function that reads the facts off this machine and applies the decision
(:func:`choose_precision`, :func:`choose_strategy`). Introduced in notebook 07.
"""

import dataclasses
import json
import os
import platform

import keras

# ---------------------------------------------------------------- precision


def precision_for(device_type: str, compute_capability=None) -> str:
    """The mixed-precision policy that suits one kind of device.

    - ``"TPU"``: ``mixed_bfloat16`` (TPU matrix units work in bfloat16);
    - ``"GPU"`` with compute capability 8.0 or more (A100, L4, H100, RTX 30/40):
      ``mixed_bfloat16``, as fast as float16 on their tensor cores and with
      float32's range, so no loss scaling is needed;
    - ``"GPU"`` with compute capability 7.x (V100, T4, RTX 20): ``mixed_float16``
      (their tensor cores have no bfloat16; Keras scales the loss so small
      gradients survive);
    - older GPUs and CPUs: ``float32`` (16-bit arithmetic gains nothing there).

    ``compute_capability`` is ``(major, minor)``, as
    ``tf.config.experimental.get_device_details`` reports it.
    """
    kind = device_type.upper()
    if kind == "TPU":
        return "mixed_bfloat16"
    if kind == "GPU" and compute_capability is not None:
        major = compute_capability[0]
        if major >= 8:
            return "mixed_bfloat16"
        if major == 7:
            return "mixed_float16"
    return "float32"


def choose_precision() -> str:
    """The policy for this machine's accelerators (see :func:`precision_for`); with
    several GPUs, the first one's (a machine's GPUs are usually of one kind)."""
    import tensorflow as tf

    if tf.config.list_logical_devices("TPU"):
        return precision_for("TPU")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return precision_for("GPU", details.get("compute_capability"))
    return precision_for("CPU")


def use_precision(policy: str = "auto") -> str:
    """Set Keras' global dtype policy (``"auto"``: :func:`choose_precision`) and
    return it. Call it before building the model: layers take the policy that is
    current when they are created. Every model keeps its softmax in float32 under
    any policy, and the modern ones their logits too."""
    policy = choose_precision() if policy == "auto" else policy
    keras.mixed_precision.set_global_policy(policy)
    return policy


# ---------------------------------------------------------------- distribution

STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")


class StrategyError(ValueError):
    """A distribution strategy that cannot be used here; the message says why."""


def strategy_kind(*, tpu: bool, gpus: int, tf_config: str | None) -> str:
    """What ``choose_strategy("auto")`` picks: ``"tpu"`` when a TPU is attached,
    ``"multiworker"`` when ``TF_CONFIG`` describes a cluster of several tasks,
    ``"mirrored"`` on several GPUs, ``"default"`` (one device) otherwise."""
    if tpu:
        return "tpu"
    if tf_config:
        try:
            cluster = json.loads(tf_config).get("cluster", {})
        except (ValueError, AttributeError) as error:
            raise StrategyError(
                f"TF_CONFIG is not valid JSON ({error}); it should look like "
                '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}.'
            ) from None
        if sum(len(tasks) for tasks in cluster.values()) > 1:
            return "multiworker"
    if gpus > 1:
        return "mirrored"
    return "default"


def _tpu_resolver():
    """A connected TPU cluster resolver, or None when no TPU is reachable."""
    import tensorflow as tf

    try:
        # TPU VMs (Colab's TPU runtime, Cloud TPU VMs) see their chips locally.
        tpu = "local" if tf.config.list_physical_devices("TPU") else None
        if tpu is None and not (
            os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME")
        ):
            return None
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return resolver
    except (ValueError, RuntimeError, tf.errors.OpError):
        return None


def choose_strategy(kind: str = "auto"):
    """The ``tf.distribute`` strategy to build, compile and train under.

    ``kind`` is one of :data:`STRATEGIES`; ``"auto"`` decides as
    :func:`strategy_kind` says. Create it at the start of a program, before other
    TensorFlow work (multi-worker training requires it), then build and compile
    the model inside ``strategy.scope()``; ``fit`` needs nothing more. Scale the
    recipe with :func:`for_strategy`.
    """
    import tensorflow as tf

    if kind not in STRATEGIES:
        raise StrategyError(f"strategy {kind!r}: use one of {', '.join(STRATEGIES)}.")
    resolver = _tpu_resolver() if kind in ("auto", "tpu") else None
    if kind == "tpu" and resolver is None:
        raise StrategyError(
            "strategy 'tpu': no TPU found. On Colab choose Runtime > Change runtime "
            "type > TPU; on Cloud, set TPU_NAME; or use --strategy auto."
        )
    if kind == "auto":
        kind = strategy_kind(
            tpu=resolver is not None,
            gpus=len(tf.config.list_physical_devices("GPU")),
            tf_config=os.environ.get("TF_CONFIG"),
        )
    if kind == "tpu":
        return tf.distribute.TPUStrategy(resolver)
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def for_strategy(recipe, strategy):
    """``recipe`` for training under ``strategy``: scaled for its replicas (see
    ``recipe.for_replicas``) and, under ``MirroredStrategy`` and
    ``MultiWorkerMirroredStrategy``, without XLA and with one step per execution.

    Keras 3.15 cannot run those two strategies' steps with either: XLA compiles the
    step across devices and fails on variables held by another replica
    (keras-team/keras#19005), and several steps per execution fail with
    "You must feed a value for placeholder tensor" (keras-team/keras#19246). Both
    failures were reproduced with Keras 3.15 and TensorFlow 2.21 on two logical
    CPU devices (the setting of ``tests/test_distribution.py``).
    ``TPUStrategy`` compiles with XLA anyway and keeps both.
    """
    import tensorflow as tf

    scaled = recipe.for_replicas(strategy.num_replicas_in_sync)
    mirrored = (
        tf.distribute.MirroredStrategy,
        tf.distribute.MultiWorkerMirroredStrategy,
    )
    if isinstance(strategy, mirrored):
        scaled = dataclasses.replace(scaled, jit_compile=False, steps_per_execution=1)
    return scaled


def across_workers(strategy) -> bool:
    """Whether ``strategy`` trains one model across several worker processes (a
    ``MultiWorkerMirroredStrategy`` whose ``TF_CONFIG`` names more than one)."""
    import tensorflow as tf

    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    )


def check_fit_supported(strategy):
    """Refuse, with the reason, what this Keras cannot do: ``Model.fit`` across
    several workers fails in Keras 3.15 and earlier (keras-team/keras#20585;
    ``tests/test_distribution.py`` checks it on every run of the tests). The loop of
    :mod:`cifar_helpers.loop` trains there instead."""
    from cifar_helpers import stack

    if across_workers(strategy) and stack.parse(keras.__version__) <= (3, 15):
        raise StrategyError(
            f"Keras {keras.__version__}'s Model.fit cannot train one model across "
            "several machines: it fails under MultiWorkerMirroredStrategy "
            "(https://github.com/keras-team/keras/issues/20585). Train with "
            "cifar_helpers.loop.fit, the training loop written out, which "
            "`python -m cifar_helpers train --strategy multiworker` uses."
        )


def is_chief(strategy) -> bool:
    """Whether this process writes a run's files: always, except on the non-chief
    workers of a multi-worker cluster (the ``chief`` task, or worker 0 when the
    cluster has none)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


# ---------------------------------------------------------------- the record


def environment() -> dict:
    """The library versions and the machine a result was measured with: what a
    run's ``results.json`` and every benchmark's JSON record beside their
    numbers."""
    import numpy as np
    import tensorflow as tf

    import cifar_helpers

    return {
        "versions": {
            "cifar_helpers": cifar_helpers.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "hardware": {
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "gpus": [
                tf.config.experimental.get_device_details(gpu).get("device_name", "GPU")
                for gpu in tf.config.list_physical_devices("GPU")
            ],
            "tpus": len(tf.config.list_logical_devices("TPU")),
        },
    }
