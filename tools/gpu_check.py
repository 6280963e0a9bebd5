"""GPU readiness in one command (``make gpu-check``): is this machine, with this
checkout, ready to train the series' models?

Five checks, each recorded in one JSON file (``--out``, default gpu_check.json)
that is rewritten after every check, so a crash keeps what was measured. The
first two run side by side (neither is timed); the timed ones after them run
alone, in order:

1. unit tests: ``pytest -n <cores> --dist loadfile`` over tests/ (on the CPU, as
   tests/conftest.py pins them), except tests/test_gpu_check.py, which runs this
   program's reduced form;
2. notebooks in smoke mode on synthetic data, under nbval, on the GPU (``make
   notebooks`` hides it), four at a time;
3. training steps: one ``fit`` call of every catalogue model at full size and its
   recipe's batch, in the precision a run of it uses (``spec.precision``; "auto"
   is the hardware's) with XLA; the first (compiling) call's seconds, the mean
   step after it, images per second and an epoch time estimated from those steps;
   an out-of-memory failure is recorded per model;
4. determinism: ``training.make_reproducible`` (op determinism, process-wide, so
   in a process of its own; Keras then compiles without XLA), then a small model
   trained twice from one seed: the weights must match bit for bit, and an op
   with no deterministic GPU kernel is named;
5. benchmark: ``benchmarks/modern_speed.py``, its JSON merged in.

Two forms (``--form auto`` picks ``gpu`` when TensorFlow sees a GPU):
``gpu`` runs all of the above within 8 minutes on one GPU; ``reduced`` runs the
same code small enough for a CPU-only CI machine, so that it cannot rot: only
tests/test_package.py and notebook 01, the catalogue's smoke sizes and batches
(XLA still on), and a one-round benchmark at a small batch.

Every check runs in a child process; this one never touches the GPU. A check
still running when the time budget (``--budget``) is spent is stopped and fails,
and the checks not yet started are skipped. The exit status is 1 when a check
failed.

Usage: python tools/gpu_check.py [--form auto|gpu|reduced] [--out gpu_check.json]
       [--budget 480]
"""

import argparse
import dataclasses
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cifar_helpers import atomic  # the package writes every file it keeps this way

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ("unit_tests", "notebooks", "training_steps", "determinism", "benchmark")
# Checks that run at the same time: neither is timed, the unit tests use the CPU,
# the notebooks mostly the GPU. The timed checks after them run alone.
SIDE_BY_SIDE = ("unit_tests", "notebooks")
MARK = "@@gpu_check "  # a child's line that carries a JSON result
LIVE = set()  # the child processes running now
# The training split: 50,000 images less the 20 a class held out for validation
# (data.with_validation_split).
EPOCH_IMAGES = 48_000
# Notebooks executed at once in the gpu form (each its own kernel, sharing the GPU).
NOTEBOOK_WORKERS = 4
# Training steps timed after the compiling call (rounded up to whole calls).
TIMED_STEPS = {"gpu": 40, "reduced": 2}
DETERMINISM_MODEL = "resnet9"
DETERMINISM_SEED = 42
DETERMINISM_STEPS = 8
BENCHMARK_OPTIONS = {
    "gpu": ["--gpu", "--rounds", "2"],
    "reduced": ["--rounds", "1", "--batch", "2", "--steps", "1"],
}


# ---------------------------------------------------------------- pure helpers


def pytest_counts(output: str) -> dict:
    """Outcome counts from pytest's last summary line in ``output``, such as
    ``"1 failed, 47 passed, 2 skipped in 12.3s"``: ``{"failed": 1, "passed":
    47, "skipped": 2}`` ("error"/"warning" counted as "errors"/"warnings");
    ``{}`` when there is no summary line."""
    outcomes = "passed|failed|errors?|skipped|deselected|xfailed|xpassed|warnings?"
    pattern = rf"(\d+) ({outcomes})"
    for line in reversed(output.splitlines()):
        if re.search(r"\bin [\d.]+s\b", line) and re.search(pattern, line):
            counts = {}
            for number, outcome in re.findall(pattern, line):
                outcome = {"error": "errors", "warning": "warnings"}.get(
                    outcome, outcome
                )
                counts[outcome] = int(number)
            return counts
    return {}


