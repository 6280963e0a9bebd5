"""Shared fixtures, and what keeps the unit tests independent of the machine.

The tests pass wherever ``make test`` runs: a CPU-only CI machine, a workstation
with one GPU or several, Colab. None of them asserts the hardware it runs on:
decisions about devices are tested with stated inputs (``tests/test_devices.py``).
And they all run on the CPU, which they pin here, for every test process and the
processes those start (CLI runs, fault runs, fresh readers of an export): their
tolerances and bit-for-bit comparisons were measured on CPUs, and a GPU computes
differently (TF32 convolutions on recent GPUs, other summation orders, a GPU as
one more replica of a ``MirroredStrategy``). ``make notebooks`` hides GPUs from
the notebooks' kernels likewise. What runs on a GPU is checked on one (the
notebooks in Colab, ``make bench-modern-gpu``), not by ``make test``. Also here:

- ``TF_CONFIG`` is removed: a test describes any cluster it needs itself;
- Keras' global precision policy is put back after each test, as a run that
  picks the hardware's mixed precision (``devices.use_precision``) sets it for the
  whole process.
"""

import json
import os
import socket

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before TensorFlow starts: CPU only
os.environ.pop("TF_CONFIG", None)

import keras  # noqa: E402
import pytest  # noqa: E402

from cifar_helpers import data, synthetic  # noqa: E402


@pytest.fixture(autouse=True)
def _keep_the_precision_policy():
    policy = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(policy)


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory):
    """A small synthetic cifar-100-python.tar.gz: 12 train and 4 test images a class."""
    path = tmp_path_factory.mktemp("archive") / data.ARCHIVE_NAME
    return synthetic.write_synthetic_archive(
        path, train_per_class=12, test_per_class=4, seed=3
    )


@pytest.fixture(scope="session")
def cifar(synthetic_archive):
    return data.read_archive(synthetic_archive)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tf_configs():
    """``tf_configs(n)``: one ``TF_CONFIG`` per worker of an ``n``-worker cluster on
    this machine's loopback, each on a free port."""

    def configs(workers=2):
        cluster = {"worker": [f"localhost:{_free_port()}" for _ in range(workers)]}
        return [
            json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            for i in range(workers)
        ]

    return configs
