"""``python -m cifar_helpers train|evaluate|predict|export``: the notebooks, headless.

``train`` builds a model, trains it with :func:`cifar_helpers.training.fit` and
writes a run folder; running the same command again resumes an interrupted run (or
reports a finished one). ``evaluate`` scores a run's saved model on the test set.
``predict`` names the top classes of your own images and ``export`` writes a model
for TensorFlow Serving or TF Lite (:mod:`cifar_helpers.inference`). Introduced in
notebook 02 (``predict`` and ``export`` in notebook 06).
"""

import argparse
import errno
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

from cifar_helpers import atomic

MODELS = ("baseline_cnn", "seed_resnet", "resnet9", "preact_resnet18")
MODERN_MODELS = ("resnet9", "preact_resnet18")  # trained with the modern recipe
# Narrow copies for smoke runs: the same layers, a few filters each.
# Batch norm's running averages need a lower momentum to settle in so few steps
# (the modern models' 0.9 already does).
SMOKE_SIZES = {
    "baseline_cnn": {"filters": (8, 8, 16, 16), "hidden": 64, "bn_momentum": 0.9},
    "seed_resnet": {"widths": (8, 8, 16, 16), "hidden": 64, "bn_momentum": 0.9},
    "resnet9": {"widths": (8, 8, 16, 16)},
    "preact_resnet18": {"widths": (8, 8, 16, 16)},
}
SMOKE_EPOCHS = 2
SMOKE_BATCH = 100  # the modern recipe's 512 is more than a smoke subset's 3,000 / 5


# Errors that mean "this folder cannot take our files": no permission, a read-only
# file system, a full disk or quota.
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


class RunError(ValueError):
    """A run folder or argument that cannot be used; the message says why."""


def _settings(args) -> dict:
    """What makes two runs the same run: a resume must match these exactly."""
    return {
        "model": args.model,
        "data": args.data,  # None: the official archive
        "smoke": args.smoke,
        "epochs": args.epochs,
        "strategy": args.strategy,
        "seed": args.seed,  # None: not seeded
    }


def _check_run_folder(run_dir: Path, settings: dict):
    recorded = run_dir / "run.json"
    if recorded.is_file():
        previous = json.loads(recorded.read_text())
        previous.setdefault("seed", None)  # run folders from before --seed existed
        if previous != settings:
            raise RunError(
                f"{run_dir} holds a run with other settings ({previous}); this "
                f"command asks for {settings}. Use another --out folder, or repeat "
                "the original command to resume that run."
            )
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(recorded, json.dumps(settings, indent=2))


def _load_split(args):
    from cifar_helpers import data

    cifar = data.load_cifar100(args.data)
    if args.smoke:
        cifar = data.stratified_subset(
            cifar, train_per_class=30, test_per_class=10, seed=0
        )
    return data.with_validation_split(
        cifar, val_per_class=10 if args.smoke else 20, seed=0
    )


def _build(name: str, smoke: bool):
    from cifar_helpers import models

    return getattr(models, name)(**(SMOKE_SIZES[name] if smoke else {}))


