"""The training loop written out (:mod:`cifar_helpers.loop`) trains as
:func:`cifar_helpers.training.fit` does: the same losses, metrics, schedules and
weights, into the same run-folder files. Across workers it is tested in
``tests/test_distribution.py`` and ``tests/test_multiworker.py``."""

import dataclasses
import inspect
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from cifar_helpers import loop, models, pipeline, recipes, training

# Augmentation on and DropBlock active in the second epoch (keep_prob 0.9): the
# loop must draw the same random numbers as fit, in the same order. One shuffle
# for both epochs: fit starts an extra, unread iteration of the dataset at each
# epoch's end (a reshuffle), the loop does not (see the loop's docstring).
RECIPE = dataclasses.replace(
    recipes.ModernRecipe(),
    batch_size=16,
    epochs=2,
    peak_learning_rate=0.01,
    reshuffle=False,
    jit_compile=False,
    steps_per_execution=1,
)


def _trained(train_with, run_dir):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, 96)
    keras.utils.set_random_seed(0)
    train = pipeline.make_dataset(
        images[:64], labels[:64], batch_size=16, training=True, reshuffle=False
    )
    val = pipeline.make_dataset(images[64:], labels[64:], batch_size=16, training=False)
    model = models.resnet9(widths=(8, 16, 16, 32))
    recipes.compile_model(model, RECIPE, steps_per_epoch=len(train))
    history = train_with(model, train, val, run_dir, RECIPE, verbose=0)
    return history.history, model.get_weights()


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """What ``fit`` and the loop did, each from the same start, and their folders."""
    folders = {name: tmp_path_factory.mktemp(name) for name in ("fit", "loop")}
    return {
        "fit": (*_trained(training.fit, folders["fit"]), folders["fit"]),
        "loop": (*_trained(loop.fit, folders["loop"]), folders["loop"]),
    }


def test_the_loop_logs_what_fit_logs(both):
    fit_history, loop_history = both["fit"][0], both["loop"][0]
    assert sorted(loop_history) == sorted(fit_history)
    for key in fit_history:
        if key != "epoch_seconds":
            np.testing.assert_allclose(loop_history[key], fit_history[key], rtol=1e-6)
    assert fit_history["keep_prob"] == [1.0, 0.9]  # DropBlock dropped in epoch 2


def test_the_loop_ends_with_fits_weights(both):
    # Measured: equal bit for bit on CPU (TF 2.21, Keras 3.15); float tolerance
    # allows another summation order.
    for a, b in zip(both["fit"][1], both["loop"][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_the_loop_writes_the_run_folder_fit_writes(both):
    names = {
        folder: sorted(path.name for path in folder.iterdir())
        for folder in (both["fit"][2], both["loop"][2])
    }
    assert names[both["fit"][2]] == names[both["loop"][2]]
    assert training.run_finished(both["loop"][2])
    logged = training.read_history(both["loop"][2] / "history.csv")
    assert len(logged["loss"]) == RECIPE.epochs


NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
NOTEBOOK = NOTEBOOKS / "07_scaling_and_the_training_loop.ipynb"


@pytest.mark.parametrize("twin", [loop.hits, loop.make_train_step, loop.train_epochs])
def test_notebook_07_writes_out_the_loop_the_package_runs(twin):
    """The step and the epoch that notebook 07 writes out, cell for cell, are the
    package's (one source of truth, as STYLE.md asks)."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    written = [
        "".join(cell["source"]).strip()
        for cell in cells
        if cell["cell_type"] == "code"
        and "".join(cell["source"]).startswith(f"def {twin.__name__}(")
    ]
    assert written == [inspect.getsource(twin).strip()]
