"""A training run as a folder: train (or resume) a model of the catalogue with its
own recipe and write everything the run produced; score a finished run again.

``cifar-helpers train`` and ``evaluate`` call :func:`train` and :func:`evaluate`;
a notebook can call them too. :func:`train` composes the package's steps in order:
the strategy (before any other TensorFlow work), the precision, the seed, the
recipe scaled for the strategy, the data and its pipelines, the model compiled in
the strategy's scope, :func:`cifar_helpers.training.fit`, and then the results.

A run folder's state is recorded, never guessed from which files exist:

1. ``run.json``: the run's :class:`RunSettings`, written once the settings, the
   data, the seed and the strategy have been checked (a start that fails on them
   records nothing); a resume must ask for the same;
2. while training, what ``fit`` writes: ``history.csv``, ``best.keras``, ``logs/``
   and ``backup/``, whose record commits each finished epoch;
3. ``trained.json``: training ended (``fit`` writes it, then deletes the backup);
4. the outcome: ``model.keras`` (the best validation model), ``classes.json``,
   ``history.json``, ``curves.png`` and ``results.json``;
5. ``finished.json``, written last: the run is finished.

The same command resumes any other state from its last committed epoch (or, with
none committed, starts again); files that disagree raise
:class:`cifar_helpers.resume.DamagedRunError`. While ``train`` writes the folder, it
holds the folder's lock (:mod:`cifar_helpers.lock`). Introduced in notebook 02.
"""

import dataclasses
import json
import statistics
import time
from pathlib import Path

from cifar_helpers import atomic, resume

SMOKE_EPOCHS = 2
RUN_FILE = "run.json"
RESULTS = "results.json"
FINISHED = resume.FINISHED
# What a finished run folder holds; finished.json is written after all of them.
OUTCOME = (RUN_FILE, "model.keras", "classes.json", "history.json", RESULTS)
SEED_LIMIT = 2**32  # NumPy's seeds are below it


class RunError(ValueError):
    """A run folder or settings that cannot be used as asked; the message says
    why (a usage error: exit status 2 on the command line)."""


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What makes two runs the same run: resuming a run must repeat these.

    ``model``: a name of :data:`cifar_helpers.models.CATALOGUE`; ``data``: what
    :func:`cifar_helpers.data.load_cifar100` takes (None: the official archive);
    ``smoke``: a stratified subset and the model's narrow copy; ``epochs``: None
    for the recipe's (or :data:`SMOKE_EPOCHS`); ``strategy``: one of
    :data:`cifar_helpers.devices.STRATEGIES`; ``seed``: None for an unseeded run,
    else a whole number below 2**32 (see
    :func:`cifar_helpers.training.make_reproducible`); ``recipe``: a name of
    :data:`cifar_helpers.recipes.RECIPES`, None for the model's own. A value of the
    wrong kind raises :class:`RunError`.
    """

    model: str
    data: str | None = None
    smoke: bool = False
    epochs: int | None = None
    strategy: str = "auto"
    seed: int | None = None
    recipe: str | None = None

    def __post_init__(self):
        import inspect

        from cifar_helpers.devices import STRATEGIES
        from cifar_helpers.models import ALIASES, CATALOGUE
        from cifar_helpers.recipes import RECIPES

        def whole(value, low, high=None):
            return (
                isinstance(value, int)
                and not isinstance(value, bool)
                and value >= low
                and (high is None or value < high)
            )

        problems = []
        if self.model not in CATALOGUE and self.model not in ALIASES:
            problems.append(f"model {self.model!r} (use one of {', '.join(CATALOGUE)})")
        if self.data is not None and not isinstance(self.data, str):
            problems.append(f"data {self.data!r} (a path, 'synthetic' or None)")
        if not isinstance(self.smoke, bool):
            problems.append(f"smoke {self.smoke!r} (True or False)")
        if self.epochs is not None and not whole(self.epochs, 1):
            problems.append(f"epochs {self.epochs!r} (a whole number of at least 1)")
        if self.strategy not in STRATEGIES:
            problems.append(
                f"strategy {self.strategy!r} (use one of {', '.join(STRATEGIES)})"
            )
        if self.seed is not None and not whole(self.seed, 0, SEED_LIMIT):
            problems.append(f"seed {self.seed!r} (a whole number from 0 to 2**32 - 1)")
        if self.recipe is not None and self.recipe not in RECIPES:
            problems.append(
                f"recipe {self.recipe!r} (use one of {', '.join(RECIPES)}, or None "
                "for the model's own)"
            )
        elif self.recipe is not None and not problems:
            name = ALIASES.get(self.model, self.model)
            takes = inspect.signature(CATALOGUE[name].build).parameters
            options = [key for key, _ in RECIPES[self.recipe].model_options]
            if any(key not in takes for key in options):
                problems.append(
                    f"recipe {self.recipe!r} with model {name!r} (that recipe builds "
                    f"its model with {', '.join(options)}, which {name} does not take; "
                    "use it with original_resnet)"
                )
        if problems:
            raise RunError("RunSettings: cannot use " + "; ".join(problems) + ".")

    def chosen_recipe(self):
        """The recipe these settings name (the model's own when ``recipe`` is
        None), with their epochs, on one device."""
        from cifar_helpers import models
        from cifar_helpers.recipes import RECIPES

        spec = models.spec(self.model)
        recipe = RECIPES[self.recipe] if self.recipe else spec.recipe
        if self.smoke and spec.smoke_batch:
            recipe = dataclasses.replace(recipe, batch_size=spec.smoke_batch)
        epochs = self.epochs or (SMOKE_EPOCHS if self.smoke else recipe.epochs)
        return dataclasses.replace(recipe, epochs=epochs)

    def load_split(self):
        """The data with its validation split (a stratified subset when smoke); for
        a recipe that watches the test set, all training images, with the test set
        in the validation split's place."""
        from cifar_helpers import data

        cifar = data.load_cifar100(self.data)
        if self.smoke:
            cifar = data.stratified_subset(cifar, train_per_class=30, test_per_class=10)
        if self.chosen_recipe().watches_test:
            return data.with_test_as_validation(cifar)
        return data.with_validation_split(cifar, val_per_class=10 if self.smoke else 20)

    def known_as(self) -> "RunSettings":
        """These settings as a run compares them: the model under its current name
        (a run started under an old name resumes under the new one), the recipe
        and the epochs it resolves to, a data path made absolute."""
        from cifar_helpers.models import ALIASES

        data = self.data
        if data is not None and data != "synthetic":
            data = str(Path(data).expanduser().absolute())
        renamed = dataclasses.replace(
            self, model=ALIASES.get(self.model, self.model), data=data
        )
        recipe = renamed.chosen_recipe()
        return dataclasses.replace(renamed, epochs=recipe.epochs, recipe=recipe.name)


