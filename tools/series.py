"""Run the whole notebook series headless, in order, and tabulate what it trained.

``make series`` runs this: every notebook of ``notebooks/`` (01 to 07) through
papermill, in full mode by default, with the ``python3`` kernel and the notebooks
folder as working directory (``runs/...`` resolves as in Jupyter). Executed copies
go to ``OUT/notebooks/``; the run folders to ``OUT/runs`` (``$CIFAR_RUNS`` for the
kernels). ``-p NAME VALUE`` overrides one value of the notebooks' ``parameters``
cells (papermill injects it after that cell).

The series resumes: ``OUT/series.json`` records each notebook once it is done, and
a rerun skips the notebooks done with the same parameters (``--again`` reruns
them). A notebook that failed or was interrupted runs again from its top; its
training resumes from its run folders by itself. After each notebook, done or not,
``OUT/results.md`` and ``OUT/results.json`` tabulate the notebooks done so far from
the ``runs/results/NN.json`` records the training notebooks write.

Exit status: 0 done, 1 a notebook failed, 2 usage error, 130 interrupted.
"""

import argparse
import ast
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from cifar_helpers import atomic, config

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = "python3"
NONE = "—"
# The original series' own result, where a notebook rebuilds its model.
ORIGINAL = {"04": "70.7 % (reported, part 7)"}
COLUMNS = (
    "notebook",
    "model",
    "hardware",
    "precision",
    "epochs",
    "minutes",
    "validation accuracy",
    "test accuracy",
    "original series",
)


class UsageError(ValueError):
    """A command line or an output folder this runner refuses; the message says why."""


# ---------------------------------------------------------------- pure parts


