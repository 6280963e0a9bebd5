"""Kill ``python -m cifar_helpers train`` with SIGKILL at chosen moments, run the same
command again, and check that it resumes, loses at most the epoch in progress, and
finishes with a loadable model, a complete history and a correct results.json.

Every scenario's killed run starts at once, then every rerun (each is a fresh
process with TensorFlow's start-up cost; in parallel they share the machine's cores).
The kills come from ``tests/fault_run.py``.
"""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EPOCHS = 2
# Four run folders, each killed (or stopped) at three moments in turn and then run
# to the end; the chains run side by side. Together they cover, in the first epoch
# and in a later one, a kill mid-epoch, between epochs, before an epoch's backup is
# committed, and halfway through writing the best checkpoint and the backup; then
# a SIGTERM between epochs; and after training, a kill halfway through writing the
# final model, between the record of training's end and the backup's deletion, and
# between the results and the record that the run finished.
CHAINS = {
    "a": ("in-best@0", "mid-epoch@1", "in-final@0", "none"),
    "b": ("after-epoch@0", "in-backup@1", "before-commit@1", "none"),
    "e": ("before-commit@0", "mid-epoch@0", "after-trained@0", "none"),
    "f": ("in-backup@0", "term-after-epoch@0", "before-finished@0", "none"),
}
TRAINING_DONE = ("in-final", "after-trained", "before-finished")
# Two uninterrupted runs of the same seeded command, for reproducibility.
TWINS = {"c": ("none",), "d": ("none",)}
HALF_WRITTEN = {
    "in-best@0": "best.partial.keras",
    "in-backup@1": "epoch-2.partial.weights.h5",
    "in-backup@0": "epoch-1.partial.weights.h5",
    "in-final@0": "model.partial.keras",
}
RUNNER = str(Path(__file__).with_name("fault_run.py"))


def _command(fault, out):
    train = ["train", "--model", "baseline_cnn", "--out", str(out), "--data"]
    train += ["synthetic", "--smoke", "--epochs", str(EPOCHS), "--seed", "0"]
    return [sys.executable, RUNNER, fault, *train]


def _run_all(commands):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    running = [
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for command in commands
    ]
    return [(p.communicate(timeout=600)[0], p.returncode) for p in running]


def _epochs_started(output):
    return [int(k) - 1 for k in re.findall(rf"^Epoch (\d+)/{EPOCHS}", output, re.M)]


def _partials(folder):
    return sorted(p.name for p in Path(folder).rglob("*.partial.*"))


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    """For each chain: its run folder and, for each stage, the fault, the output,
    the exit code and the partial files present when the process had ended."""
    from cifar_helpers import synthetic

    synthetic.synthetic_archive_path()  # written once, before the processes race for it
    root = tmp_path_factory.mktemp("faults")
    every = {**CHAINS, **TWINS}
    outs = {name: root / name for name in every}
    stages = {name: [] for name in every}
    for step in range(max(map(len, every.values()))):
        faults = {
            name: chain[step] for name, chain in every.items() if step < len(chain)
        }
        done = _run_all([_command(fault, outs[name]) for name, fault in faults.items()])
        for name, (output, code) in zip(faults, done, strict=True):
            stages[name].append((faults[name], output, code, _partials(outs[name])))
    return {name: (outs[name], stages[name]) for name in every}


@pytest.mark.parametrize("chain", CHAINS)
def test_each_kill_ends_the_process_and_each_rerun_resumes_where_it_stopped(
    chains, chain
):
    _, stages = chains[chain]
    for (fault, output, code, _), (_, next_output, _, _) in zip(
        stages, stages[1:], strict=False
    ):
        if fault.startswith("term"):  # stopped as Ctrl-C stops it: one clear line
            assert code == 130, f"{fault}: exit {code}\n{output[-2000:]}"
            assert "error: interrupted. The same command resumes" in output
            assert "Traceback" not in output
        else:
            assert code == -signal.SIGKILL, f"{fault} did not kill:\n{output[-2000:]}"
        in_progress = _epochs_started(output)[-1]
        started = _epochs_started(next_output)
        if fault.startswith(TRAINING_DONE):  # training had finished: results only
            assert in_progress == EPOCHS - 1 and started == [], fault
            assert "training finished before" in next_output
        elif fault.startswith(("after-epoch", "term-after-epoch")):  # committed
            assert started[0] == in_progress + 1, (fault, started)
        else:  # the interrupted epoch runs again: at most one epoch lost
            assert started[0] == in_progress, (fault, started)
    final_fault, output, code, _ = stages[-1]
    assert final_fault == "none" and code == 0, output[-3000:]


@pytest.mark.parametrize("chain", CHAINS)
def test_a_kill_mid_write_leaves_its_half_file_only_under_a_partial_name(chains, chain):
    _, stages = chains[chain]
    for fault, _, _, left in stages:
        expected = [HALF_WRITTEN[fault]] if fault in HALF_WRITTEN else []
        assert left == expected, fault


@pytest.mark.parametrize("chain", CHAINS)
def test_the_finished_run_is_complete_loadable_and_clean(chains, chain):
    import keras

    import cifar_helpers.models  # noqa: F401  registers the custom layers

    out, _ = chains[chain]
    results = json.loads((out / "results.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert results["epochs_run"] == EPOCHS and len(history["loss"]) == EPOCHS
    assert np.all(np.isfinite(history["val_loss"]))
    logged = (out / "history.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in logged] == [str(e) for e in range(EPOCHS)]
    model = keras.saving.load_model(out / "model.keras")
    assert model.output_shape == (None, 100)
    assert _partials(out) == [] and not (out / "backup").exists()
    assert json.loads((out / "trained.json").read_text())["epochs_run"] == EPOCHS
    assert (out / "finished.json").is_file()


def _weights(out):
    import keras

    import cifar_helpers.models  # noqa: F401  registers the custom layers

    return keras.saving.load_model(out / "model.keras").get_weights()


def _history_without_times(out):
    history = json.loads((out / "history.json").read_text())
    history.pop("epoch_seconds")
    return history


def test_a_seeded_run_repeats_bit_for_bit(chains):
    (first, [(*_, code_c, _)]), (second, [(*_, code_d, _)]) = chains["c"], chains["d"]
    assert code_c == code_d == 0
    for a, b in zip(_weights(first), _weights(second), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _history_without_times(first) == _history_without_times(second)


@pytest.mark.parametrize("chain", CHAINS)
def test_a_killed_and_resumed_run_ends_bit_for_bit_as_one_never_interrupted(
    chains, chain
):
    # The backup holds the random generators' states (augmentation, DropBlock) and
    # fit fast-forwards the seeded shuffle, so each resume continues the same draws.
    resumed, twin = chains[chain][0], chains["c"][0]
    for a, b in zip(_weights(resumed), _weights(twin), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _history_without_times(resumed) == _history_without_times(twin)
