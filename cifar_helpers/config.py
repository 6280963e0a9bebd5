"""Run settings from the environment: the only reader of CIFAR_SMOKE, CIFAR_DATA and
CIFAR_RUNS.

``CIFAR_SMOKE=1`` asks for a smoke run: a stratified subset, few epochs, narrow models,
so a notebook finishes in minutes on a CPU. ``CIFAR_DATA`` selects the data: unset for
the official CIFAR-100 archive, ``synthetic`` for the procedurally drawn stand-in, or
a path to a ``cifar-100-python.tar.gz`` or its extracted folder. CI sets both; nothing
else switches a run to small or fake data. ``CIFAR_RUNS`` names the folder that holds
the notebooks' run folders (default ``runs``, beside the notebooks); on Colab,
:func:`keep_runs_on_drive` points it at Google Drive, so that runs outlive the VM and
every notebook finds the others' runs. Introduced in notebook 01.
"""

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
RUNS = "runs"  # the run folders' folder, relative to the notebooks, unless CIFAR_RUNS
DRIVE = "/content/drive"  # where Colab mounts Google Drive
DRIVE_RUNS = f"{DRIVE}/MyDrive/cifar100-series/runs"


class ConfigError(ValueError):
    """An environment variable of the series holds a value it does not understand."""


@dataclass(frozen=True)
class RunConfig:
    """``smoke``: shrink the run. ``data_source``: what ``data.load_cifar100`` takes.
    ``runs``: the folder of the run folders."""

    smoke: bool = False
    data_source: str | None = None
    runs: str = RUNS

    def run_dir(self, name: str) -> str:
        """The run folder ``name`` inside ``runs``; smoke runs get their own
        (``_smoke`` appended), so they never resume or replace a full run."""
        return f"{self.runs}/{name}" + ("_smoke" if self.smoke else "")

    def result_file(self, notebook: str) -> str:
        """Where notebook ``notebook`` ("02") records its headline numbers
        (``training.record_result``) and ``make series`` reads them; smoke runs
        keep theirs apart, as their run folders."""
        return f"{self.run_dir('results')}/{notebook}.json"

    def describe(self) -> str:
        """One line for a notebook's output, saying plainly what kind of run this is."""
        mode = "SMOKE run (reduced data)" if self.smoke else "full run"
        data = self.data_source or "official CIFAR-100 archive"
        if self.data_source == "synthetic":
            data = "SYNTHETIC stand-in data (not CIFAR-100)"
        return f"{mode} on {data}"


def from_env(environ: Mapping[str, str] | None = None) -> RunConfig:
    """Read ``CIFAR_SMOKE`` and ``CIFAR_DATA`` (from ``os.environ`` by default)."""
    environ = os.environ if environ is None else environ
    raw_smoke = environ.get("CIFAR_SMOKE", "").strip().lower()
    if raw_smoke not in _TRUE | _FALSE:
        raise ConfigError(
            f"CIFAR_SMOKE={environ['CIFAR_SMOKE']!r} is not understood: set it to 1 "
            "for a smoke run or 0 (or leave it unset) for a full run."
        )
    data_source = environ.get("CIFAR_DATA", "").strip() or None
    runs = environ.get("CIFAR_RUNS", "").strip().rstrip("/") or RUNS
    return RunConfig(smoke=raw_smoke in _TRUE, data_source=data_source, runs=runs)


def keep_runs_on_drive(say=print) -> str | None:
    """On Colab, mount Google Drive and keep the run folders there: sets
    ``CIFAR_RUNS`` to :data:`DRIVE_RUNS` and returns it. A Colab VM is wiped when it
    disconnects, and each notebook runs on a VM of its own; on Drive, an interrupted
    run resumes in the next session and notebook 06 finds the runs of 04 and 05.

    Does nothing elsewhere (returns None), or where ``CIFAR_RUNS`` is set already
    (returns it). When the mount fails or the reader declines it, says what that
    costs and returns None: the runs then stay in ``runs/`` on the VM."""
    if "google.colab" not in sys.modules:
        return None
    if os.environ.get("CIFAR_RUNS", "").strip():
        say(f"Run folders: {os.environ['CIFAR_RUNS']} (CIFAR_RUNS).")
        return os.environ["CIFAR_RUNS"]
    try:
        from google.colab import drive

        drive.mount(DRIVE)
    except Exception as error:  # declined, timed out, or no Drive for this account
        say(
            f"Google Drive is not mounted ({type(error).__name__}: {error}). Run "
            f"folders stay in {RUNS}/ on this Colab VM: they are lost when its "
            "runtime is recycled, and other notebooks (each runs on its own VM) "
            "will not find them. To keep them, run this cell again, allow access "
            "to Drive, "
            "then run the cells from the parameters cell on."
        )
        return None
    os.makedirs(DRIVE_RUNS, exist_ok=True)
    os.environ["CIFAR_RUNS"] = DRIVE_RUNS
    say(
        f"Run folders: {DRIVE_RUNS} on your Google Drive; an interrupted run "
        "resumes from there, and later notebooks find it."
    )
    return DRIVE_RUNS