ANOTHER_FOLDER = resume.ANOTHER_FOLDER
# What a run folder may hold besides the outcome; a folder holding none of these
# and not empty is not a run folder.
RUN_FILES = {*OUTCOME, FINISHED, resume.TRAINED, "best.keras", "history.csv"}
RUN_FILES |= {"backup", "logs", "curves.png", "workers", ".lock", resume.LAST_MODEL}


def _recorded(run_dir: Path) -> RunSettings | None:
    """The settings ``run.json`` records, or None when there is none."""
    path = run_dir / RUN_FILE
    fix = "Without them, no command can be checked against this run. " + ANOTHER_FOLDER
    recorded = resume.read_json(path, "the run's settings", fix)
    if recorded is None:
        return None
    try:
        return RunSettings(**recorded)
    except (TypeError, RunError) as error:
        raise resume.DamagedRunError(
            f"{path}: not a run's settings ({error}). {fix}"
        ) from None


def _rewrite_advice(run_dir: Path) -> str:
    """How to get the results of a run whose outcome files are damaged."""
    try:
        ended = resume.training_ended(run_dir)
    except resume.DamagedRunError:
        ended = None
    if ended and (run_dir / "best.keras").is_file() and (run_dir / RUN_FILE).is_file():
        return (
            f"Delete {run_dir / FINISHED}, and the same command writes the results "
            "again from best.keras; or train into another --out folder."
        )
    return ANOTHER_FOLDER


