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


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("training.Recipe", "recipes.OriginalRecipe"),
        ("training.ORIGINAL", "recipes.ORIGINAL"),
        ("training.compile_model", "recipes.compile_model"),
        ("training.AtomicBackupAndRestore", "resume.AtomicBackupAndRestore"),
        ("training.committed_backup", "resume.committed_backup"),
        ("training.choose_strategy", "devices.choose_strategy"),
        ("training.use_precision", "devices.use_precision"),
        ("training.split_datasets", "pipeline.split_datasets"),
        ("data.make_dataset", "pipeline.make_dataset"),
        ("data.write_synthetic_archive", "synthetic.write_synthetic_archive"),
        ("data.SYNTHETIC_TRAIN_PER_CLASS", "synthetic.TRAIN_PER_CLASS"),
        ("models.seed_resnet", "models.original_resnet"),
    ],
)
def test_an_old_name_still_works_with_a_warning_naming_its_new_home(old, new):
    import importlib

    def resolve(dotted):
        module, name = dotted.split(".")
        return getattr(importlib.import_module(f"cifar_helpers.{module}"), name)

    with pytest.warns(DeprecationWarning, match=f"is now cifar_helpers.{new};"):
        assert resolve(old) is resolve(new)


def test_an_unknown_name_is_still_an_attribute_error():
    from cifar_helpers import training

    with pytest.raises(AttributeError, match="has no attribute 'fitt'"):
        training.fitt  # noqa: B018
