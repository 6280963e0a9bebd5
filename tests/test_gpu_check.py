"""tools/gpu_check.py (``make gpu-check``): its reduced form, end to end on the CPU,
and the helpers that read pytest's and TensorFlow's messages."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_helpers import models

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check", TOOL)
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)

# What TensorFlow 2.x raises from a Keras training step whose gradient needs an op
# without a deterministic GPU kernel (the format of its graph execution errors).
GRAPH_ERROR = """Graph execution error:

Detected at node gradient_tape/resnet9_1/layer2_dropblock_1/UnsortedSegmentSum_1 \
defined at (most recent call last):
  File "/work/main/tools/gpu_check.py", line 300, in <module>

Deterministic GPU implementation of unsorted segment reduction op not available.
\t [[{{node gradient_tape/resnet9_1/layer2_dropblock_1/UnsortedSegmentSum_1}}]] \
[Op:__inference_multi_step_on_iterator_4242]"""
# And from an op run eagerly (tensorflow/tensorflow's image_ops tests expect it).
EAGER_ERROR = (
    "{{function_node __wrapped__AdjustContrastv2_device_/job:localhost/replica:0/"
    "task:0/device:GPU:0}} A deterministic GPU implementation of AdjustContrastv2 "
    "is not currently available. [Op:AdjustContrastv2] name: "
)


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    # About 3 minutes on 2 cores; the budget leaves room for a busy CI machine
    # and ends before pytest's 600 s timeout.
    budget = ["--budget", "540"]
    done = subprocess.run(
        [sys.executable, TOOL, "--form", "reduced", "--out", out, *budget],
        cwd=ROOT,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
    )
    return done, json.loads(out.read_text())


def test_reduced_form_passes_every_check_and_says_so(reduced):
    done, record = reduced
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert record["form"] == "reduced"
    assert list(record["checks"]) == list(gpu_check.CHECKS)
    for name, check in record["checks"].items():
        assert check["status"] == "passed", (name, check.get("error"))
        assert check["seconds"] > 0
        assert name in done.stdout.split("gpu-check, reduced form")[1]


def test_reduced_form_records_the_machine_and_the_date(reduced):
    _, record = reduced
    assert {"tensorflow", "keras", "cifar_helpers"} <= set(record["versions"])
    assert record["hardware"]["gpus"] == []
    assert record["date"][:2] == "20"


def test_reduced_form_runs_the_package_tests_and_notebook_01(reduced):
    _, record = reduced
    unit = record["checks"]["unit_tests"]["measurements"]
    assert unit["tests"] == "tests/test_package.py"
    assert unit["passed"] > 0 and unit["failed"] == 0
    notebooks = record["checks"]["notebooks"]["measurements"]
    assert notebooks["notebooks"] == "notebooks/01_data_pipeline.ipynb"
    assert notebooks["passed"] > 0 and notebooks["failed"] == 0


def test_reduced_form_times_a_compiled_step_of_every_catalogue_model(reduced):
    _, record = reduced
    rows = record["checks"]["training_steps"]["measurements"]["models"]
    assert set(rows) == set(models.CATALOGUE)
    for name, row in rows.items():
        spec = models.spec(name)
        assert row["batch_size"] == (spec.smoke_batch or spec.recipe.batch_size)
        assert row["jit_compile"] is True and row["precision"] == "float32"
        assert row["first_call_seconds"] > row["step_seconds"] > 0
        assert row["epoch_seconds_estimate"] > row["step_seconds"]


def test_reduced_form_finds_two_seeded_runs_bit_for_bit_equal(reduced):
    _, record = reduced
    determinism = record["checks"]["determinism"]["measurements"]
    assert determinism["equal"] is True and determinism["max_abs_difference"] == 0


def test_reduced_form_merges_the_benchmark_json(reduced):
    _, record = reduced
    benchmark = record["checks"]["benchmark"]["measurements"]
    assert benchmark["rounds"] == 1 and benchmark["models"]
    assert "versions" not in benchmark


def test_pytest_counts_reads_the_summary_line():
    output = "....F.\nFAILED tests/test_x.py::test_y\n1 failed, 47 passed, 2 skipped, "
    output += "1 error, 3 warnings in 12.30s\n"
    assert gpu_check.pytest_counts(output) == {
        "failed": 1,
        "passed": 47,
        "skipped": 2,
        "errors": 1,
        "warnings": 3,
    }


def test_pytest_counts_is_empty_without_a_summary_line():
    assert gpu_check.pytest_counts("Killed\n") == {}


def test_blamed_op_names_the_node_of_a_graph_error():
    op, node = gpu_check.blamed_op(GRAPH_ERROR)
    assert op == "UnsortedSegmentSum"
    assert node == "gradient_tape/resnet9_1/layer2_dropblock_1/UnsortedSegmentSum_1"


def test_blamed_op_names_the_op_of_an_eager_error():
    assert gpu_check.blamed_op(EAGER_ERROR) == ("AdjustContrastv2", None)


def test_blamed_op_falls_back_to_the_kernel_the_message_names():
    message = (
        "A deterministic GPU implementation of fused batch-norm backprop, when "
        "training is disabled, is not currently available."
    )
    assert gpu_check.blamed_op(message) == (
        "fused batch-norm backprop, when training is disabled",
        None,
    )


def test_shortened_keeps_the_start_and_the_end():
    message = "why" + "x" * 5000 + "where"
    short = gpu_check.shortened(message, limit=100)
    assert short.startswith("why") and short.endswith("where") and len(short) < 200