def parse_value(text: str):
    """A ``-p`` value as Python reads it (``5``, ``0.1``, ``True``, ``None``,
    ``["a.jpg"]``), else the string itself (``faithful``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def is_done(entry: dict | None, parameters: dict) -> bool:
    """Whether a notebook's record says it finished with these ``-p`` parameters;
    a failed, interrupted or still running one is not done."""
    return (
        entry is not None
        and entry.get("status") == "done"
        and entry.get("parameters", {}) == parameters
    )


def hardware_name(hardware: dict) -> str:
    """``devices.environment()["hardware"]`` in a few words: the GPUs (``2 × NVIDIA
    A100-SXM4-40GB``), else the TPU cores, else the CPU cores."""
    if hardware.get("gpus"):
        counts = Counter(hardware["gpus"]).items()
        return ", ".join(name if n == 1 else f"{n} × {name}" for name, n in counts)
    if hardware.get("tpus"):
        return f"TPU ({hardware['tpus']} cores)"
    return f"CPU ({hardware.get('cpus')} cores)"


def percent(value) -> str:
    """``0.7071`` -> ``"70.7 %"``; ``None`` -> ``"—"``."""
    return NONE if value is None else f"{100 * value:.1f} %"


def table_rows(record: dict) -> list[dict]:
    """One row per notebook done, in order, from ``series.json``'s record: the
    runner's measurements and what the notebook's results file said."""
    rows = []
    for number, entry in sorted(record["notebooks"].items()):
        if entry.get("status") != "done":
            continue
        result = entry.get("result") or {}
        rows.append(
            {
                "notebook": number,
                "name": entry["name"],
                "model": result.get("model"),
                "hardware": entry.get("hardware"),
                "precision": result.get("precision"),
                "epochs": result.get("epochs"),
                "minutes": entry.get("minutes"),
                "val_accuracy": result.get("val_accuracy"),
                "test_accuracy": result.get("test_accuracy"),
                "original_series": ORIGINAL.get(number),
                "note": result.get("note"),
            }
        )
    return rows


def render_table(rows: list[dict]) -> str:
    """The rows of :func:`table_rows` as a Markdown table; ``—`` where a value is
    missing (notebooks that train nothing, a notebook without a results file)."""

    def cell(value):
        return NONE if value is None else str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        minutes = row["minutes"]
        cells = (
            row["name"],
            cell(row["model"]),
            cell(row["hardware"]),
            cell(row["precision"]),
            cell(row["epochs"]),
            NONE if minutes is None else f"{minutes:.1f}",
            percent(row["val_accuracy"]),
            percent(row["test_accuracy"]),
            cell(row["original_series"]),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_report(record: dict, *, command: str, date: str) -> str:
    """``results.md``: what was run and how, the table, then the notebooks' notes
    and, after a partial run, where it stopped."""
    settings = record["settings"]
    synthetic = settings["data"] == "synthetic"
    data = {
        None: "the official CIFAR-100 archive",
        "synthetic": "synthetic stand-in data (not CIFAR-100)",
    }
    entries = record["notebooks"].values()
    versions = sorted(
        {
            f"TensorFlow {entry['versions']['tensorflow']}, "
            f"Keras {entry['versions']['keras']}"
            for entry in entries
            if entry.get("versions")
        }
    )
    lines = [
        "# The notebook series, executed",
        "",
        f"- Date: {date}",
        f"- Command: `{command}`",
        f"- Mode: {'smoke' if settings['smoke'] else 'full'}",
        f"- Data: {data.get(settings['data'], settings['data'])}",
        f"- Versions: {'; '.join(versions) or NONE}",
        "",
    ]
    if settings["smoke"] or synthetic:
        kind = "Smoke results" if settings["smoke"] else "Results"
        on = " on synthetic data" if synthetic else ""
        lines += [
            f"**{kind}{on} show the code runs; they are not CIFAR-100 results.**",
            "",
        ]
    rows = table_rows(record)
    lines.append(render_table(rows))
    notes = [f"- {row['notebook']}: {row['note']}" for row in rows if row["note"]]
    unfinished = [
        f"- {number} ({entry['name']}) {entry['status']}"
        + (f": {entry['error']}" if entry.get("error") else "")
        for number, entry in sorted(record["notebooks"].items())
        if entry.get("status") != "done"
    ]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    if unfinished:
        lines += ["Not finished (rerun the command to continue):", "", *unfinished, ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# ---------------------------------------------------------------- the machine


def settings_text(settings: dict) -> str:
    mode = "smoke" if settings["smoke"] else "full"
    return f"{mode} run on {settings['data'] or 'the official archive'}"


def read_record(out: Path, settings: dict, again: bool) -> dict:
    """``OUT/series.json``, or a new record. A folder that holds a series run with
    other settings (smoke against full, other data) is refused unless ``again``,
    which starts it over."""
    path = out / "series.json"
    if not path.exists():
        return {"settings": settings, "notebooks": {}}
    record = json.loads(path.read_text())
    if record["settings"] != settings and not again:
        raise UsageError(
            f"{path} records a {settings_text(record['settings'])}, not a "
            f"{settings_text(settings)}. Choose another --out, or add --again to "
            "start that folder over."
        )
    if record["settings"] != settings:
        return {"settings": settings, "notebooks": {}}
    return record


def write_record(out: Path, record: dict):
    atomic.write_text(out / "series.json", json.dumps(record, indent=2) + "\n")


def write_results(out: Path, record: dict, command: str):
    """``OUT/results.md`` and ``OUT/results.json`` from the record as it stands."""
    date = now()
    atomic.write_text(
        out / "results.md", render_report(record, command=command, date=date)
    )
    summary = {
        "date": date,
        "command": command,
        **record["settings"],
        "rows": table_rows(record),
    }
    atomic.write_text(out / "results.json", json.dumps(summary, indent=2) + "\n")


def machine() -> dict:
    """``devices.environment()``, read in a short child process with the kernels'
    environment, so that this process never holds a GPU while the notebooks train."""
    code = "import json; from cifar_helpers import devices; "
    code += "print(json.dumps(devices.environment()))"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"cannot read this machine's devices:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def read_result(path: Path, since: float) -> dict | None:
    """The results file a notebook writes (``training.record_result``, at
    ``RunConfig.result_file``) if the notebook wrote it during this run (a file
    older than the run is another run's), else None."""
    if not path.exists() or path.stat().st_mtime < since - 1:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        print(f"series: {path} cannot be read ({error}); no results for it.")
        return None


def describe(error: BaseException) -> str:
    """One line for a notebook's failure: the cell's exception (papermill's
    ``ename``, ``evalue`` and cell number), else the exception's first line."""
    if hasattr(error, "ename"):
        return f"{error.ename} in cell [{error.exec_count}]: {error.evalue}"
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def run_notebook(source: Path, output: Path, parameters: dict):
    import papermill

    papermill.execute_notebook(
        source,
        output,
        parameters=parameters,
        kernel_name=KERNEL,
        cwd=NOTEBOOKS,
        progress_bar=sys.stdout.isatty(),
    )


def failure_message(name: str, output: Path, error: str) -> str:
    return (
        f"Notebook {name} failed: {error}. Its executed copy, with the failing "
        f"cell's output, is {output}. Fix the cause, then run the same command "
        "again (`make series`): the notebooks already done are skipped and this "
        "one runs again from its top, its training resuming from its run folder."
    )


def _interrupt(signum, frame):
    """SIGTERM (a stopping machine, ``kill``) stops the series as Ctrl-C does."""
    raise KeyboardInterrupt


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Run notebooks/01..07 headless with papermill, in order, and "
        "write a results table. Rerunning continues where the series stopped.",
        epilog="Exit status: 0 done, 1 a notebook failed, 2 usage error, "
        "130 interrupted.",
    )
    parser.add_argument(
        "--out", default="series", help="output folder (default: series/)"
    )
    parser.add_argument("--only", help="a subset of notebooks, e.g. 01,04")
    parser.add_argument(
        "--smoke",
        action=argparse.BooleanOptionalAction,
        help="smoke runs: reduced data, few epochs (default: $CIFAR_SMOKE, else full)",
    )
    parser.add_argument(
        "--data",
        help="'synthetic' or a path to cifar-100-python.tar.gz or its folder "
        "(default: $CIFAR_DATA, else the official archive, downloaded once)",
    )
    parser.add_argument(
        "--runs", help="the notebooks' run folders ($CIFAR_RUNS; default: OUT/runs)"
    )
    parser.add_argument(
        "-p",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="override a value of the notebooks' parameters cells (repeatable)",
    )
    parser.add_argument(
        "--again", action="store_true", help="rerun notebooks already done"
    )
    return parser.parse_args(argv)


