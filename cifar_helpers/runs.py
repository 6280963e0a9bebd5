"""A training run as a folder: train (or resume) a model of the catalogue with its
own recipe and write everything the run produced; score a finished run again.

``cifar-helpers train`` and ``evaluate`` call :func:`train` and :func:`evaluate`;
a notebook can call them too. :func:`train` composes the package's steps in order:
the strategy (before any other TensorFlow work), the precision, the seed, the
recipe scaled for the strategy, the data and its pipelines, the model compiled in
the strategy's scope, :func:`cifar_helpers.training.fit`, and then the results.

A run folder holds ``run.json`` (its :class:`RunSettings`, written first: a resume
must ask for the same), what ``fit`` writes while training (``best.keras``,
``backup/``, ``history.csv``, ``logs/``), and once training ends ``model.keras`` (the
best validation model), ``classes.json``, ``history.json``, ``curves.png`` and
``results.json`` (written last). Introduced in notebook 02.
"""

import dataclasses
import json
import statistics
import time
from pathlib import Path

from cifar_helpers import atomic

SMOKE_EPOCHS = 2


class RunError(ValueError):
    """A run folder that cannot be used as asked; the message says why."""


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What makes two runs the same run: resuming a run must repeat these.

    ``model``: a name of :data:`cifar_helpers.models.CATALOGUE`; ``data``: what
    :func:`cifar_helpers.data.load_cifar100` takes (None: the official archive);
    ``smoke``: a stratified subset and the model's narrow copy; ``epochs``: None
    for the recipe's (or :data:`SMOKE_EPOCHS`); ``strategy``: one of
    :data:`cifar_helpers.devices.STRATEGIES`; ``seed``: None for an unseeded run,
    else see :func:`cifar_helpers.training.make_reproducible`.
    """

    model: str
    data: str | None = None
    smoke: bool = False
    epochs: int | None = None
    strategy: str = "auto"
    seed: int | None = None

    def recipe(self):
        """The model's own recipe for these settings, on one device."""
        from cifar_helpers import models

        spec = models.spec(self.model)
        recipe = spec.recipe
        if self.smoke and spec.smoke_batch:
            recipe = dataclasses.replace(recipe, batch_size=spec.smoke_batch)
        epochs = self.epochs or (SMOKE_EPOCHS if self.smoke else recipe.epochs)
        return dataclasses.replace(recipe, epochs=epochs)

    def load_split(self):
        """The data with its validation split (a stratified subset when smoke)."""
        from cifar_helpers import data

        cifar = data.load_cifar100(self.data)
        if self.smoke:
            cifar = data.stratified_subset(
                cifar, train_per_class=30, test_per_class=10, seed=0
            )
        return data.with_validation_split(
            cifar, val_per_class=10 if self.smoke else 20, seed=0
        )


def _claim(run_dir: Path, settings: RunSettings):
    """Record ``settings`` in a new run folder, or check that an existing run was
    started with the same ones."""
    from cifar_helpers.models import ALIASES

    def known_as(recorded_settings: dict) -> dict:
        # A run started under a model's old name resumes under its new one.
        name = recorded_settings["model"]
        return {**recorded_settings, "model": ALIASES.get(name, name)}

    recorded = run_dir / "run.json"
    asked = dataclasses.asdict(settings)
    if recorded.is_file():
        previous = json.loads(recorded.read_text())
        if known_as(previous) != known_as(asked):
            raise RunError(
                f"{run_dir} holds a run with other settings ({previous}); this "
                f"command asks for {asked}. Use another --out folder, or repeat "
                "the original command to resume that run."
            )
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(recorded, json.dumps(asked, indent=2))


