"""Colab from start to finish: run folders on Google Drive (config.keep_runs_on_drive),
so that notebook 06 finds the run notebook 05 wrote in another Colab VM, and a
declined mount says what it costs. Colab is stood in for by a fake ``google.colab``
module whose ``drive.mount`` makes a folder, as Colab's does."""

import json
import sys
import types
from pathlib import Path

import keras
import nbformat
import pytest

from cifar_helpers import config, resume

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def colab(tmp_path, monkeypatch):
    """A fake Colab whose Drive mounts under ``tmp_path``; yields the mount calls."""
    mounts = []

    def mount(path):
        mounts.append(path)
        if calls.get("decline"):
            raise ValueError("mount failed: credential propagation was unsuccessful")
        Path(path, "MyDrive").mkdir(parents=True, exist_ok=True)

    calls = {}
    drive = types.SimpleNamespace(mount=mount)
    package = types.ModuleType("google.colab")
    package.drive = drive
    monkeypatch.setitem(sys.modules, "google.colab", package)
    monkeypatch.setattr(config, "DRIVE", str(tmp_path / "drive"))
    monkeypatch.setattr(
        config, "DRIVE_RUNS", str(tmp_path / "drive/MyDrive/cifar100-series/runs")
    )
    monkeypatch.delenv("CIFAR_RUNS", raising=False)
    yield calls, mounts


def test_off_colab_nothing_is_mounted_and_runs_stay_beside_the_notebooks(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("CIFAR_RUNS", raising=False)
    assert config.keep_runs_on_drive(say=pytest.fail) is None
    assert config.from_env().runs == "runs"
    assert config.from_env({"CIFAR_SMOKE": "1"}).run_dir("05_resnet9") == (
        "runs/05_resnet9_smoke"
    )


def test_on_colab_the_runs_go_to_drive(colab):
    _, mounts = colab
    said = []
    runs = config.keep_runs_on_drive(say=said.append)
    assert runs == config.DRIVE_RUNS and Path(runs).is_dir()
    assert mounts == [config.DRIVE]
    assert config.from_env().runs == runs  # every later notebook cell sees it
    assert "resumes" in said[0]
    # A second call (the cell run again) keeps the folder and mounts nothing more.
    assert config.keep_runs_on_drive(say=said.append) == runs and len(mounts) == 1


def test_a_declined_mount_says_what_it_costs_and_keeps_runs_on_the_vm(colab):
    calls, _ = colab
    calls["decline"] = True
    said = []
    assert config.keep_runs_on_drive(say=said.append) is None
    assert "lost when its runtime is recycled" in said[0]
    assert "run this cell again, allow access" in said[0]
    assert config.from_env().runs == "runs"


def _setup(name: str, *more: str) -> list[str]:
    """The code cells of notebook ``name`` from its setup cell (after the install
    cell) to its parameters cell, then the cells that begin with ``more``."""
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    start = next(i for i, c in enumerate(code) if "%pip install" in c.source) + 1
    end = next(
        i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])
    )
    found = [c.source for c in code[start : end + 1]]
    return found + [
        next(c.source for c in code if c.source.startswith(m)) for m in more
    ]


def test_on_colab_notebook_06_finds_the_run_notebook_05_left_on_drive(
    colab, monkeypatch
):
    monkeypatch.setenv("CIFAR_SMOKE", "1")
    # Notebook 05, in one Colab VM: its setup cell mounts Drive, its parameters
    # name the run folder; training leaves a finished run there.
    first = {}
    for source in _setup("05_modern_resnet.ipynb"):
        exec(source, first)
    run_dir = Path(first["RUN_DIR"])
    assert run_dir.parent == Path(config.DRIVE_RUNS)
    run_dir.mkdir(parents=True)
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).save(
        run_dir / "best.keras"
    )
    (run_dir / "history.csv").write_text("epoch,loss\n0,1.0\n")
    resume.RecordTrainingEnd(run_dir, epochs=1).on_train_end()
    # Notebook 06, in a new VM: a fresh process environment, Drive mounted again.
    monkeypatch.delenv("CIFAR_RUNS")
    second = {}
    finding = "finished = [run for run in SAVED_RUNS"
    for source in _setup("06_evaluation_and_inference.ipynb", finding):
        exec(source, second)
    assert second["model_dir"] == str(run_dir)
    assert json.loads((run_dir / "trained.json").read_text())["epochs_run"] == 1