def _environment() -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    import cifar_helpers

    return {
        "versions": {
            "cifar_helpers": cifar_helpers.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "hardware": {
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "gpus": [
                tf.config.experimental.get_device_details(gpu).get("device_name", "GPU")
                for gpu in tf.config.list_physical_devices("GPU")
            ],
        },
    }


def _recipe(args):
    """The model's recipe, for ``--epochs`` (or the smoke run's), one replica."""
    import dataclasses

    from cifar_helpers import training

    recipe = training.MODERN if args.model in MODERN_MODELS else training.ORIGINAL
    if args.smoke and args.model in MODERN_MODELS:
        recipe = dataclasses.replace(recipe, batch_size=SMOKE_BATCH)
    epochs = args.epochs or (SMOKE_EPOCHS if args.smoke else recipe.epochs)
    return dataclasses.replace(recipe, epochs=epochs)


def _score(model, split, batch_size: int) -> dict:
    from cifar_helpers import data, training

    test = data.make_dataset(
        split.x_test,
        split.y_test,
        batch_size=training.eval_batch_size(len(split.y_test), batch_size),
        training=False,
    )
    scores = model.evaluate(test, return_dict=True, verbose=0)
    return {
        "test_accuracy": scores["accuracy"],
        "test_top5": scores["top5"],
        "test_loss": scores["loss"],
    }


def train(args) -> dict:
    """Train (or resume) a run and write its folder; returns results.json's dict."""
    run_dir = Path(args.out)
    settings = _settings(args)
    _check_run_folder(run_dir, settings)
    results_path = run_dir / "results.json"
    if results_path.is_file():
        print(f"{run_dir} already holds a finished run; its results:")
        return json.loads(results_path.read_text())

    from cifar_helpers import inference, plots, training

    # A multi-worker strategy must exist before any other TensorFlow work.
    strategy = training.choose_strategy(args.strategy)
    policy = training.use_precision(
        "auto" if args.model in MODERN_MODELS else "float32"
    )
    if args.seed is not None:
        training.make_reproducible(args.seed)
    recipe = training.for_strategy(_recipe(args), strategy)
    print(
        f"strategy {type(strategy).__name__} ({strategy.num_replicas_in_sync} "
        f"replicas), precision {policy}, global batch {recipe.batch_size}"
    )
    split = _load_split(args)
    print(split.summary())
    train_ds, val_ds = training.split_datasets(
        split, recipe.batch_size, strategy.num_replicas_in_sync
    )
    with strategy.scope():
        model = training.compile_model(
            _build(args.model, args.smoke), recipe, steps_per_epoch=len(train_ds)
        )
    if not training.is_chief(strategy):
        # Every worker runs the same steps; only the chief writes the run folder.
        run_dir = run_dir / "workers" / f"worker-{strategy.cluster_resolver.task_id}"
    start = time.perf_counter()
    if training.run_finished(run_dir):
        print(f"{run_dir}: training finished before; writing the results.")
    else:
        training.fit(model, train_ds, val_ds, run_dir, recipe, verbose=1)
    wall = time.perf_counter() - start
    if not training.is_chief(strategy):
        return {"worker": True}

    history = training.read_history(run_dir / "history.csv")
    # The run's result is its best validation model, whichever session found it.
    import keras

    model = keras.saving.load_model(run_dir / "best.keras")
    with atomic.replacing(run_dir / "model.keras") as partial:
        model.save(partial)
    inference.write_class_names(run_dir, split.fine_names)
    atomic.write_text(run_dir / "history.json", json.dumps(history, indent=2))
    figure = plots.training_curves(history, title=f"{args.model}: {split.source}")
    with atomic.replacing(run_dir / "curves.png") as partial:
        figure.savefig(partial, dpi=100)
    seconds = history["epoch_seconds"]
    typical = statistics.median(seconds[1:] if len(seconds) > 1 else seconds)
    results = {
        **_score(model, split, recipe.batch_size),
        "epochs_run": len(history["loss"]),
        "wall_seconds_this_session": wall,
        "images_per_second": len(split.y_train) / typical,
        "data": split.source,
        "synthetic": split.synthetic,
        "smoke": args.smoke,
        "precision": policy,
        "replicas": strategy.num_replicas_in_sync,
        "command": shlex.join(["python", "-m", "cifar_helpers", *args.argv]),
        **_environment(),
    }
    atomic.write_text(results_path, json.dumps(results, indent=2))
    return results


def evaluate(args) -> dict:
    """Test accuracy (top-1, top-5) and loss of a run's saved model."""
    import keras

    run_dir = Path(args.run_dir)
    model_path = run_dir / "model.keras"
    recorded = run_dir / "run.json"
    if not model_path.is_file() or not recorded.is_file():
        raise RunError(
            f"{run_dir}: no finished run here (model.keras and run.json are missing). "
            "Pass the --out folder of a `train` command that finished."
        )

    settings = json.loads(recorded.read_text())
    split = _load_split(argparse.Namespace(**settings))
    model = keras.saving.load_model(model_path)
    settings.setdefault("epochs", None)
    return _score(
        model, split, batch_size=_recipe(argparse.Namespace(**settings)).batch_size
    )


def predict(args) -> int:
    """Print the top classes of each image; return how many could not be read."""
    from cifar_helpers import inference

    predict_fn, names = inference.load_classifier(args.model)
    images, paths, failed = [], [], 0
    for path in args.images:
        try:
            images.append(inference.read_image(path))
            paths.append(path)
        except inference.ImageError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
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
    return failed


def export(args) -> dict:
    """Export a trained model (see :func:`cifar_helpers.inference.export`)."""
    from cifar_helpers import inference

    model, names = inference.load_model(args.model)
    folder = inference.export(model, args.out, names)
    print(
        f"exported to {folder}: model.keras, saved_model/ (serve: uint8 images), "
        "classes.json"
    )
    return {"folder": str(folder)}


def _parser():
    from cifar_helpers import config
    from cifar_helpers.training import STRATEGIES

    run = config.from_env()
    parser = argparse.ArgumentParser(
        prog="python -m cifar_helpers", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    t = commands.add_parser("train", help="train a model and write a run folder")
    t.add_argument("--model", required=True, choices=MODELS)
    t.add_argument("--out", required=True, help="run folder, e.g. runs/seed_resnet")
    t.add_argument(
        "--epochs",
        type=int,
        help="default: the recipe's (75 original, 40 modern), or 2 with --smoke",
    )
    t.add_argument(
        "--data",
        default=run.data_source,
        help="'synthetic' or an archive path (default: $CIFAR_DATA, else the official "
        "archive)",
    )
    t.add_argument(
        "--smoke",
        action=argparse.BooleanOptionalAction,
        default=run.smoke,
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
        "--seed",
        type=int,
        help="seed every random number and make TensorFlow's operations "
        "deterministic: the same command then trains the same weights on the same "
        "hardware (default: not seeded)",
    )
    e = commands.add_parser("evaluate", help="test accuracy and loss of a run")
    e.add_argument("run_dir", help="the --out folder of a finished train command")
    model_help = (
        "a run folder of `train`, a .keras file, an `export` folder or a SavedModel "
        "folder"
    )
    p = commands.add_parser(
        "predict",
        help="the top classes of your own images",
        description="Name the most probable classes of each image (PNG, JPEG, ... "
        "of any size; grey and transparent images too), brought to 32 x 32 RGB as "
        "CIFAR's photos are. Exit status 1 if some image could not be read.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--top", type=int, default=5, help="classes to show (default 5)")
    x = commands.add_parser(
        "export", help="write a model for TensorFlow Serving or TF Lite"
    )
    x.add_argument(
        "model", help="a run folder of `train`, an export folder or a .keras file"
    )
    x.add_argument("--out", required=True, help="a new folder to write the export to")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    args.argv = argv
    if getattr(args, "epochs", None) is not None and args.epochs < 1:
        _parser().error(f"--epochs {args.epochs}: use a whole number of at least 1")
    if getattr(args, "top", 1) < 1:
        _parser().error(f"--top {args.top}: use a whole number of at least 1")
    from cifar_helpers.data import DatasetError
    from cifar_helpers.inference import ModelError
    from cifar_helpers.training import StrategyError, TrainingDiverged

    try:
        if args.command == "predict":
            return 1 if predict(args) else 0
        if args.command == "export":
            export(args)
            return 0
        results = train(args) if args.command == "train" else evaluate(args)
    except (
        RunError,
        DatasetError,
        StrategyError,
        ModelError,
        TrainingDiverged,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in _UNWRITABLE:
            raise
        where = error.filename or "the output folder"
        print(
            f"error: cannot write {where}: {error.strerror}. Free some disk space or "
            "choose a folder you can write to; every file written before is whole "
            "(written atomically), and the same command resumes a run from its last "
            "finished epoch.",
            file=sys.stderr,
        )
        return 2
    if results.get("worker"):
        return 0
    for key in ("test_accuracy", "test_top5", "test_loss"):
        print(f"{key:14s} {results[key]:.4f}")
    return 0
