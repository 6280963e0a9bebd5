"""A run folder as a careless or hostile user leaves it: damaged and disagreeing
files, failed starts, odd ``--out`` paths, two processes at once. Every case ends
in a correct result or one clear error line with exit status 1 (a failure while
working) or 2 (a usage error), never a traceback or a wrong report with status 0.
The kills of a running ``train`` live in ``tests/test_faults.py``."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import pytest

from cifar_helpers import cli, lock, resume, runs, synthetic, training

ARGS = ["--model", "baseline_cnn", "--data", "synthetic", "--smoke"]


def _train(out, *extra):
    return cli.main(["train", *ARGS, "--out", str(out), "--epochs", "2", *extra])


class _StopAtSecondEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt  # as Ctrl-C would, once epoch 0 is committed


@pytest.fixture(scope="module")
def runs_made(tmp_path_factory):
    """A finished run and one interrupted after its first committed epoch."""
    root = tmp_path_factory.mktemp("runs")
    assert _train(root / "finished") == 0
    with pytest.MonkeyPatch.context() as patch:
        original = training.callbacks
        patch.setattr(
            training,
            "callbacks",
            lambda *a, **k: [_StopAtSecondEpoch(), *original(*a, **k)],
        )
        assert _train(root / "interrupted") == 130
    assert resume.committed_backup(root / "interrupted")["epoch"] == 1
    return root


def _copy(runs_made, which, tmp_path):
    return shutil.copytree(runs_made / which, tmp_path / which)


def _one_error_line(capsys, *expected):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _cut(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# What a user (or a disk) can do to a finished run folder, and what `train` (the
# same command again) then says.
FINISHED_DAMAGE = {
    "run.json truncated": (lambda r: _cut(r / "run.json"), "run.json: cannot be read"),
    "run.json empty": (
        lambda r: (r / "run.json").write_text(""),
        "run.json: cannot be read",
    ),
    "run.json of an unknown model": (
        lambda r: (r / "run.json").write_text(
            json.dumps({**json.loads((r / "run.json").read_text()), "model": "vgg"})
        ),
        "run.json: not a run's settings (RunSettings: cannot use model 'vgg'",
    ),
    "results.json truncated": (
        lambda r: _cut(r / "results.json"),
        "results.json: cannot be read",
    ),
    "model.keras truncated": (
        lambda r: _cut(r / "model.keras"),
        "model.keras: not a Keras model file (cut short or replaced). Delete",
    ),
    "results.json without scores": (
        lambda r: (r / "results.json").write_text('{"test_accuracy": "high"}'),
        "results.json: does not hold the test scores",
    ),
    "finished.json truncated": (
        lambda r: (r / "finished.json").write_text('{"files'),
        "finished.json: cannot be read",
    ),
    "run.json null": (
        lambda r: (r / "run.json").write_text("null"),
        "run.json: holds null, not a JSON object",
    ),
    "run.json deleted": (
        lambda r: (r / "run.json").unlink(),
        "but run.json is missing, so its results cannot be trusted. Train into",
    ),
    "run.json and finished.json deleted": (
        lambda r: [(r / n).unlink() for n in ("run.json", "finished.json")],
        "its run.json (the settings a resume must repeat) is missing",
    ),
    "trained.json of another kind": (
        lambda r: (r / "trained.json").write_text('{"epochs_run": "2", "epochs": 2}'),
        "trained.json: not a record of training's end",
    ),
    "finished.json of another kind": (
        lambda r: (r / "finished.json").write_text("false"),
        "finished.json: holds false, not a JSON object",
    ),
    "curves.png deleted": (
        lambda r: (r / "curves.png").unlink(),
        "finished.json records a finished run, but curves.png is missing",
    ),
    "best.keras and classes.json deleted": (
        lambda r: [(r / n).unlink() for n in ("best.keras", "classes.json")],
        "classes.json is missing, so its results cannot be trusted. Train into "
        "another --out folder",
    ),
    "model.keras and best.keras deleted, results kept": (
        lambda r: [(r / n).unlink() for n in ("model.keras", "best.keras")],
        "finished.json records a finished run, but model.keras is missing",
    ),
}


@pytest.mark.parametrize("damage", FINISHED_DAMAGE)
def test_a_damaged_finished_run_is_named_never_reported(
    runs_made, tmp_path, capsys, damage
):
    out = _copy(runs_made, "finished", tmp_path)
    spoil, message = FINISHED_DAMAGE[damage]
    spoil(out)
    assert _train(out) == 1
    _one_error_line(capsys, message)


# What can happen to an interrupted run's folder, and what resuming it says.
INTERRUPTED_DAMAGE = {
    "a history row damaged": (
        lambda r: (r / "history.csv").write_text(
            (r / "history.csv").read_text().replace("\n0,", "\n0,x")
        ),
        "history.csv, line 2: ",
    ),
    "the history's header damaged": (
        lambda r: (r / "history.csv").write_text(
            (r / "history.csv").read_text().replace("accuracy", "acc", 1)
        ),
        "history.csv: has no column accuracy; its header row is damaged",
    ),
    "backup record truncated": (
        lambda r: _cut(r / "backup" / "training_metadata.json"),
        "training_metadata.json: cannot be read",
    ),
    "backup record empty": (
        lambda r: (r / "backup" / "training_metadata.json").write_text(""),
        "training_metadata.json: cannot be read",
    ),
    "backup weights missing": (
        lambda r: (r / "backup" / "epoch-1.weights.h5").unlink(),
        "commits epoch 1, but its weights file epoch-1.weights.h5 is missing",
    ),
    "backup weights truncated": (
        lambda r: _cut(r / "backup" / "epoch-1.weights.h5"),
        "the backup of epoch 1 cannot be loaded",
    ),
    "backup naming epoch 99": (
        lambda r: _edit_json(r / "backup" / "training_metadata.json", epoch=99),
        "the backup commits 99 epoch(s), but history.csv logs 1",
    ),
    "random states of another kind": (
        lambda r: _edit_json(r / "backup" / "training_metadata.json", random_states=5),
        "training_metadata.json: not a backup record",
    ),
    "random states that do not fit": (
        lambda r: _edit_json(
            r / "backup" / "training_metadata.json",
            random_states=[
                ["a"] * len(state)
                for state in json.loads(
                    (r / "backup" / "training_metadata.json").read_text()
                )["random_states"]
            ],
        ),
        "its random generators' states do not fit this model",
    ),
    "best.keras truncated": (
        lambda r: _cut(r / "best.keras"),
        "best.keras: not a Keras model file",
    ),
}


@pytest.mark.parametrize("damage", INTERRUPTED_DAMAGE)
def test_a_damaged_interrupted_run_is_named_with_how_to_go_on(
    runs_made, tmp_path, capsys, damage
):
    out = _copy(runs_made, "interrupted", tmp_path)
    spoil, message = INTERRUPTED_DAMAGE[damage]
    spoil(out)
    assert _train(out) == 1
    line = _one_error_line(capsys, message)
    assert "another --out folder" in line
    assert not (out / "finished.json").exists()


def test_a_run_whose_backup_was_deleted_starts_again_and_trains_every_epoch(
    runs_made, tmp_path, capsys
):
    out = _copy(runs_made, "interrupted", tmp_path)
    shutil.rmtree(out / "backup")
    assert _train(out) == 0
    assert "no committed epoch to resume; training starts again" in (
        capsys.readouterr().out
    )
    assert json.loads((out / "results.json").read_text())["epochs_run"] == 2


def test_a_half_written_log_row_with_a_broken_character_is_dropped_on_resume(
    runs_made, tmp_path
):
    out = _copy(runs_made, "interrupted", tmp_path)
    with open(out / "history.csv", "ab") as log:
        log.write(b"1,0.\xff\n")  # a row of the uncommitted epoch, cut mid-character
    assert _train(out) == 0
    assert json.loads((out / "results.json").read_text())["epochs_run"] == 2


def test_the_same_run_asked_for_with_its_defaults_spelled_out_or_not(
    runs_made, tmp_path, capsys
):
    out = _copy(runs_made, "finished", tmp_path)  # made with --smoke --epochs 2
    argv = ["train", *ARGS, "--out", str(out)]  # --smoke alone means 2 epochs
    assert cli.main(argv) == 0
    assert "already holds a finished run" in capsys.readouterr().out


def test_predict_refuses_a_run_folder_that_has_not_finished(
    runs_made, tmp_path, capsys
):
    out = _copy(runs_made, "finished", tmp_path)
    (out / "finished.json").unlink()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert cli.main(["predict", str(tmp_path / "x.png"), "--model", str(out)]) == 1
    _one_error_line(capsys, "a run folder whose run has not finished")


def test_evaluate_and_predict_name_a_damaged_model(runs_made, tmp_path, capsys):
    out = _copy(runs_made, "finished", tmp_path)
    _cut(out / "model.keras")
    assert cli.main(["evaluate", str(out)]) == 1
    _one_error_line(capsys, "model.keras: not a Keras model file")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    assert cli.main(["predict", str(image), "--model", str(out)]) == 1
    _one_error_line(capsys, "model.keras: not a Keras model file")
    (out / "classes.json").write_text(json.dumps("x" * 100))
    shutil.copy(runs_made / "finished" / "model.keras", out / "model.keras")
    assert cli.main(["predict", str(image), "--model", str(out)]) == 1
    line = _one_error_line(capsys, "classes.json: not a list of names")
    # The advice works: the same train command writes the outcome again.
    assert "and the same command writes the results again from best.keras" in line
    (out / "finished.json").unlink()
    assert _train(out) == 0
    assert "training finished before; writing the results" in capsys.readouterr().out
    assert cli.main(["predict", str(image), "--model", str(out)]) == 0


def test_evaluate_refuses_a_run_that_has_not_finished(runs_made, capsys):
    assert cli.main(["evaluate", str(runs_made / "interrupted")]) == 2
    _one_error_line(capsys, "no finished run here (finished.json is missing)")


# ----------------------------------------------------------- starts that fail


def test_a_start_that_fails_on_its_data_records_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        cli.main(["train", *ARGS[:2], "--data", "/no/such/archive", "--out", str(out)])
        == 1
    )
    _one_error_line(capsys, "/no/such/archive: no such file or folder")
    assert not (out / "run.json").exists()


def test_a_folder_whose_run_never_committed_an_epoch_takes_other_settings(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    out.mkdir()
    other = runs.RunSettings(model="resnet9", data="/no/such/archive", smoke=True)
    (out / "run.json").write_text(json.dumps(runs.dataclasses.asdict(other)))
    monkeypatch.chdir(tmp_path)
    shutil.copy(synthetic.synthetic_archive_path(), "data.tar.gz")
    assert _train(out, "--epochs", "1", "--data", "data.tar.gz") == 0
    said = capsys.readouterr().out
    assert "never committed an epoch, so nothing is lost" in said
    recorded = json.loads((out / "run.json").read_text())
    assert recorded["model"] == "baseline_cnn"
    # A relative data path is recorded absolute: evaluate, or a resume, started
    # from another folder reads the same archive.
    assert recorded["data"] == str(tmp_path / "data.tar.gz")
    monkeypatch.chdir(out)
    assert cli.main(["evaluate", "."]) == 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("seed", -1),
        ("seed", 2**32),
        ("seed", 1.5),
        ("epochs", 0),
        ("epochs", True),
        ("strategy", "gpu"),
        ("model", "vgg"),
        ("smoke", "yes"),
    ],
)
def test_run_settings_refuse_values_of_the_wrong_kind(field, value):
    with pytest.raises(runs.RunError, match=f"cannot use {field} {value!r}"):
        runs.RunSettings(**{"model": "baseline_cnn", field: value})


def test_too_few_images_for_the_smoke_subset_is_one_line(tmp_path, capsys):
    small = synthetic.write_synthetic_archive(
        tmp_path / "small.tar.gz", train_per_class=5, test_per_class=2
    )
    argv = ["train", *ARGS[:2], "--smoke", "--data", str(small)]
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 1
    _one_error_line(capsys, "class 0 has only 5 images")


# ------------------------------------------------------------- odd --out paths


def test_an_empty_out_or_a_folder_of_other_files_is_refused(tmp_path, capsys):
    assert _train("") == 2
    _one_error_line(capsys, "--out is empty")
    home = tmp_path / "home"
    (home / "docs").mkdir(parents=True)
    (home / "docs" / "thesis.partial.tex").write_text("precious")
    assert _train(home) == 2
    _one_error_line(capsys, "a folder that holds other files (docs) and no run")
    assert (home / "docs" / "thesis.partial.tex").read_text() == "precious"
    assert sorted(p.name for p in home.iterdir()) == ["docs"]


def test_an_out_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert _train(tmp_path / "notes.txt") == 2
    _one_error_line(capsys, "notes.txt: a file, not a folder")
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "where, reason",
    [
        ("under a file", "Not a directory"),
        ("too long a name", "File name too long"),
        ("under /proc", "No such file or directory"),
    ],
)
def test_an_out_that_cannot_be_a_folder_is_one_line(tmp_path, capsys, where, reason):
    (tmp_path / "notes.txt").write_text("mine")
    out = {
        "under a file": tmp_path / "notes.txt" / "run",
        "too long a name": tmp_path / ("r" * 300),
        "under /proc": "/proc/cifar-helpers-run",
    }[where]
    assert _train(out) == 1
    _one_error_line(capsys, reason)


def test_a_bad_cifar_smoke_troubles_only_the_command_that_reads_it(
    runs_made, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("CIFAR_SMOKE", "maybe")
    assert cli.main(["train", "--model", "baseline_cnn", "--out", str(tmp_path)]) == 2
    _one_error_line(capsys, "CIFAR_SMOKE='maybe' is not understood")
    finished = str(runs_made / "finished")
    assert cli.main(["evaluate", finished]) == 0
    export = str(tmp_path / "export")
    assert cli.main(["export", finished, "--out", export]) == 0
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert cli.main(["predict", str(tmp_path / "x.png"), "--model", export]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_another_keras_backend_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert _train("anywhere") == 2
    _one_error_line(capsys, "KERAS_BACKEND='torch': the series' models")


# ------------------------------------------------------------------ signals

STUCK = (
    "import ctypes, signal, sys\n"
    "from cifar_helpers import cli\n"
    "cli.STOP_GRACE_SECONDS = 2\n"
    "def stuck(args, argv, prog):\n"
    "    # Native code that does not return to Python for two minutes, whatever\n"
    "    # signal comes (C's sleep, with SIGTERM blocked in this thread).\n"
    "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
    "    print('stuck', flush=True)\n"
    "    ctypes.CDLL(None).sleep(120)\n"
    "cli._run = stuck\n"
    "sys.exit(cli.main(['evaluate', 'anywhere']))\n"
)


def test_a_command_stuck_in_native_code_still_stops_on_sigterm():
    stuck = subprocess.Popen(
        [sys.executable, "-c", STUCK],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert stuck.stdout.readline().strip() == "stuck"
    time.sleep(1)  # into the C call, past the last Python step
    start = time.monotonic()
    stuck.send_signal(signal.SIGTERM)
    _, err = stuck.communicate(timeout=60)
    assert stuck.returncode == 130 and time.monotonic() - start < 30
    assert "still busy after 2 s (blocked in TensorFlow); stopped outright" in err


def test_sigterm_while_starting_up_is_one_line(tmp_path):
    command = [sys.executable, "-m", "cifar_helpers", "train", *ARGS]
    starting = subprocess.Popen(
        [*command, "--out", str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # importing TensorFlow, or loading the data
    starting.send_signal(signal.SIGTERM)
    _, err = starting.communicate(timeout=120)
    assert starting.returncode == 130, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "interrupted" in lines[0], err[-2000:]
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "run.json").exists()


# ------------------------------------------------------ two processes at once

HOLDER = (
    "import sys, time\n"
    "from cifar_helpers import lock\n"
    "with lock.holding(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(120)\n"
)


def test_a_second_train_on_a_folder_in_use_is_refused_naming_the_process(
    tmp_path, capsys
):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _train(out) == 1
        _one_error_line(capsys, f"is in use: process {holder.pid} is training")
        assert not (out / "run.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # The process died without releasing anything: its lock went with it.
    with lock.holding(out):
        assert (out / lock.LOCK_FILE).read_text().strip() == str(os.getpid())


def test_where_flock_is_missing_a_live_process_id_still_locks(tmp_path, monkeypatch):
    import fcntl

    def unsupported(*args):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(fcntl, "flock", unsupported)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / lock.LOCK_FILE).write_text(f"{sleeper.pid}\n")
        refused = pytest.raises(lock.FolderInUseError, match=f"process {sleeper.pid}")
        with refused, lock.holding(tmp_path):
            pass
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
    time.sleep(0.1)
    with lock.holding(tmp_path):  # a dead process's id is stale: taken over
        assert (tmp_path / lock.LOCK_FILE).read_text().strip() == str(os.getpid())
