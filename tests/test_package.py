import pytest

import cifar_helpers
from cifar_helpers import config


def test_version_is_a_three_part_string():
    assert cifar_helpers.__version__.count(".") == 2


def test_require_version_accepts_the_installed_version():
    assert (
        cifar_helpers.require_version(cifar_helpers.__version__)
        == cifar_helpers.__version__
    )
    major_minor = ".".join(cifar_helpers.__version__.split(".")[:2])
    assert cifar_helpers.require_version(major_minor) == cifar_helpers.__version__


def test_require_version_rejects_a_newer_requirement_with_the_fix():
    with pytest.raises(RuntimeError, match="pip install -e ."):
        cifar_helpers.require_version("99.0")


def test_require_version_warns_when_installed_is_a_newer_minor_release(monkeypatch):
    monkeypatch.setattr(cifar_helpers, "__version__", "0.3.0")
    with pytest.warns(UserWarning, match="newer"):
        cifar_helpers.require_version("0.2")


def test_require_version_rejects_a_malformed_version():
    with pytest.raises(ValueError, match="not a version"):
        cifar_helpers.require_version("latest")


def test_config_defaults_to_a_full_run_on_the_official_archive():
    assert config.from_env({}) == config.RunConfig(smoke=False, data_source=None)


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_config_reads_smoke_flags(value):
    assert config.from_env({"CIFAR_SMOKE": value}).smoke


@pytest.mark.parametrize("value", ["0", "false", "", "no"])
def test_config_reads_full_run_flags(value):
    assert not config.from_env({"CIFAR_SMOKE": value}).smoke


def test_config_rejects_an_unknown_smoke_value_naming_the_variable():
    with pytest.raises(ValueError, match="CIFAR_SMOKE='maybe'"):
        config.from_env({"CIFAR_SMOKE": "maybe"})


def test_config_passes_the_data_source_through():
    cfg = config.from_env({"CIFAR_DATA": "synthetic", "CIFAR_SMOKE": "1"})
    assert cfg.data_source == "synthetic"
    assert "SYNTHETIC" in cfg.describe() and "SMOKE" in cfg.describe()
