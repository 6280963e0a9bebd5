"""The ``cifar-helpers`` command (also ``python -m cifar_helpers``): the notebooks,
headless, as ``train``, ``evaluate``, ``predict`` and ``export``.

``train`` trains a model of the catalogue and writes a run folder; running the
same command again resumes an interrupted run (or reports a finished one).
``evaluate`` scores a run's saved model on the test set. ``predict`` names the top
classes of your own images and ``export`` writes a model for TensorFlow Serving or
TF Lite. This module only parses and prints: :mod:`cifar_helpers.runs` and
:mod:`cifar_helpers.inference` do the work. Introduced in notebook 02 (``predict``
and ``export`` in notebook 06).

Exit status: 0 on success; 2 for a usage error (arguments argparse refuses, a bad
``CIFAR_SMOKE``, an ``--out`` that is a file, a run folder that holds another run
or no finished one); 1 for a failure while working (data that cannot be read, a
strategy this machine or Keras cannot provide, training that diverged, a run folder
whose files are damaged or disagree, a run folder another process is training
into, a disk that is full or a path that cannot be written, a model or class-name
file that cannot be loaded, an export folder that exists already, an image of
``predict`` that cannot be read); 130 when interrupted by Ctrl-C or SIGTERM (a
``train`` run keeps its last committed epoch, and the same command resumes it; a
command blocked in native code for :data:`STOP_GRACE_SECONDS` after the signal is
ended outright). ``KERAS_BACKEND`` other than ``tensorflow`` is a usage error.
Each of these errors is one line on standard error.
"""

import argparse
import contextlib
import errno
import os
import shlex
import signal
import sys

