"""tools/series.py, the runner of ``make series``: its table, its bookkeeping, and
one notebook executed end to end in the smoke form CI can afford."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_helpers import config

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("series", ROOT / "tools" / "series.py")
series = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(series)

SMOKE = ["--smoke", "--data", "synthetic"]
MACHINE = {
    "hardware": {"gpus": ["NVIDIA H100 80GB HBM3"], "tpus": 0, "cpus": 16},
    "versions": {"tensorflow": "2.21.0", "keras": "3.15.1"},
}
RESULT_04 = {
    "notebook": "04",
    "model": "original_resnet",
    "precision": "float32",
    "epochs": 41,
    "val_accuracy": 0.70449,
    "test_accuracy": 0.6987,
}


def _record(smoke=False, **notebooks):
    return {"settings": {"smoke": smoke, "data": None}, "notebooks": notebooks}


def _entry(name, status="done", result=None):
    return {
        "name": name,
        "status": status,
        "minutes": 12.345,
        "hardware": "NVIDIA H100 80GB HBM3",
        "versions": MACHINE["versions"],
        "parameters": {},
        "result": result,
    }


def _body(markdown):
    return [line for line in markdown.splitlines() if line.startswith("| 0")]


# ---------------------------------------------------------------- the table


def test_a_notebook_without_results_has_dashes_in_its_row():
    rows = series.table_rows(_record(**{"01": _entry("01_data_pipeline")}))
    (line,) = _body(series.render_table(rows))
    assert line == (
        "| 01_data_pipeline | — | NVIDIA H100 80GB HBM3 | — | — | 12.3 | — | — | — |"
    )


def test_accuracies_are_percentages_with_one_decimal():
    rows = series.table_rows(_record(**{"04": _entry("04_x", result=RESULT_04)}))
    (line,) = _body(series.render_table(rows))
    assert "| original_resnet |" in line and "| float32 | 41 | 12.3 |" in line
    assert "| 70.4 % | 69.9 % |" in line


def test_only_notebook_04_carries_the_original_series_result():
    record = _record(
        **{
            "02": _entry("02_x", result={**RESULT_04, "notebook": "02"}),
            "04": _entry("04_x", result=RESULT_04),
        }
    )
    line_02, line_04 = _body(series.render_table(series.table_rows(record)))
    assert line_02.endswith("| — |")
    assert line_04.endswith("| 70.7 % (reported, part 7) |")


def test_the_table_has_a_row_only_for_notebooks_done():
    record = _record(
        **{"01": _entry("01_x"), "02": _entry("02_x", status="failed")},
    )
    assert [row["notebook"] for row in series.table_rows(record)] == ["01"]


def test_a_smoke_report_says_its_results_are_not_cifar100_results():
    record = _record(smoke=True, **{"01": _entry("01_x")})
    record["settings"]["data"] = "synthetic"
    report = series.render_report(record, command="tools/series.py", date="today")
    assert "- Mode: smoke" in report
    assert "show the code runs; they are not CIFAR-100 results" in report
    assert "TensorFlow 2.21.0, Keras 3.15.1" in report


def test_a_full_report_has_no_smoke_sentence_and_names_the_command():
    record = _record(**{"04": _entry("04_x", result=RESULT_04)})
    report = series.render_report(record, command="tools/series.py", date="today")
    assert "- Mode: full" in report and "`tools/series.py`" in report
    assert "not CIFAR-100 results" not in report


def test_a_report_after_a_failure_says_where_the_series_stopped():
    entry = {**_entry("02_x", status="failed"), "error": "ValueError in cell [3]: x"}
    report = series.render_report(
        _record(**{"01": _entry("01_x"), "02": entry}), command="c", date="d"
    )
    assert "- 02 (02_x) failed: ValueError in cell [3]: x" in report


# ---------------------------------------------------------------- bookkeeping


def test_a_notebook_done_with_the_same_parameters_is_done():
    assert series.is_done(_entry("01_x"), {})


@pytest.mark.parametrize("status", ["failed", "interrupted", "running"])
def test_a_notebook_that_did_not_finish_is_not_done(status):
    assert not series.is_done(_entry("01_x", status=status), {})


def test_a_notebook_done_with_other_parameters_is_not_done():
    assert not series.is_done(_entry("01_x"), {"EPOCHS": 5})


def test_a_value_given_with_p_is_read_as_python_reads_it():
    assert series.parse_value("5") == 5 and series.parse_value("None") is None
    assert series.parse_value("faithful") == "faithful"


def test_gpus_of_one_kind_are_counted():
    hardware = {"gpus": ["A100", "A100"], "tpus": 0, "cpus": 8}
    assert series.hardware_name(hardware) == "2 × A100"
    assert series.hardware_name({"gpus": [], "tpus": 0, "cpus": 2}) == "CPU (2 cores)"


@pytest.fixture
def fake_runs(monkeypatch):
    """main() with notebooks that are not executed: each call is recorded, and a
    notebook whose number is in ``fail`` raises as a failed cell would."""
    for name in ("CIFAR_SMOKE", "CIFAR_DATA", "CIFAR_RUNS"):
        monkeypatch.setenv(name, "")  # main() sets them; the test puts them back
    ran, fail = [], set()

    def run_notebook(source, output, parameters):
        ran.append(source.name[:2])
        output.write_text("{}")
        if source.name[:2] in fail:
            raise ValueError("a cell failed")

    monkeypatch.setattr(series, "run_notebook", run_notebook)
    monkeypatch.setattr(series, "machine", lambda: MACHINE)
    return ran, fail


def test_a_rerun_skips_the_notebooks_done(tmp_path, fake_runs, capsys):
    ran, _ = fake_runs
    argv = [*SMOKE, "--only", "01,02", "--out", str(tmp_path)]
    assert series.main(argv) == 0
    assert series.main(argv) == 0
    assert ran == ["01", "02"]
    assert "01_data_pipeline: done on" in capsys.readouterr().out


def test_again_reruns_the_notebooks_done(tmp_path, fake_runs):
    ran, _ = fake_runs
    argv = [*SMOKE, "--only", "01", "--out", str(tmp_path)]
    assert series.main(argv) == 0
    assert series.main([*argv, "--again"]) == 0
    assert ran == ["01", "01"]


def test_a_failed_notebook_stops_the_series_and_runs_again_next_time(
    tmp_path, fake_runs, capsys
):
    ran, fail = fake_runs
    argv = [*SMOKE, "--only", "01,02,03", "--out", str(tmp_path)]
    fail.add("02")
    assert series.main(argv) == 1
    error = capsys.readouterr().err
    assert "Notebook 02_baseline_cnn.ipynb failed: ValueError: a cell failed" in error
    assert str(tmp_path / "notebooks" / "02_baseline_cnn.ipynb") in error
    assert "make series" in error
    record = json.loads((tmp_path / "series.json").read_text())
    assert record["notebooks"]["02"]["status"] == "failed"
    assert "01_data_pipeline" in (tmp_path / "results.md").read_text()
    fail.clear()
    assert series.main(argv) == 0
    assert ran == ["01", "02", "02", "03"]


def test_a_results_file_written_by_the_notebook_fills_its_row(
    tmp_path, fake_runs, monkeypatch
):
    def run_notebook(source, output, parameters):
        run = config.RunConfig(smoke=True, runs=os.environ["CIFAR_RUNS"])
        results = Path(run.result_file("04"))  # runs/results_smoke/04.json
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(RESULT_04))

    monkeypatch.setattr(series, "run_notebook", run_notebook)
    assert series.main([*SMOKE, "--only", "04", "--out", str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert row["test_accuracy"] == RESULT_04["test_accuracy"]
    assert row["original_series"] == "70.7 % (reported, part 7)"


def test_the_notebooks_writer_and_the_runners_reader_agree(tmp_path):
    # training.record_result is what notebooks 02-05 call; the runner reads it.
    import time

    from cifar_helpers import training

    since = time.time()
    run = config.RunConfig(runs=str(tmp_path))
    training.record_result(
        run,
        "04",
        model="original_resnet (original recipe)",
        epochs=41,
        val_accuracy=0.70449,
        test_accuracy=0.6987,
    )
    result = series.read_result(tmp_path / "results" / "04.json", since)
    assert result["precision"] == "float32" and result["epochs"] == 41
    entry = _entry("04_residual_network", result=result)
    (row,) = _body(series.render_table(series.table_rows(_record(**{"04": entry}))))
    assert "70.4" in row and "69.9" in row and "41" in row and "float32" in row


def test_a_results_file_older_than_the_run_is_not_taken(tmp_path):
    path = tmp_path / "results" / "04.json"
    path.parent.mkdir()
    path.write_text(json.dumps(RESULT_04))
    os.utime(path, (1_000_000, 1_000_000))
    assert series.read_result(path, since=2_000_000) is None
    assert series.read_result(path, since=1_000_000) == RESULT_04


def test_a_folder_of_a_smoke_series_refuses_a_full_one(tmp_path, fake_runs, capsys):
    assert series.main([*SMOKE, "--only", "01", "--out", str(tmp_path)]) == 0
    argv = ["--no-smoke", "--data", "synthetic", "--only", "01"]
    assert series.main([*argv, "--out", str(tmp_path)]) == 2
    assert "Choose another --out, or add --again" in capsys.readouterr().err


def test_an_unknown_notebook_is_a_usage_error(tmp_path, fake_runs, capsys):
    assert series.main([*SMOKE, "--only", "09", "--out", str(tmp_path)]) == 2
    assert "no notebook 09" in capsys.readouterr().err


# ---------------------------------------------------------------- end to end


def test_the_smoke_series_of_notebook_01_runs_then_resumes(tmp_path):
    command = [sys.executable, str(ROOT / "tools" / "series.py"), *SMOKE]
    command += ["--only", "01", "--out", str(tmp_path)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    first = subprocess.run(command, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    executed = tmp_path / "notebooks" / "01_data_pipeline.ipynb"
    assert executed.exists()
    record = json.loads((tmp_path / "series.json").read_text())
    assert record["notebooks"]["01"]["status"] == "done"
    assert _body((tmp_path / "results.md").read_text())[0].startswith(
        "| 01_data_pipeline |"
    )
    modified = executed.stat().st_mtime
    second = subprocess.run(command, capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "01_data_pipeline: done on" in second.stdout
    assert executed.stat().st_mtime == modified