def finished_results(run_dir) -> dict | None:
    """The results of the finished run in ``run_dir``, or None when its run has not
    finished; :class:`~cifar_helpers.resume.DamagedRunError` when the record says
    finished and the files disagree, or ``model.keras``, ``classes.json`` or
    ``results.json`` is damaged (the message says how to write them again).
    ``evaluate``, ``predict`` and ``export`` use a run folder only when it holds a
    finished run."""
    run_dir = Path(run_dir)
    advice = _rewrite_advice(run_dir)
    record = resume.read_json(
        run_dir / FINISHED, "the record that the run finished", advice
    )
    if record is None:
        return None
    listed = record.get("files")
    if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
        raise resume.DamagedRunError(
            f"{run_dir / FINISHED}: not a record of a finished run (it lists no "
            f"files). {advice}"
        )
    missing = [
        name
        for name in dict.fromkeys([*OUTCOME, *listed])
        if "/" in name or not (run_dir / name).is_file()
    ]
    if missing:
        raise resume.DamagedRunError(
            f"{run_dir}: {FINISHED} records a finished run, but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing, so its results cannot "
            f"be trusted. {advice}"
        )
    from cifar_helpers import inference

    try:
        inference.check_keras_file(run_dir / "model.keras")
        inference.read_class_names(run_dir / inference.CLASSES_FILE)
    except inference.ModelError as error:
        raise resume.DamagedRunError(f"{error} {advice}") from None
    results = resume.read_json(run_dir / RESULTS, "the run's test scores", advice)
    scores = ("test_accuracy", "test_top5", "test_loss")
    if not all(type(results.get(key)) in (int, float) for key in scores):
        raise resume.DamagedRunError(
            f"{run_dir / RESULTS}: does not hold the test scores "
            f"({', '.join(scores)}). {advice}"
        )
    return results


def _check_out(out) -> Path:
    """``out`` as a run folder path, or :class:`RunError` when it cannot be one."""
    if not str(out).strip():
        raise RunError("--out is empty: give the name of a new folder for the run.")
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(
            f"--out {run_dir}: a file, not a folder; give the name of a new folder "
            "(or of a run folder to resume)."
        )
    if run_dir.is_dir():
        foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES)
        if foreign and not (run_dir / RUN_FILE).is_file():
            raise RunError(
                f"--out {run_dir}: a folder that holds other files ("
                f"{', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}) and "
                "no run; give the name of a new or empty folder."
            )
    return run_dir


def _check_folder(run_dir: Path, settings: RunSettings, say=print) -> dict | None:
    """Check that ``run_dir`` can take the run ``settings`` describe, without
    writing anything (``say`` prints what a start will do); return its results
    when that run has finished there."""
    if not run_dir.is_dir():
        return None
    previous = _recorded(run_dir)
    finished = finished_results(run_dir)
    backup, ended = resume.committed_backup(run_dir), resume.training_ended(run_dir)
    committed = finished is not None or backup is not None or ended is not None
    if previous is None and committed:
        raise resume.DamagedRunError(
            f"{run_dir}: holds a run that committed epochs, but its {RUN_FILE} (the "
            "settings a resume must repeat) is missing, so no command can be checked "
            "against it. " + ANOTHER_FOLDER
        )
    if previous is not None and previous.known_as() != settings.known_as():
        asked, held = dataclasses.asdict(settings), dataclasses.asdict(previous)
        if committed:
            again = "see its results" if finished else "resume that run"
            raise RunError(
                f"{run_dir} holds a run with other settings ({held}); this command "
                f"asks for {asked}. Use another --out folder, or repeat the original "
                f"command to {again}."
            )
        say(
            f"{run_dir}: the run started there with other settings ({held}) never "
            "committed an epoch, so nothing is lost: it starts again with these."
        )
    elif not committed and resume.logged_epochs(run_dir / "history.csv"):
        legacy = (
            f" (its {RESULTS} has no {FINISHED} beside it: the run never recorded "
            "that it finished, as no run before cifar_helpers 0.2.1 did)"
            if (run_dir / RESULTS).is_file()
            else ""
        )
        say(f"{run_dir}: no committed epoch to resume{legacy}; training starts again.")
    if ended and not finished:
        asked = settings.chosen_recipe().epochs
        if ended["epochs"] != asked:
            raise resume.DamagedRunError(
                f"{run_dir / resume.TRAINED}: records a run of {ended['epochs']} "
                f"epoch(s); {RUN_FILE} asks for {asked}: the files disagree. "
                + ANOTHER_FOLDER
            )
        if not (run_dir / "best.keras").is_file():
            raise resume.DamagedRunError(
                f"{run_dir}: {resume.TRAINED} records that training ended, but "
                "best.keras (the model it trained) is missing. " + ANOTHER_FOLDER
            )
    return finished