def train(settings: RunSettings, out, *, command: str | None = None, verbose=1):
    """Train (or resume) the run ``settings`` describe in the folder ``out``, and
    return its results (what ``results.json`` holds: test scores, epochs run,
    speed, data, precision, replicas, ``command``, versions and hardware).

    A folder that holds a finished run returns its results without training; one
    whose run was interrupted resumes from its last finished epoch; one that holds
    a run with other settings raises :class:`RunError`. On a worker of a
    multi-worker cluster that is not the chief, it returns ``{"worker": True}``
    (only the chief writes the run folder).
    """
    from cifar_helpers import devices, models, pipeline, recipes, training

    run_dir = Path(out)
    _claim(run_dir, settings)
    results_path = run_dir / "results.json"
    if results_path.is_file():
        print(f"{run_dir} already holds a finished run; its results:")
        return json.loads(results_path.read_text())

    spec = models.spec(settings.model)
    # A multi-worker strategy must exist before any other TensorFlow work.
    strategy = devices.choose_strategy(settings.strategy)
    policy = devices.use_precision(spec.precision)
    if settings.seed is not None:
        training.make_reproducible(settings.seed)
    recipe = devices.for_strategy(settings.recipe(), strategy)
    replicas = strategy.num_replicas_in_sync
    print(
        f"strategy {type(strategy).__name__} ({replicas} replicas), precision "
        f"{policy}, global batch {recipe.batch_size}"
    )
    split = settings.load_split()
    print(split.summary())
    train_ds, val_ds = pipeline.split_datasets(split, recipe.batch_size, replicas)
    with strategy.scope():
        model = recipes.compile_model(
            spec.model(smoke=settings.smoke), recipe, steps_per_epoch=len(train_ds)
        )
    chief = devices.is_chief(strategy)
    if not chief:
        # Every worker runs the same steps; only the chief writes the run folder.
        run_dir = run_dir / "workers" / f"worker-{strategy.cluster_resolver.task_id}"
    start = time.perf_counter()
    if training.run_finished(run_dir):
        print(f"{run_dir}: training finished before; writing the results.")
    else:
        training.fit(model, train_ds, val_ds, run_dir, recipe, verbose=verbose)
    wall = time.perf_counter() - start
    if not chief:
        return {"worker": True}
    results = {
        **_save_outcome(run_dir, settings, split, recipe.batch_size),
        "wall_seconds_this_session": wall,
        "data": split.source,
        "synthetic": split.synthetic,
        "smoke": settings.smoke,
        "precision": policy,
        "replicas": replicas,
        "command": command,
        **devices.environment(),
    }
    atomic.write_text(results_path, json.dumps(results, indent=2))
    return results


def _save_outcome(run_dir: Path, settings: RunSettings, split, batch_size) -> dict:
    """Write the finished run's model, class names, history and curves; return its
    test scores, epochs run and training speed."""
    import keras

    from cifar_helpers import inference, plots, training

    history = training.read_history(run_dir / "history.csv")
    # The run's result is its best validation model, whichever session found it.
    model = keras.saving.load_model(run_dir / "best.keras")
    with atomic.replacing(run_dir / "model.keras") as partial:
        model.save(partial)
    inference.write_class_names(run_dir, split.fine_names)
    atomic.write_text(run_dir / "history.json", json.dumps(history, indent=2))
    figure = plots.training_curves(history, title=f"{settings.model}: {split.source}")
    with atomic.replacing(run_dir / "curves.png") as partial:
        figure.savefig(partial, dpi=100)
    seconds = history["epoch_seconds"]
    typical = statistics.median(seconds[1:] if len(seconds) > 1 else seconds)
    return {
        **score(model, split, batch_size),
        "epochs_run": len(history["loss"]),
        "images_per_second": len(split.y_train) / typical,
    }


def score(model, split, batch_size: int) -> dict:
    """``test_accuracy`` (top-1), ``test_top5`` and ``test_loss`` of a compiled
    model on the split's test set."""
    from cifar_helpers import pipeline

    test = pipeline.make_dataset(
        split.x_test,
        split.y_test,
        batch_size=pipeline.eval_batch_size(len(split.y_test), batch_size),
        training=False,
    )
    scores = model.evaluate(test, return_dict=True, verbose=0)
    return {
        "test_accuracy": scores["accuracy"],
        "test_top5": scores["top5"],
        "test_loss": scores["loss"],
    }


def evaluate(run_dir) -> dict:
    """Test accuracy (top-1, top-5) and loss of a finished run's saved model, on
    the test set of the data it was trained on."""
    import keras

    import cifar_helpers.models  # noqa: F401  registers the custom layers and losses

    run_dir = Path(run_dir)
    model_path, recorded = run_dir / "model.keras", run_dir / "run.json"
    if not model_path.is_file() or not recorded.is_file():
        raise RunError(
            f"{run_dir}: no finished run here (model.keras and run.json are missing). "
            "Pass the --out folder of a `train` command that finished."
        )
    settings = RunSettings(**json.loads(recorded.read_text()))
    model = keras.saving.load_model(model_path)
    return score(model, settings.load_split(), settings.recipe().batch_size)
