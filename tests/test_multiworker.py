"""``train --strategy multiworker``: two worker processes on this machine's
loopback, each with its ``TF_CONFIG``, train one smoke run together with the loop
of :mod:`cifar_helpers.loop`, as two machines would.

A worker killed mid-run takes the other down (its collectives fail once the killed
one stops sending heartbeats, about ten seconds later); started again with the same
commands, both resume from the chief's last committed epoch (the other worker keeps
no state of its own: it takes the chief's) and end as a run that was never
interrupted.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifar_helpers import synthetic

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3
DIGEST = re.compile(r"weights digest ([0-9a-f]{16})")


def _start(out, config, log):
    """One worker of a seeded smoke run on synthetic data, its output to ``log``."""
    env = {
        **os.environ,
        "CIFAR_SMOKE": "1",
        "CIFAR_DATA": "synthetic",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_CONFIG": config,
    }
    command = [
        *(sys.executable, "-m", "cifar_helpers", "train", "--model", "resnet9"),
        *("--out", str(out), "--strategy", "multiworker"),
        *("--epochs", str(EPOCHS), "--seed", "0"),
    ]
    handle = open(log, "w")  # noqa: SIM115 (the process writes it until it ends)
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
    )
    process.log, process.handle = Path(log), handle
    return process


def _cluster(out, logs, configs):
    """Start both workers; return their processes. The synthetic archive is written
    first, here: two workers writing it at once would share its partial file."""
    synthetic.synthetic_archive_path()
    return [
        _start(out, config, logs / f"worker{index}.log")
        for index, config in enumerate(configs)
    ]


def _end(process, timeout=300):
    """Wait for ``process``; return its exit status and output."""
    try:
        code = process.wait(timeout=timeout)
    finally:
        process.handle.close()
    return code, process.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tf_configs):
    """A run the two workers trained to its end: its folder and their outputs."""
    base = tmp_path_factory.mktemp("uninterrupted")
    out = base / "run"
    outcomes = [_end(process) for process in _cluster(out, base, tf_configs())]
    for code, output in outcomes:
        assert code == 0, output[-3000:]
    return out, [output for _, output in outcomes]


def test_two_local_workers_train_a_smoke_run_to_the_end_with_the_same_weights(
    uninterrupted,
):
    out, outputs = uninterrupted
    digests = [DIGEST.findall(output) for output in outputs]
    assert all(len(found) == 1 for found in digests), outputs
    assert digests[0] == digests[1]
    results = json.loads((out / "results.json").read_text())
    assert results["replicas"] == 2 and results["epochs_run"] == EPOCHS
    assert results["weights_digest"] == digests[0][0]
    # The chief wrote the run folder as fit would; the other worker keeps no state.
    for name in ("history.csv", "best.keras", "model.keras", "finished.json"):
        assert (out / name).is_file(), name
    worker = out / "workers" / "worker-1"
    assert {path.name for path in worker.iterdir()} <= {".lock"}


def _committed_epochs(out) -> int:
    record = out / "backup" / "training_metadata.json"
    try:
        return json.loads(record.read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def test_a_killed_worker_and_its_peer_restarted_resume_and_end_as_if_never_killed(
    uninterrupted, tmp_path, tf_configs
):
    out = tmp_path / "run"
    chief, worker = _cluster(out, tmp_path, tf_configs())
    deadline = time.monotonic() + 300
    while _committed_epochs(out) < 1 and time.monotonic() < deadline:
        assert chief.poll() is None, _end(chief)[1][-3000:]
        time.sleep(0.2)
    assert _committed_epochs(out) >= 1, "no epoch was committed"
    worker.send_signal(signal.SIGKILL)
    _end(worker)
    # The chief notices the lost peer (missed heartbeats) and stops with advice.
    code, output = _end(chief, timeout=120)
    assert code == 1, output[-3000:]
    assert "a worker of the cluster stopped" in output
    assert "the run resumes from the chief's last committed epoch" in output
    committed = _committed_epochs(out)
    assert 1 <= committed < EPOCHS

    again = tmp_path / "again"
    again.mkdir()
    restarted = [_end(process) for process in _cluster(out, again, tf_configs())]
    for code, output in restarted:
        assert code == 0, output[-3000:]
        # It resumed: no epoch before the committed ones ran again.
        assert f"Epoch {committed}/{EPOCHS}" not in output
        assert f"Epoch {committed + 1}/{EPOCHS}" in output
    digests = {DIGEST.findall(output)[-1] for _, output in restarted}
    expected = json.loads((uninterrupted[0] / "results.json").read_text())
    assert digests == {expected["weights_digest"]}