def blamed_op(message: str) -> tuple:
    """``(op, node)`` that a TensorFlow determinism error names: the node is the
    graph node's full name (``[[{{node ...}}]]`` or ``Detected at node ...``), the
    op its last part (the op type, without a ``_1`` suffix), else the eager
    ``[Op:...]``, else what follows "GPU implementation of"; None for what the
    message does not say."""
    node = re.search(r"\[\[\{\{node ([^}]+)\}\}\]\]|\[\[node (\S+?)[\s\]]", message)
    node = node and (node.group(1) or node.group(2))
    if node is None:
        detected = re.search(r"Detected at node '?([^\s']+)'?", message)
        node = detected and detected.group(1)
    if node:
        return re.sub(r"_\d+$", "", node.rsplit("/", 1)[-1]), node
    eager = re.search(r"\[Op:(\w+)\]", message)
    if eager and not eager.group(1).startswith("__"):
        return eager.group(1), None
    named = re.search(
        r"GPU implementation of (.+?)(?: is not| not available|\.\s|\.$)", message
    )
    return (named.group(1).strip(" ,") if named else None), None


def shortened(message: str, limit: int = 1500) -> str:
    """``message`` cut to about ``limit`` characters, keeping its start and its
    end (TensorFlow puts the graph's traceback between what failed and why)."""
    message = str(message).strip()
    if len(message) <= limit:
        return message
    half = limit // 2
    cut = f"\n[... {len(message) - 2 * half} characters ...]\n"
    return message[:half] + cut + message[-half:]


