"""The hardware a run trains on: precision and strategy, each decided from stated
facts about the machine, never from the machine these tests run on."""

import json

import keras
import pytest
import tensorflow as tf

from cifar_helpers import devices


@pytest.mark.parametrize(
    "kind, capability, policy",
    [
        ("TPU", None, "mixed_bfloat16"),
        ("GPU", (9, 0), "mixed_bfloat16"),  # H100
        ("GPU", (8, 0), "mixed_bfloat16"),  # A100
        ("GPU", (8, 9), "mixed_bfloat16"),  # L4
        ("GPU", (7, 5), "mixed_float16"),  # T4
        ("GPU", (7, 0), "mixed_float16"),  # V100
        ("GPU", (6, 0), "float32"),  # P100
        ("GPU", None, "float32"),
        ("CPU", None, "float32"),
    ],
)
def test_precision_follows_the_device(kind, capability, policy):
    assert devices.precision_for(kind, capability) == policy


def _machine(monkeypatch, *, tpus=0, gpus=()):
    """Make TensorFlow report ``tpus`` TPUs and GPUs of the compute capabilities
    ``gpus``, whatever this machine has: the choice is tested with stated inputs."""
    devices_of = {
        "TPU": [f"TPU:{i}" for i in range(tpus)],
        "GPU": [f"GPU:{i}" for i in range(len(gpus))],
    }
    monkeypatch.setattr(
        tf.config, "list_logical_devices", lambda kind=None: devices_of.get(kind, [])
    )
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: devices_of.get(kind, [])
    )
    monkeypatch.setattr(
        tf.config.experimental,
        "get_device_details",
        lambda gpu: {"compute_capability": gpus[int(gpu.split(":")[1])]},
    )


@pytest.mark.parametrize(
    ("tpus", "gpus", "policy"),
    [
        (0, (), "float32"),
        (0, ((7, 5),), "mixed_float16"),
        (0, ((8, 0), (7, 0)), "mixed_bfloat16"),  # the first GPU decides
        (1, (), "mixed_bfloat16"),
    ],
)
def test_the_precision_chosen_follows_the_machines_devices(
    monkeypatch, tpus, gpus, policy
):
    _machine(monkeypatch, tpus=tpus, gpus=gpus)
    assert devices.choose_precision() == policy


def test_use_precision_sets_the_global_policy():
    try:
        assert devices.use_precision("mixed_float16") == "mixed_float16"
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


CLUSTER = json.dumps(
    {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}
)


@pytest.mark.parametrize(
    "tpu, gpus, tf_config, kind",
    [
        (True, 0, None, "tpu"),
        (True, 0, CLUSTER, "tpu"),
        (False, 8, CLUSTER, "multiworker"),
        (False, 2, None, "mirrored"),
        (False, 1, None, "default"),
        (False, 0, None, "default"),
        (False, 1, json.dumps({"cluster": {"worker": ["a:1"]}}), "default"),
    ],
)
def test_strategy_choice(tpu, gpus, tf_config, kind):
    assert devices.strategy_kind(tpu=tpu, gpus=gpus, tf_config=tf_config) == kind


def test_strategy_errors_say_what_to_do():
    with pytest.raises(ValueError, match="not valid JSON"):
        devices.strategy_kind(tpu=False, gpus=0, tf_config="{cluster")
    with pytest.raises(ValueError, match="use one of auto"):
        devices.choose_strategy("horovod")
    with pytest.raises(ValueError, match="no TPU found"):
        devices.choose_strategy("tpu")
    strategy = devices.choose_strategy("default")  # one device, on any machine
    assert strategy.num_replicas_in_sync == 1 and devices.is_chief(strategy)


def test_the_environment_record_names_versions_and_hardware():
    record = devices.environment()
    assert {"cifar_helpers", "tensorflow", "keras", "numpy", "python"} <= set(
        record["versions"]
    )
    assert record["hardware"]["cpus"] >= 1
    assert isinstance(record["hardware"]["gpus"], list)