# Errors that mean "this folder cannot take our files": no permission, a read-only
# file system, a full disk or quota.
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def _whole_number(minimum: int):
    """An argparse ``type`` for a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f"{text!r}: use a whole number of at least {minimum}"
            )
        return value

    return parse


def _parser(prog: str) -> argparse.ArgumentParser:
    """The command line; building it reads no environment variable."""
    from cifar_helpers.devices import STRATEGIES
    from cifar_helpers.models import ALIASES, CATALOGUE
    from cifar_helpers.recipes import RECIPES

    parser = argparse.ArgumentParser(
        prog=prog,
        description="The CIFAR-100 series' models from the command line: train, "
        "evaluate, predict and export.",
        epilog="Exit status: 0 done, 1 failed while working, 2 usage error.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    t = commands.add_parser("train", help="train a model and write a run folder")
    t.add_argument(
        "--model",
        required=True,
        choices=[*CATALOGUE, *ALIASES],
        metavar="{" + ",".join(CATALOGUE) + "}",
        help=f"a model of the catalogue (old names: {', '.join(ALIASES)})",
    )
    t.add_argument("--out", required=True, help="run folder, e.g. runs/resnet9")
    t.add_argument(
        "--epochs",
        type=_whole_number(1),
        help="default: the recipe's (75 original, 40 modern), or 2 with --smoke",
    )
    t.add_argument(
        "--data",
        help="'synthetic' or an archive path (default: $CIFAR_DATA, else the official "
        "archive)",
    )
    t.add_argument(
        "--smoke",
        action=argparse.BooleanOptionalAction,
        help="a reduced subset and a narrow model (default: $CIFAR_SMOKE)",
    )
    t.add_argument(
        "--strategy",
        default="auto",
        choices=STRATEGIES,
        help="tf.distribute strategy (default: auto, which picks a TPU, several "
        "GPUs or the TF_CONFIG cluster when there is one)",
    )
    t.add_argument(
        "--recipe",
        choices=list(RECIPES),
        help="default: the model's own (original for baseline_cnn and "
        "original_resnet, modern for the others); faithful reproduces the original "
        "part-7 run of original_resnet, test set watched and all",
    )
    t.add_argument(
        "--seed",
        type=_whole_number(0),
        help="seed every random number and make TensorFlow's operations "
        "deterministic: the same command then trains the same weights on the same "
        "hardware (default: not seeded)",
    )
    e = commands.add_parser("evaluate", help="test accuracy and loss of a run")
    e.add_argument("run_dir", help="the --out folder of a finished train command")
    p = commands.add_parser(
        "predict",
        help="the top classes of your own images",
        description="Name the most probable classes of each image (PNG, JPEG, ... "
        "of any size; grey and transparent images too), brought to 32 x 32 RGB as "
        "CIFAR's photos are. Exit status 1 if some image could not be read.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument(
        "--model",
        required=True,
        help="a run folder of `train`, a .keras file, an `export` folder or a "
        "SavedModel folder",
    )
    p.add_argument(
        "--top", type=_whole_number(1), default=5, help="classes to show (default 5)"
    )
    x = commands.add_parser(
        "export", help="write a model for TensorFlow Serving or TF Lite"
    )
    x.add_argument(
        "model", help="a run folder of `train`, an export folder or a .keras file"
    )
    x.add_argument("--out", required=True, help="a new folder to write the export to")
    return parser


def _train(args, command: str) -> int:
    from cifar_helpers import config, runs
    from cifar_helpers.models import ALIASES, renamed_note

    model = args.model
    if model in ALIASES:
        print(f"note: {renamed_note(model)}", file=sys.stderr)
        model = ALIASES[model]
    # The environment gives what the command line leaves out.
    run = config.from_env() if None in (args.data, args.smoke) else None
    settings = runs.RunSettings(
        model=model,
        data=run.data_source if args.data is None else args.data,
        smoke=run.smoke if args.smoke is None else args.smoke,
        epochs=args.epochs,
        strategy=args.strategy,
        seed=args.seed,
        recipe=args.recipe,
    )
    results = runs.train(settings, args.out, command=command)
    if not results.get("worker"):
        _print_scores(results)
    return 0


def _evaluate(args) -> int:
    from cifar_helpers import runs

    _print_scores(runs.evaluate(args.run_dir))
    return 0


def _print_scores(results: dict):
    for key in ("train_accuracy", "train_loss"):
        if key in results:
            print(f"{key:14s} {results[key]:.4f}")
    for key in ("test_accuracy", "test_top5", "test_loss"):
        print(f"{key:14s} {results[key]:.4f}")
    if results.get("test_set_watched"):
        from cifar_helpers.recipes import TEST_WATCHED

        print(f"note: {TEST_WATCHED}.")


def _predict(args) -> int:
    """Print the top classes of each image; 1 when some could not be read."""
    from cifar_helpers import inference

    predict_fn, names = inference.load_classifier(args.model)
    images, paths = [], []
    for path in args.images:
        try:
            images.append(inference.read_image(path))
            paths.append(path)
        except inference.ImageError as error:
            print(f"error: {error}", file=sys.stderr)
    if images:
        import numpy as np

        for path, probabilities in zip(
            paths, predict_fn(np.stack(images)), strict=True
        ):
            print(path)
            for rank, (name, p) in enumerate(
                inference.top_k(probabilities, names, args.top), 1
            ):
                print(f"  {rank}. {name:24s} {p:7.2%}")
    return 0 if len(paths) == len(args.images) else 1


def _export(args) -> int:
    from cifar_helpers import inference

    model, names = inference.load_model(args.model)
    folder = inference.export(model, args.out, names)
    print(
        f"exported to {folder}: model.keras, saved_model/ (serve: uint8 images), "
        "classes.json"
    )
    return 0


def main(argv=None, prog: str = "cifar-helpers") -> int:
    """Run one command and return its exit status (see the module's docstring);
    argparse's usage errors and ``--help`` exit through ``SystemExit`` (2 and 0).
    From its first line, SIGTERM (what a stopping Colab session or a preempted
    cloud machine sends) interrupts it as Ctrl-C does."""
    argv = sys.argv[1:] if argv is None else list(argv)
    restore = _on_sigterm_interrupt()
    try:
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        if backend != "tensorflow":
            return _error(
                f"KERAS_BACKEND={backend!r}: the series' models and training run on "
                "TensorFlow; unset KERAS_BACKEND or set it to tensorflow.",
                status=2,
            )
        args = _parser(prog).parse_args(argv)
        return _run(args, argv, prog)
    except KeyboardInterrupt:
        return _error("interrupted before anything was written.", status=130)
    except ImportError as error:
        return _error(
            f"cannot import what the package needs ({error}). If Keras is set to "
            'another backend (KERAS_BACKEND, or "backend" in ~/.keras/keras.json), '
            "set it to tensorflow; otherwise reinstall the package with `pip "
            "install -e .` in the repository (or `make install`).",
            status=1,
        )
    finally:
        # Ctrl-C after the command's work was done changes nothing.
        with contextlib.suppress(KeyboardInterrupt):
            restore()


def _run(args, argv, prog) -> int:
    from cifar_helpers.config import ConfigError
    from cifar_helpers.data import DatasetError
    from cifar_helpers.devices import StrategyError
    from cifar_helpers.inference import ImageError, ModelError
    from cifar_helpers.lock import FolderInUseError
    from cifar_helpers.loop import WorkerLost
    from cifar_helpers.resume import DamagedRunError
    from cifar_helpers.runs import RunError
    from cifar_helpers.training import TrainingDiverged

    try:
        if args.command == "train":
            return _train(args, command=f"{prog} {shlex.join(argv)}")
        commands = {"evaluate": _evaluate, "predict": _predict, "export": _export}
        return commands[args.command](args)
    except (ConfigError, RunError) as error:
        return _error(error, status=2)
    except (
        DatasetError,
        StrategyError,
        ModelError,
        ImageError,
        DamagedRunError,
        FolderInUseError,
        TrainingDiverged,
        WorkerLost,
    ) as error:
        return _error(error, status=1)
    except KeyboardInterrupt:
        resumes = " The same command resumes the run from its last committed epoch."
        return _error(
            f"interrupted.{resumes if args.command == 'train' else ''}",
            status=130,
        )
    except OSError as error:
        return _error(_os_error(error, args.command), status=1)


def _os_error(error: OSError, command: str) -> str:
    """One line for a file-system failure: the path, the system's reason, a fix."""
    where = error.filename or "a file"
    reason = error.strerror or str(error)
    if error.errno in _UNWRITABLE:
        fix = "Free some disk space or choose a folder you can write to."
        if command == "train":
            fix += (
                " Every file written before is whole (written atomically), and the "
                "same command resumes the run from its last committed epoch."
            )
    elif error.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        fix = "A file (or a broken link) stands where a folder is needed: use "
        fix += "another path."
    elif error.errno == errno.ENAMETOOLONG:
        fix = "Choose a shorter path."
    else:
        fix = "Check the path."
    return f"{where}: {reason}. {fix}"


# How long an interrupted command may take to stop before it is ended outright:
# Python handles a signal only between its own steps, and TensorFlow can block
# for good in native code (a multi-worker cluster waiting for a missing peer).
STOP_GRACE_SECONDS = 30


def _on_sigterm_interrupt():
    """Make SIGTERM raise KeyboardInterrupt, as Ctrl-C does (training stops, its
    last committed epoch kept), and end the process if, after SIGTERM or Ctrl-C,
    it has not stopped within :data:`STOP_GRACE_SECONDS`. Returns the function that
    puts everything back (it does nothing off the main thread, where Python cannot
    set handlers)."""
    import select
    import socket
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        return lambda: None
    # The C-level handler writes each signal's number to this socket at once, even
    # while the main thread is blocked; the watchdog thread reads it there.
    receive, send = socket.socketpair()
    send.setblocking(False)
    previous_fd = signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
    finished = threading.Event()

    def watchdog():
        while not finished.is_set():
            if not select.select([receive], [], [], 0.2)[0]:
                continue
            stopping = {signal.SIGTERM, signal.SIGINT} & set(receive.recv(64))
            if stopping and not finished.wait(STOP_GRACE_SECONDS):
                print(
                    f"error: interrupted, and still busy after {STOP_GRACE_SECONDS} "
                    "s (blocked in TensorFlow); stopped outright. Files are whole "
                    "(written atomically), and `train` resumes from its last "
                    "committed epoch.",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(130)

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()

    def restore():
        # The handler goes first: a signal from here on must not raise in the
        # middle of putting things back (the command's work is done).
        signal.signal(signal.SIGTERM, previous)
        finished.set()
        thread.join()
        signal.set_wakeup_fd(previous_fd)
        send.close()
        receive.close()

    return restore


def _error(message, *, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status