def cores() -> int:
    """The CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# ---------------------------------------------------------------- child processes


class Deadline:
    """The time budget, and the seconds left of it."""

    def __init__(self, seconds: float):
        self.seconds, self.end = seconds, time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


@dataclasses.dataclass
class Child:
    """What a child process left: its exit status (None when it was stopped at the
    deadline), its output and the JSON results it marked."""

    returncode: int | None
    output: str
    results: list


def run_child(
    command, deadline: Deadline, *, env=None, on_result=None, echo=True
) -> Child:
    """Run ``command`` in ROOT until it ends or the deadline passes (then its
    process group is interrupted, and killed 10 s later), printing its output when
    ``echo``. Lines that start with :data:`MARK` are JSON results, passed to
    ``on_result`` as they come."""
    process = subprocess.Popen(
        [str(part) for part in command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,  # its own group: stopped with all it started
    )
    LIVE.add(process)
    stopped = threading.Event()

    def stop():
        stopped.set()
        stop_group(process)

    timer = threading.Timer(max(deadline.left(), 0), stop)
    timer.start()
    lines, results = [], []
    try:
        for line in process.stdout:
            if line.startswith(MARK):
                results.append(json.loads(line[len(MARK) :]))
                if on_result:
                    on_result(results[-1])
            else:
                lines.append(line)
                if echo:
                    print(line, end="", flush=True)
        process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:  # this program was interrupted: stop it too
            stop_group(process)
        LIVE.discard(process)
    returncode = None if stopped.is_set() else process.returncode
    return Child(returncode, "".join(lines), results)


def stop_group(process) -> None:
    """Interrupt ``process`` and all it started; kill them 10 s later."""
    for sig, grace in ((signal.SIGINT, 10), (signal.SIGKILL, 0)):
        try:
            os.killpg(process.pid, sig)
            process.wait(grace)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def child_command(mode: str, form: str = "auto") -> list:
    """This program run as the child that does ``mode`` (see :data:`CHILDREN`)."""
    return [sys.executable, Path(__file__).resolve(), "--_child", mode, "--form", form]


def emit(result: dict) -> None:
    """Print one JSON result for the parent (see :data:`MARK`)."""
    print(MARK + json.dumps(result, default=str), flush=True)


def error_text(error: BaseException) -> str:
    return shortened(f"{type(error).__name__}: {error}")


def probe_child(_form) -> None:
    import tensorflow as tf

    from cifar_helpers import devices, models

    emit(
        {
            "environment": devices.environment(),
            "gpus": len(tf.config.list_physical_devices("GPU")),
            "catalogue": list(models.CATALOGUE),
        }
    )


def training_steps_child(form: str) -> None:
    """Check 3, one result a model (see the module's doc)."""
    import gc

    import keras
    import tensorflow as tf

    from cifar_helpers import devices, models, recipes, training

    full = form == "gpu"
    gpu = bool(tf.config.list_physical_devices("GPU"))
    for name, spec in models.CATALOGUE.items():
        batch = spec.recipe.batch_size if full else spec.smoke_batch
        batch = batch or spec.recipe.batch_size
        size = "full" if full else "smoke"
        model, row = None, {"model": name, "size": size, "batch_size": batch}
        try:
            if gpu:
                tf.config.experimental.reset_memory_stats("GPU:0")
            row["precision"] = devices.use_precision(spec.precision)
            recipe = dataclasses.replace(
                spec.recipe, batch_size=batch, jit_compile=True
            )
            model = recipes.compile_model(
                spec.model(smoke=not full),
                recipe,
                steps_per_epoch=-(-EPOCH_IMAGES // batch),
            )
            per_call = model.steps_per_execution
            # What Keras made of jit_compile=True (it turns XLA off where it cannot).
            row.update(jit_compile=model.jit_compile, steps_per_execution=per_call)
            # training_speed without warm-up times the call that compiles the step.
            first = training.training_speed(model, batch, steps=1, warmup=False)
            speed = training.training_speed(
                model, batch, steps=TIMED_STEPS[form], warmup=False
            )
            step = batch / speed
            row.update(
                status="passed",
                first_call_seconds=batch * per_call / first,
                first_call_steps=per_call,
                timed_steps=-(-TIMED_STEPS[form] // per_call) * per_call,
                step_seconds=step,
                images_per_second=speed,
                epoch_seconds_estimate=-(-EPOCH_IMAGES // batch) * step,
            )
            if gpu:
                peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
                row["gpu_memory_peak_gib"] = peak / 2**30
        except Exception as error:  # each model fails on its own
            text = str(error)
            out_of_memory = isinstance(error, tf.errors.ResourceExhaustedError) or bool(
                re.search(r"RESOURCE_EXHAUSTED|\bOOM\b|out of memory", text)
            )
            row.update(
                status="failed", out_of_memory=out_of_memory, error=error_text(error)
            )
        finally:
            keras.mixed_precision.set_global_policy("float32")
            model = None  # its memory is freed before the next model is built
            keras.backend.clear_session()
            gc.collect()
        emit(row)


def determinism_child(_form) -> None:
    """Check 4 (see the module's doc); its one result."""
    import keras
    import numpy as np
    import tensorflow as tf

    from cifar_helpers import devices, models, recipes, training

    spec = models.spec(DETERMINISM_MODEL)
    batch = spec.smoke_batch or spec.recipe.batch_size
    result = {
        "model": DETERMINISM_MODEL,
        "size": "smoke",
        "batch_size": batch,
        "seed": DETERMINISM_SEED,
    }
    runs = []
    try:
        for _ in range(2):
            keras.backend.clear_session()
            result["precision"] = devices.use_precision(spec.precision)
            training.make_reproducible(DETERMINISM_SEED)
            model = recipes.compile_model(
                spec.model(smoke=True),
                dataclasses.replace(spec.recipe, batch_size=batch),
                steps_per_epoch=DETERMINISM_STEPS,
            )
            training.training_speed(model, batch, steps=DETERMINISM_STEPS, warmup=False)
            runs.append(model.get_weights())
            # Keras 3 turns XLA off under op determinism: seeded runs train without.
            result["jit_compile"] = model.jit_compile
    except Exception as error:  # reported to the parent
        text = str(error)
        if isinstance(error, tf.errors.UnimplementedError) or re.search(
            "determinis", text, re.I
        ):
            op, node = blamed_op(text)
            where = f" (node {node})" if node else ""
            result["error"] = (
                f"op determinism: TensorFlow has no deterministic GPU implementation "
                f"of {op or 'an op it does not name'}{where}, so the seeded mode "
                "(training.make_reproducible, the command line's --seed) cannot be "
                f"used on this GPU for {DETERMINISM_MODEL}. TensorFlow said: "
                + error_text(error)
            )
            result.update(op=op, node=node)
        else:
            result["error"] = error_text(error)
        emit({**result, "status": "failed"})
        return
    first, second = runs
    equal = all(a.tobytes() == b.tobytes() for a, b in zip(first, second, strict=True))
    difference = max(
        float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0))
        for a, b in zip(first, second, strict=True)
    )
    result.update(
        status="passed" if equal else "failed",
        equal=equal,
        max_abs_difference=difference,
        weight_arrays=len(first),
        steps=DETERMINISM_STEPS,
    )
    if not equal:
        result["error"] = (
            f"two seeded runs of {DETERMINISM_MODEL} differ (largest weight "
            f"difference {difference:.3g}): training is not reproducible here."
        )
    emit(result)


CHILDREN = {
    "probe": probe_child,
    "training_steps": training_steps_child,
    "determinism": determinism_child,
}


# ---------------------------------------------------------------- the checks


@dataclasses.dataclass
class Session:
    """One gpu_check run: its form, time budget, the catalogue's model names (from
    the probe child), and the record with the function that saves it."""

    form: str
    deadline: Deadline
    catalogue: list
    record: dict
    save: object


def pytest_check(command, deadline, env=None, echo=True) -> tuple:
    """Run a pytest ``command``; ``(status, measurements, error)``."""
    child = run_child(command, deadline, env=env, echo=echo)
    counts = pytest_counts(child.output)
    measured = {
        "command": " ".join(str(part) for part in command[1:]),
        "counts": counts,
        "passed": counts.get("passed", 0),
        "failed": counts.get("failed", 0) + counts.get("errors", 0),
    }
    if child.returncode == 0:
        return "passed", measured, None
    failures = [
        line
        for line in child.output.splitlines()
        if line.startswith(("FAILED ", "ERROR "))
    ]
    summary = "; ".join(failures[:20]) or shortened(child.output[-1500:])
    return "failed", measured, f"{how_it_ended(child)}: {summary}"


def how_it_ended(child: Child) -> str:
    if child.returncode is None:
        return "stopped when the time budget was spent"
    return f"exit status {child.returncode}"


def check_unit_tests(session: Session) -> tuple:
    """Runs beside the notebooks (see :data:`SIDE_BY_SIDE`), its output unechoed."""
    command = [sys.executable, "-m", "pytest", "-n", cores(), "--dist", "loadfile"]
    if session.form == "gpu":
        # All of tests/ but this file's test, which runs the reduced form of this.
        tests = "tests/ except tests/test_gpu_check.py"
        command += ["tests", "--ignore=tests/test_gpu_check.py"]
    else:
        tests = "tests/test_package.py"
        command += [tests]
    command += ["-q", "-p", "no:cacheprovider"]
    status, measured, error = pytest_check(command, session.deadline, echo=False)
    return status, {"tests": tests, "workers": cores(), **measured}, error


def check_notebooks(session: Session) -> tuple:
    env = {**os.environ, "CIFAR_SMOKE": "1", "CIFAR_DATA": "synthetic"}
    command = [sys.executable, "-m", "pytest", "--nbval-lax"]
    if session.form == "gpu":
        notebooks, workers = "notebooks/", NOTEBOOK_WORKERS
        # The kernels share the GPU: each takes memory as it needs it.
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
        command += ["-n", workers, "--dist", "loadfile"]
    else:
        notebooks, workers = "notebooks/01_data_pipeline.ipynb", 1
    command += ["--nbval-cell-timeout=600", notebooks, "-p", "no:cacheprovider", "-q"]
    status, measured, error = pytest_check(command, session.deadline, env)
    return status, {"notebooks": notebooks, "workers": workers, **measured}, error


def check_training_steps(session: Session) -> tuple:
    rows = {}
    measured = {
        "models": rows,
        "epoch_images": EPOCH_IMAGES,
        "note": "epoch_seconds_estimate is epoch_images / batch_size steps at the "
        "mean step time measured, not a measured epoch; first_call_seconds "
        "includes the XLA compilation",
    }

    def arrived(row):
        rows[row.pop("model")] = row
        session.record["checks"]["training_steps"]["measurements"] = measured
        session.save()

    child = run_child(
        child_command("training_steps", session.form),
        session.deadline,
        on_result=arrived,
    )
    errors = [
        f"{name}: {row['error']}"
        for name, row in rows.items()
        if row["status"] != "passed"
    ]
    missing = [name for name in session.catalogue if name not in rows]
    if missing:
        errors.append(
            f"no result for {', '.join(missing)} ({how_it_ended(child)}): "
            + shortened(child.output[-1500:])
        )
    return ("failed" if errors else "passed"), measured, "\n".join(errors) or None


def check_determinism(session: Session) -> tuple:
    child = run_child(child_command("determinism", session.form), session.deadline)
    if not child.results:
        error = f"{how_it_ended(child)}: " + shortened(child.output[-1500:])
        return "failed", {}, error
    result = child.results[0]
    return result["status"], result, result.get("error")


def check_benchmark(session: Session) -> tuple:
    options = BENCHMARK_OPTIONS[session.form]
    measured = {"options": " ".join(options)}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder, "modern_speed.json")
        command = [sys.executable, "benchmarks/modern_speed.py", *options, "--out", out]
        child = run_child(command, session.deadline)
        if child.returncode != 0 or not out.is_file():
            error = f"{how_it_ended(child)}: " + shortened(child.output[-1500:])
            return "failed", measured, error
        benchmark = json.loads(out.read_text())
    for key in ("versions", "hardware"):  # already at the top of the record
        benchmark.pop(key, None)
    return "passed", {**measured, **benchmark}, None


RUNS = {
    "unit_tests": check_unit_tests,
    "notebooks": check_notebooks,
    "training_steps": check_training_steps,
    "determinism": check_determinism,
    "benchmark": check_benchmark,
}


# ---------------------------------------------------------------- the summary


def found(name: str, measured: dict) -> str:
    """What a check that ran found, in a few words."""
    if "counts" in measured:
        counts = ", ".join(f"{n} {what}" for what, n in measured["counts"].items())
        where = measured.get("tests") or measured.get("notebooks")
        return f"{counts or 'no pytest summary'} ({where})"
    if name == "training_steps":
        return "; ".join(
            f"{model} {row['images_per_second']:,.0f} img/s, epoch ~"
            f"{row['epoch_seconds_estimate']:.0f} s (estimated)"
            if row["status"] == "passed"
            else f"{model} FAILED" + (" (out of memory)" * row["out_of_memory"])
            for model, row in measured["models"].items()
        )
    if "equal" in measured:
        return (
            f"{measured['model']}: weights equal {measured['equal']} (max "
            f"difference {measured['max_abs_difference']:.3g})"
        )
    if "speedup_per_epoch" in measured:
        met = ", ".join(f"{k} {v}" for k, v in measured["targets_met"].items())
        return (
            f"speed-up {measured['speedup_per_epoch']:.1f}x over the "
            f"{measured['speedup_against']}; targets met: {met}"
        )
    return ""


def summary_line(name: str, check: dict) -> str:
    """One line for a person: the check, its status and seconds, what it found."""
    head = f"{name:15s} {check['status']:8s} {check.get('seconds', 0):5.0f} s  "
    if check["status"] == "skipped":
        return head + check["reason"]
    text = found(name, check.get("measurements", {}))
    if check.get("error"):
        text += ("; " if text else "") + check["error"].splitlines()[0][:120]
    return head + text


# ---------------------------------------------------------------- main


def run_check(name: str, session: Session) -> None:
    """Run one check, unless the time budget is spent, and record its status,
    seconds, measurements and error."""
    check = session.record["checks"][name]
    if session.deadline.left() <= 0:
        budget = session.deadline.seconds
        check.update(
            status="skipped",
            seconds=0,
            reason=f"the time budget ({budget:.0f} s) was spent before it started",
        )
        session.save()
        return
    print(f"\n=== {name} ({session.form} form)", flush=True)
    check.update(status="running", measurements={})
    session.save()
    start = time.monotonic()
    try:
        status, measured, error = RUNS[name](session)
    except Exception as failure:  # a failed check stops no other
        status, measured, error = "failed", {}, error_text(failure)
    check.update(status=status, seconds=time.monotonic() - start, measurements=measured)
    if error:
        check["error"] = error
    session.save()
    print(f"=== {summary_line(name, check)}", flush=True)


CUDA_HINT = (
    "install TensorFlow's CUDA build (.venv/bin/pip install "
    "'tensorflow[and-cuda]==<the installed version>')"
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--form", choices=("auto", "gpu", "reduced"), default="auto")
    parser.add_argument("--out", default="gpu_check.json", help="the JSON record")
    parser.add_argument(
        "--budget",
        type=float,
        default=480,
        help="seconds for all the checks (default 480: 8 minutes)",
    )
    parser.add_argument("--_child", choices=CHILDREN, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        CHILDREN[args._child](args.form)
        return 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the children's C++ logs
    started = time.monotonic()
    deadline = Deadline(args.budget)
    probe = run_child(child_command("probe"), deadline)
    if not probe.results:
        print(f"gpu_check: TensorFlow did not start ({how_it_ended(probe)}).")
        return 1
    facts = probe.results[0]
    form = args.form
    if form == "gpu" and not facts["gpus"]:
        parser.error(f"--form gpu: TensorFlow sees no GPU; {CUDA_HINT}.")
    if form == "auto":
        form = "gpu" if facts["gpus"] else "reduced"
        if not facts["gpus"] and shutil.which("nvidia-smi"):
            print(f"gpu_check: nvidia-smi sees a GPU, TensorFlow none; {CUDA_HINT}.")
    out = Path(args.out)
    record = {
        "form": form,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "budget_seconds": args.budget,
        **facts["environment"],
        "checks": {name: {"status": "pending"} for name in CHECKS},
    }

    lock = threading.Lock()  # checks side by side save from two threads

    def save():
        with lock:
            record["seconds"] = time.monotonic() - started
            atomic.write_text(out, json.dumps(record, indent=2, default=str) + "\n")

    session = Session(form, deadline, facts["catalogue"], record, save)
    side = [threading.Thread(target=run_check, args=(n, session)) for n in SIDE_BY_SIDE]
    try:
        for thread in side:
            thread.start()
        for thread in side:
            thread.join()
        for name in CHECKS:
            if name not in SIDE_BY_SIDE:
                run_check(name, session)
    except KeyboardInterrupt:
        for process in list(LIVE):  # they run in sessions of their own
            stop_group(process)
        raise

    print(f"\ngpu-check, {form} form, {record['seconds']:.0f} s:")
    for name, check in record["checks"].items():
        print("  " + summary_line(name, check))
    print(f"wrote {out}")
    failed = any(check["status"] == "failed" for check in record["checks"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