def train(settings: RunSettings, out, *, command: str | None = None, verbose=1):
    """Train (or resume) the run ``settings`` describe in the folder ``out``, and
    return its results (what ``results.json`` holds: test scores, epochs run,
    speed, data, precision, replicas, ``command``, versions and hardware).

    A folder that holds the finished run returns its results without training; one
    whose run was interrupted resumes from its last committed epoch; one that holds
    a run with other settings that committed an epoch raises :class:`RunError`, and
    one whose files are damaged or disagree raises
    :class:`~cifar_helpers.resume.DamagedRunError`. Another process training into
    the folder raises :class:`~cifar_helpers.lock.FolderInUseError`. On a worker of
    a multi-worker cluster that is not the chief, it returns ``{"worker": True}``
    (only the chief writes the run folder).
    """
    import contextlib
    import os

    from cifar_helpers import lock

    run_dir = _check_out(out)
    with contextlib.ExitStack() as held:
        # Taken first, so that a folder in use is refused before any work; in a
        # multi-worker cluster only the chief's is taken, once it is known.
        if settings.strategy != "multiworker" and not os.environ.get("TF_CONFIG"):
            held.enter_context(lock.holding(run_dir))
        return _train(settings, run_dir, command, verbose)


def _train(settings: RunSettings, run_dir: Path, command, verbose) -> dict:
    from cifar_helpers import devices, lock, loop, models, pipeline, recipes, training

    finished = _check_folder(run_dir, settings)
    if finished is not None:
        print(f"{run_dir} already holds a finished run; its results:")
        return finished

    spec = models.spec(settings.known_as().model)
    # A multi-worker strategy must exist before any other TensorFlow work.
    strategy = devices.choose_strategy(settings.strategy)
    policy = devices.use_precision(spec.precision)
    if settings.seed is not None:
        training.make_reproducible(settings.seed)
    recipe = devices.for_strategy(settings.chosen_recipe(), strategy)
    replicas = strategy.num_replicas_in_sync
    print(
        f"strategy {type(strategy).__name__} ({replicas} replicas), precision "
        f"{policy}, global batch {recipe.batch_size}"
    )
    split = settings.load_split()
    print(split.summary())
    if recipe.watches_test:
        print(
            f"recipe {recipe.name}: no validation split; the test set is watched by "
            "early stopping, as the original did, so the test score will be "
            "optimistic"
        )
    train_ds, val_ds = pipeline.split_datasets(
        split, recipe.batch_size, replicas, reshuffle=recipe.reshuffle
    )
    with strategy.scope():
        model = recipes.compile_model(
            spec.model(smoke=settings.smoke, **dict(recipe.model_options)),
            recipe,
            steps_per_epoch=len(train_ds),
        )
    chief = devices.is_chief(strategy)
    if not chief:
        # Every worker runs the same steps; only the chief writes the run folder.
        run_dir = run_dir / "workers" / f"worker-{strategy.cluster_resolver.task_id}"
    with lock.holding(run_dir):
        if chief:
            # Again, now that no other process can write the folder.
            finished = _check_folder(run_dir, settings, say=lambda _: None)
            if finished is not None:
                return finished
            # Resolved: a data path is absolute, so that the run does not depend
            # on the folder a later command starts in.
            recorded = dataclasses.asdict(settings.known_as())
            atomic.write_text(run_dir / RUN_FILE, json.dumps(recorded, indent=2))
        start, digest = time.perf_counter(), None
        if training.run_finished(run_dir):
            print(f"{run_dir}: training finished before; writing the results.")
            resume.drop_backup(run_dir)  # left if killed just as training ended
        else:
            # Model.fit fails across workers: the loop written out trains there.
            fit = loop.fit if devices.across_workers(strategy) else training.fit
            fit(model, train_ds, val_ds, run_dir, recipe, verbose=verbose)
            digest = weights_digest(model)
            print(f"weights digest {digest} (each worker of a cluster prints one)")
        wall = time.perf_counter() - start
        if not chief:
            return {"worker": True, "weights_digest": digest}
        results = {
            **_save_outcome(run_dir, settings, split, recipe),
            "recipe": recipe.name,
            "test_set_watched": recipe.watches_test,
            **({"note": recipes.TEST_WATCHED} if recipe.watches_test else {}),
            "wall_seconds_this_session": wall,
            "data": split.source,
            "synthetic": split.synthetic,
            "smoke": settings.smoke,
            "precision": policy,
            "replicas": replicas,
            "weights_digest": digest,
            "command": command,
            **devices.environment(),
        }
        atomic.write_text(run_dir / RESULTS, json.dumps(results, indent=2))
        atomic.write_text(
            run_dir / FINISHED, json.dumps({"files": [*OUTCOME, "curves.png"]})
        )
    return results