def select(only: str | None) -> list[Path]:
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only is None:
        return notebooks
    wanted = [part.strip().zfill(2) for part in only.split(",") if part.strip()]
    numbers = {path.name[:2]: path for path in notebooks}
    unknown = [number for number in wanted if number not in numbers]
    if unknown:
        raise UsageError(
            f"--only {only}: no notebook {', '.join(unknown)}; there are "
            f"{', '.join(numbers)}."
        )
    return [numbers[number] for number in sorted(set(wanted))]


def main(argv=None) -> int:
    args = parse_args(argv)
    command = shlex.join(["tools/series.py", *sys.argv[1:]])
    run = config.from_env()
    smoke = run.smoke if args.smoke is None else args.smoke
    data = run.data_source if args.data is None else args.data
    if data not in (None, "synthetic"):
        data = str(Path(data).expanduser().resolve())
    out = Path(args.out).resolve()
    runs = Path(args.runs).resolve() if args.runs else out / "runs"
    # Through JSON, as series.json stores them: a tuple compares equal as a list.
    parameters = json.loads(
        json.dumps({name: parse_value(value) for name, value in args.p})
    )
    try:
        notebooks = select(args.only)
        record = read_record(out, {"smoke": smoke, "data": data}, args.again)
    except UsageError as error:
        print(f"series: {error}", file=sys.stderr)
        return 2

    # Papermill starts each kernel with this process's environment.
    os.environ["CIFAR_SMOKE"] = "1" if smoke else "0"
    os.environ["CIFAR_RUNS"] = str(runs)
    if data is None:
        os.environ.pop("CIFAR_DATA", None)
    else:
        os.environ["CIFAR_DATA"] = data
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)

    environment = None
    for source in notebooks:
        number, name = source.name[:2], source.stem
        output = out / "notebooks" / source.name
        entry = record["notebooks"].get(number)
        if is_done(entry, parameters) and not args.again:
            print(f"{name}: done on {entry['ended']}, skipped (--again reruns it)")
            continue
        if environment is None:
            environment = machine()
        print(f"{name}: running, executed copy in {output}", flush=True)
        started, clock = time.time(), time.monotonic()
        entry = record["notebooks"][number] = {
            "name": name,
            "status": "running",
            "started": now(),
            "output": str(output.relative_to(out)),
            "parameters": parameters,
            "hardware": hardware_name(environment["hardware"]),
            "versions": environment["versions"],
            "runs": str(runs),
        }
        write_record(out, record)
        error = None
        try:
            run_notebook(source, output, parameters)
            entry["status"] = "done"
        except KeyboardInterrupt:
            entry["status"] = "interrupted"
        except Exception as caught:  # a failed cell, a dead kernel: all are recorded
            entry["status"] = "failed"
            error = entry["error"] = describe(caught)
        entry["ended"] = now()
        entry["minutes"] = round((time.monotonic() - clock) / 60, 2)
        results = config.RunConfig(smoke=smoke, runs=str(runs)).result_file(number)
        entry["result"] = read_result(Path(results), started)
        write_record(out, record)
        write_results(out, record, command)
        if entry["status"] == "interrupted":
            print(f"series: interrupted in {name}; rerun to continue.", file=sys.stderr)
            return 130
        if error is not None:
            print(failure_message(source.name, output, error), file=sys.stderr)
            return 1
        print(f"{name}: done in {entry['minutes']:.1f} min", flush=True)
    write_results(out, record, command)
    print(f"series: results in {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
