"""python -m cifar_helpers train / evaluate / predict / export, end to end on the
synthetic archive."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_helpers import cli, devices

SMOKE = ["--data", "synthetic", "--smoke", "--epochs", "2"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "original_resnet"
    argv = ["train", "--model", "original_resnet", "--out", str(out), *SMOKE]
    assert cli.main(argv) == 0
    return out, argv


def test_train_writes_the_whole_run_folder(finished_run):
    out, _ = finished_run
    for name in (
        "model.keras",
        "history.csv",
        "history.json",
        "curves.png",
        "run.json",
        "classes.json",
    ):
        assert (out / name).is_file(), name
    assert any((out / "logs").iterdir())
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 2 and history["keep_prob"] == [1.0, 0.995]


def test_results_record_scores_speed_command_and_environment(finished_run):
    out, argv = finished_run
    results = json.loads((out / "results.json").read_text())
    assert 0 <= results["test_accuracy"] <= results["test_top5"] <= 1
    assert results["epochs_run"] == 2 and results["images_per_second"] > 0
    assert results["synthetic"] and results["smoke"]
    assert results["command"] == "cifar-helpers " + " ".join(argv)
    assert {"tensorflow", "keras", "cifar_helpers"} <= set(results["versions"])
    assert results["hardware"]["cpus"] >= 1


def test_evaluate_scores_the_saved_model_as_train_did(finished_run, capsys):
    out, _ = finished_run
    results = json.loads((out / "results.json").read_text())
    assert cli.main(["evaluate", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"test_accuracy  {results['test_accuracy']:.4f}" in printed
    assert "test_top5" in printed and "test_loss" in printed


def test_the_same_command_again_reports_the_finished_run(finished_run, capsys):
    out, argv = finished_run
    assert cli.main(argv) == 0
    assert "already holds a finished run" in capsys.readouterr().out


def test_a_run_folder_of_another_model_is_refused(finished_run, capsys):
    out, _ = finished_run
    argv = ["train", "--model", "baseline_cnn", "--out", str(out), *SMOKE]
    assert cli.main(argv) == 2
    assert "holds a run with other settings" in capsys.readouterr().err


def test_evaluate_without_a_finished_run_says_so(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    assert "no finished run here" in capsys.readouterr().err


def test_invalid_arguments_get_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--model", "vgg", "--out", str(tmp_path)])
    assert stop.value.code == 2 and "invalid choice: 'vgg'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(
            ["train", "--model", "resnet9", "--out", str(tmp_path), "--epochs", "0"]
        )
    assert "--epochs: '0': use a whole number of at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(
            ["train", "--model", "resnet9", "--out", str(tmp_path), "--seed", "-1"]
        )
    assert "--seed: '-1': use a whole number of at least 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["predict", "photo.jpg", "--model", str(tmp_path), "--top", "x"])
    assert "--top: 'x': use a whole number of at least 1" in capsys.readouterr().err


def _run(*command, **env):
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
    )


def test_the_module_and_the_console_script_run_with_help():
    done = _run(sys.executable, "-m", "cifar_helpers", "train", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m cifar_helpers train")
    assert "--model {baseline_cnn,original_resnet,resnet9,preact_resnet18}" in (
        done.stdout
    )
    assert "--strategy {auto,default,mirrored,multiworker,tpu}" in done.stdout
    script = Path(sys.executable).with_name("cifar-helpers")  # pip install -e .
    done = _run(str(script), "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: cifar-helpers")


def test_help_never_reads_the_environment():
    done = _run(
        sys.executable, "-m", "cifar_helpers", "predict", "--help", CIFAR_SMOKE="bogus"
    )
    assert done.returncode == 0, done.stderr
    assert "usage: python -m cifar_helpers predict" in done.stdout


def test_a_bad_cifar_smoke_gets_one_clear_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFAR_SMOKE", "bogus")
    argv = ["train", "--model", "resnet9", "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: CIFAR_SMOKE='bogus' is not understood: set it")
    assert error.count("\n") == 1 and "Traceback" not in error
    assert not (tmp_path / "run").exists()  # nothing was started


def test_the_old_model_name_still_works_with_a_note(tmp_path, capsys):
    argv = ["train", "--model", "seed_resnet", "--out", str(tmp_path / "run")]
    assert cli.main([*argv, "--data", str(tmp_path / "no-such-archive")]) == 1
    error = capsys.readouterr().err
    assert "note: the model name 'seed_resnet' is now 'original_resnet'" in error
    assert "no-such-archive: no such file or folder" in error
    assert not (tmp_path / "run" / "run.json").exists()  # nothing recorded


def test_a_run_started_under_the_old_name_is_the_same_run(
    finished_run, tmp_path, capsys
):
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    recorded = json.loads((out / "run.json").read_text())
    assert recorded["model"] == "original_resnet"
    (out / "run.json").write_text(json.dumps({**recorded, "model": "seed_resnet"}))
    argv = ["train", "--model", "original_resnet", "--out", str(out), *SMOKE]
    assert cli.main(argv) == 0
    assert "already holds a finished run" in capsys.readouterr().out


def test_a_modern_model_trains_with_the_modern_recipe(tmp_path):
    out = tmp_path / "resnet9"
    argv = ["train", "--model", "resnet9", "--out", str(out), *SMOKE]
    assert cli.main([*argv, "--strategy", "default"]) == 0
    results = json.loads((out / "results.json").read_text())
    # The precision this machine calls for, whatever its devices; one replica, as
    # the strategy was given.
    assert results["precision"] == devices.choose_precision()
    assert results["replicas"] == 1
    history = json.loads((out / "history.json").read_text())
    # One cycle over the two epochs: the last epoch ends at a learning rate of 0;
    # keep_prob falls from 1 to the recipe's 0.9 on the last epoch.
    assert history["learning_rate"][-1] == pytest.approx(0.0, abs=1e-6)
    assert history["keep_prob"] == pytest.approx([1.0, 0.9])
    settings = json.loads((out / "run.json").read_text())
    assert settings == {
        "model": "resnet9",
        "data": "synthetic",
        "smoke": True,
        "epochs": 2,
        "strategy": "default",
        "seed": None,
        "recipe": "modern",
    }


def test_a_strategy_this_machine_lacks_is_refused(tmp_path, capsys):
    argv = ["train", "--model", "resnet9", "--out", str(tmp_path), "--strategy", "tpu"]
    assert cli.main([*argv, *SMOKE]) == 1
    assert "no TPU found" in capsys.readouterr().err
    assert not (tmp_path / "run.json").exists()  # the corrected command can use it


# A fresh Python: the exported SavedModel (with TensorFlow alone), its TF Lite
# conversion, then the exported .keras file, each predicting the same images.
FRESH_READER = """
import sys
import numpy as np
import tensorflow as tf
folder, images = sys.argv[1], np.load(sys.argv[2])
served = tf.saved_model.load(folder + "/saved_model")
np.save(sys.argv[3], served.serve(tf.constant(images)).numpy())
assert "cifar_helpers" not in sys.modules  # no custom code needed
converter = tf.lite.TFLiteConverter.from_saved_model(folder + "/saved_model")
interpreter = tf.lite.Interpreter(model_content=converter.convert())
lite = interpreter.get_signature_runner("serving_default")
np.save(sys.argv[4], lite(images=images)["output_0"])
from cifar_helpers import inference
model, _ = inference.load_model(folder)
np.save(sys.argv[5], model(images, training=False))
"""


def _synthetic_test_images(count):
    from cifar_helpers import data

    cifar = data.load_cifar100("synthetic")
    return cifar.x_test[:count], [cifar.fine_names[y] for y in cifar.y_test[:count]]


def test_predict_names_the_top_five_of_each_image_and_skips_a_broken_one(
    finished_run, tmp_path, capsys
):
    from PIL import Image

    from cifar_helpers import inference

    out, _ = finished_run
    images, _ = _synthetic_test_images(2)
    paths = [tmp_path / "first.png", tmp_path / "broken.jpg", tmp_path / "second.jpg"]
    Image.fromarray(images[0]).save(paths[0])
    paths[1].write_text("not a photo")
    Image.fromarray(images[1]).save(paths[2], quality=95)
    assert cli.main(["predict", *map(str, paths), "--model", str(out)]) == 1
    printed = capsys.readouterr()
    assert "broken.jpg: not an image" in printed.err
    lines = printed.out.splitlines()
    assert lines[0] == str(paths[0]) and lines[6] == str(paths[2]) and len(lines) == 12
    # The first image is a lossless PNG: its top five are the saved model's own.
    predict, names = inference.load_classifier(out)
    top = inference.top_k(predict(images[:1])[0], names)
    assert lines[1:6] == [
        f"  {rank}. {name:24s} {p:7.2%}" for rank, (name, p) in enumerate(top, 1)
    ]


def test_export_of_a_trained_run_predicts_identically_in_a_fresh_process(
    finished_run, tmp_path, capsys
):
    import numpy as np

    from cifar_helpers import inference

    out, _ = finished_run
    folder = tmp_path / "export"
    assert cli.main(["export", str(out), "--out", str(folder)]) == 0
    assert "exported to" in capsys.readouterr().out
    images, _ = _synthetic_test_images(16)
    np.save(tmp_path / "images.npy", images)
    paths = [str(tmp_path / f"{name}.npy") for name in ("served", "lite", "keras")]
    subprocess.run(
        [sys.executable, "-c", FRESH_READER, str(folder), str(tmp_path / "images.npy")]
        + paths,
        check=True,
    )
    model, names = inference.load_model(out)
    # The same computation on the same batch: bitwise the same numbers. (Another
    # batch size or XLA may sum in another order and differ by float rounding.)
    expected = model(images, training=False).numpy()
    np.testing.assert_array_equal(np.load(paths[0]), expected)
    np.testing.assert_array_equal(np.load(paths[2]), expected)
    np.testing.assert_allclose(np.load(paths[1]), expected, atol=1e-5)
    assert inference.load_model(folder)[1] == names


def test_export_refuses_a_folder_that_exists(finished_run, tmp_path, capsys):
    out, _ = finished_run
    assert cli.main(["export", str(out), "--out", str(tmp_path)]) == 1
    assert "exists already" in capsys.readouterr().err


def test_predict_without_a_model_says_what_to_give(tmp_path, capsys):
    assert cli.main(["predict", "photo.jpg", "--model", str(tmp_path)]) == 1
    assert "no model here" in capsys.readouterr().err


def test_an_unwritable_run_folder_gets_a_clear_error(tmp_path, monkeypatch, capsys):
    from cifar_helpers import atomic

    def refuse(path, text):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(atomic, "write_text", refuse)
    out = tmp_path / "run"
    assert (
        cli.main(["train", "--model", "baseline_cnn", "--out", str(out), *SMOKE]) == 1
    )
    error = capsys.readouterr().err
    assert f"{out / 'run.json'}: Permission denied" in error
    assert "choose a folder you can write to" in error
    assert not (out / "run.json").exists()


def test_a_full_disk_mid_run_stops_cleanly_and_keeps_the_last_backup(
    tmp_path, monkeypatch, capsys
):
    import keras

    from cifar_helpers import resume

    saves = keras.Model.save_weights

    def fill_up(self, filepath, *args, **kwargs):
        if "epoch-2" in str(filepath):  # the backup after the second epoch
            raise OSError(errno.ENOSPC, "No space left on device", str(filepath))
        saves(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", fill_up)
    out = tmp_path / "run"
    assert (
        cli.main(["train", "--model", "baseline_cnn", "--out", str(out), *SMOKE]) == 1
    )
    assert "No space left on device" in capsys.readouterr().err
    assert resume.committed_backup(out)["epoch"] == 1  # the first epoch, whole
    assert list(out.rglob("*.partial.*")) == []
    assert not (out / "results.json").exists()


def test_runs_evaluate_scores_a_run_in_a_fresh_process(finished_run):
    # The library function alone, without the command line's imports.
    out, _ = finished_run
    code = (
        "import sys; from cifar_helpers import runs; print(runs.evaluate(sys.argv[1]))"
    )
    done = _run(sys.executable, "-c", code, str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert f"'test_accuracy': {results['test_accuracy']}" in done.stdout