def _save_outcome(run_dir: Path, settings: RunSettings, split, recipe) -> dict:
    """Write the finished run's model (the one the recipe keeps), class names,
    history and curves; return its test scores, epochs run and training speed, and,
    when the test set was watched, the training set's scores in inference mode
    (what the original reported as its training accuracy and loss)."""
    from cifar_helpers import inference, plots, training

    history = training.read_history(run_dir / "history.csv")
    needed = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")
    if missing := [column for column in needed if column not in history]:
        raise resume.DamagedRunError(
            f"{run_dir / 'history.csv'}: has no column {', '.join(missing)}; its "
            "header row is damaged. Mend it (the columns are named in the rows of "
            "history.json of any other run), or train into another --out folder."
        )
    ended = resume.training_ended(run_dir)
    if ended and len(history["loss"]) != ended["epochs_run"]:
        raise resume.DamagedRunError(
            f"{run_dir}: {resume.TRAINED} records {ended['epochs_run']} epoch(s), but "
            f"history.csv logs {len(history['loss'])}: the files disagree. "
            "Train into another --out folder."
        )
    # The run's result is the model its recipe keeps: the best validation model,
    # whichever session found it, or the last epoch's.
    kept = "best.keras" if recipe.keep == "best" else resume.LAST_MODEL
    model = inference.read_keras_model(
        run_dir / kept, fix="Train into another --out folder."
    )
    with atomic.replacing(run_dir / "model.keras") as partial:
        model.save(partial)
    inference.write_class_names(run_dir, split.fine_names)
    atomic.write_text(run_dir / "history.json", json.dumps(history, indent=2))
    figure = plots.training_curves(history, title=f"{settings.model}: {split.source}")
    with atomic.replacing(run_dir / "curves.png") as partial:
        figure.savefig(partial, dpi=100)
    seconds = history["epoch_seconds"]
    typical = statistics.median(seconds[1:] if len(seconds) > 1 else seconds)
    results = {
        **score(model, split, recipe.batch_size),
        "epochs_run": len(history["loss"]),
        "images_per_second": len(split.y_train) / typical,
        "model_kept": recipe.keep,
    }
    if recipe.watches_test:
        scores = _evaluate_on(model, split.x_train, split.y_train, recipe.batch_size)
        results["train_accuracy"] = scores["accuracy"]
        results["train_loss"] = scores["loss"]
    return results


def weights_digest(model) -> str:
    """The first 16 hex digits of the SHA-256 of the model's weights (their bytes, in
    the model's order): equal on every worker of a cluster that trained together,
    and on two runs that ended bit for bit alike."""
    import hashlib

    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()[:16]


def score(model, split, batch_size: int) -> dict:
    """``test_accuracy`` (top-1), ``test_top5`` and ``test_loss`` of a compiled
    model on the split's test set."""
    scores = _evaluate_on(model, split.x_test, split.y_test, batch_size)
    return {
        "test_accuracy": scores["accuracy"],
        "test_top5": scores["top5"],
        "test_loss": scores["loss"],
    }


def _evaluate_on(model, images, labels, batch_size: int) -> dict:
    """A compiled model's metrics on ``images`` in inference mode."""
    from cifar_helpers import pipeline

    data = pipeline.make_dataset(
        images,
        labels,
        batch_size=pipeline.eval_batch_size(len(labels), batch_size),
        training=False,
    )
    return model.evaluate(data, return_dict=True, verbose=0)


def evaluate(run_dir) -> dict:
    """Test accuracy (top-1, top-5) and loss of a finished run's saved model, on
    the test set of the data it was trained on; with the run's recipe and whether
    that recipe watched the test set (then the scores are optimistic)."""
    from cifar_helpers import inference

    run_dir = Path(run_dir)
    if not run_dir.is_dir() or finished_results(run_dir) is None:
        raise RunError(
            f"{run_dir}: no finished run here ({FINISHED} is missing). Pass the --out "
            "folder of a `train` command that finished (or finish it: run the same "
            "`train` command again)."
        )
    settings = _recorded(run_dir)
    model = inference.read_keras_model(
        run_dir / "model.keras", fix=_rewrite_advice(run_dir)
    )
    recipe = settings.chosen_recipe()
    return {
        **score(model, settings.load_split(), recipe.batch_size),
        "recipe": recipe.name,
        "test_set_watched": recipe.watches_test,
    }
