import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from cifar_helpers import data  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory):
    """A small synthetic cifar-100-python.tar.gz: 12 train and 4 test images a class."""
    path = tmp_path_factory.mktemp("archive") / data.ARCHIVE_NAME
    return data.write_synthetic_archive(
        path, train_per_class=12, test_per_class=4, seed=3
    )


@pytest.fixture(scope="session")
def cifar(synthetic_archive):
    return data.read_archive(synthetic_archive)
