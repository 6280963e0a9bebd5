"""The supported stack (cifar_helpers.stack): the declared lower bounds are the
tested ones, and a Keras below the floor is refused with the line that fixes it,
never run silently wrong."""

import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from cifar_helpers import inference, models, stack

ROOT = Path(__file__).resolve().parents[1]
SUPPORTED = {"tensorflow": "2.16.2", "keras": "3.10.0", "numpy": "1.26.4"}


def _bounds(lines) -> dict:
    """name -> lower bound, of requirement lines like ``keras>=3.10  # why``."""
    found = {}
    for line in lines:
        match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", line)
        if match:
            found[match[1].lower()] = match[2]
    return found


def _pins(path: Path) -> dict:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.-]+)==([^\s;#]+)", line)
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def test_the_declared_floors_are_the_ones_ci_installs_on_its_lowest_stack():
    required = _bounds((ROOT / "requirements.txt").read_text().splitlines())
    pyproject = (ROOT / "pyproject.toml").read_text()  # no tomllib in Python 3.10
    listed = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.M | re.S)[1]
    declared = _bounds(re.findall(r'"([^"]+)"', listed))
    lowest = _pins(ROOT / "constraints-lowest.txt")
    for name, floor in stack.FLOORS.items():
        text = ".".join(map(str, floor))
        assert required[name] == declared[name] == text, name
    # Every runtime bound both files declare is exactly what the lowest CI job
    # installs (same major.minor), so no declared bound is an untested one.
    for name, bound in declared.items():
        assert required[name] == bound, name
        assert stack.parse(lowest[name]) == stack.parse(bound), name
    for name in ("tensorboard", "opencv-python-headless"):
        assert stack.parse(lowest[name]) == stack.parse(required[name]), name


def test_the_supported_floor_has_no_advice():
    assert stack.problems(SUPPORTED) == []
    assert stack.advice(SUPPORTED) is None


@pytest.mark.parametrize(
    ("keras_version", "named"),
    [
        (
            "3.3.3",
            ["untrained weights", "shuffles", "validation", "export", "Mirrored"],
        ),
        (
            "3.6.0",
            ["untrained weights", "shuffles", "validation", "export", "Mirrored"],
        ),
        ("3.7.0", ["export", "Mirrored"]),
        ("3.9.2", ["Mirrored"]),
    ],
)
def test_an_older_keras_is_told_what_goes_wrong_on_it_and_how_to_upgrade(
    keras_version, named
):
    message = stack.advice({**SUPPORTED, "keras": keras_version})
    assert f"keras {keras_version} is older than 3.10" in message
    for fault in named:
        assert fault in message
    everything = ["untrained weights", "shuffles", "validation", "export"]
    for fault in set(everything) - set(named):
        assert fault not in message
    assert '%pip install -q -U "keras>=3.10"' in message
    assert "restart" in message


def test_each_library_below_its_floor_is_named_with_its_own_upgrade():
    message = stack.advice(
        {"tensorflow": "2.15.1", "keras": "3.10.0", "numpy": "1.24.3"}
    )
    assert "tensorflow 2.15.1 is older than 2.16" in message
    assert "numpy 1.24.3 is older than 1.26" in message
    assert '"tensorflow>=2.16" "numpy>=1.26"' in message
    assert "keras" not in message


def test_versions_parse_with_release_candidates_and_builds():
    assert stack.parse("2.16.0rc1") == (2, 16)
    assert stack.parse("3.10.0.dev2025") == (3, 10)
    with pytest.raises(ValueError, match="not a version"):
        stack.parse("latest")


def test_training_with_an_older_keras_is_refused_at_import():
    # In a fresh process, so that the refused import does not touch this one.
    code = (
        "import keras; keras.__version__ = '3.6.0'\n"
        "from cifar_helpers import stack\n"
        "try:\n"
        "    import cifar_helpers.training\n"
        "except stack.UnsupportedStackError as error:\n"
        "    print('REFUSED', error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "REFUSED keras 3.6.0 is older than 3.10" in done.stdout
    assert "untrained weights" in done.stdout


def test_export_with_an_older_keras_is_refused(tmp_path, monkeypatch):
    model = models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8)
    monkeypatch.setattr(keras, "__version__", "3.7.1")
    with pytest.raises(stack.UnsupportedStackError, match="input_signature"):
        inference.export(model, tmp_path / "export", [str(i) for i in range(100)])
    assert not (tmp_path / "export").exists()


def test_the_report_names_the_versions_and_the_gpus():
    said = []
    found = stack.report(say=said.append)
    assert found["versions"] == stack.installed()
    assert said[0] == ", ".join(f"{n} {v}" for n, v in found["versions"].items())
    assert said[1] == f"GPUs: {', '.join(found['gpus']) or 'none'}"
    assert found["advice"] is None and len(said) == 2  # CI's stacks are supported


def test_the_report_says_unsupported_with_the_fix(monkeypatch):
    monkeypatch.setattr(keras, "__version__", "3.5.0")
    said = []
    found = stack.report(say=said.append)
    assert said[-1].startswith("UNSUPPORTED: keras 3.5.0 is older than 3.10")
    assert found["advice"] in said[-1]
