"""The software stack the series supports, and what it says about the one it finds.

The floors below are the lowest versions CI tests (``constraints-lowest.txt``
installs exactly them, and ``.ci/run`` runs the unit tests on them beside the pinned
stack of ``constraints.txt``). ``requirements.txt`` and ``pyproject.toml`` declare the
same bounds; ``tests/test_stack.py`` checks that the three agree.

Keras 3.10 is the floor because older Keras 3 releases train or resume *silently*
wrong (:data:`KERAS_FIXES` lists how; the issue that set the floor, 18, measured
each on Keras 3.3 to 3.9), so
:func:`require_supported` refuses them: importing ``resume`` (and so ``training``,
``runs`` and the CLI's ``train``) raises :class:`UnsupportedStackError`, and so does
``inference.export``. :func:`report` is the first thing every notebook prints after
its install cell. Introduced in notebook 01.
"""

import re

# Lowest supported release of each library (major, minor). Below them: refused.
FLOORS = {"tensorflow": (2, 16), "keras": (3, 10), "numpy": (1, 26)}

# What goes wrong on Keras releases below the floor, each fixed in the release named.
KERAS_FIXES = (
    (
        (3, 7),
        "a resumed run restarts from untrained weights (BackupAndRestore never "
        "loads the backup) while it takes the epoch number from it",
    ),
    (
        (3, 7),
        "a resumed run replays the wrong number of shuffles, so it draws other "
        "batches than the interrupted run would have",
    ),
    (
        (3, 7),
        "with steps_per_execution above the number of validation batches, "
        "validation crashes (3.3-3.4) or silently leaves the history (3.5-3.6)",
    ),
    ((3, 8), "Model.export(..., input_signature=...) does not exist"),
    (
        (3, 10),
        "under MirroredStrategy the logged loss is not the one a single device "
        "computes (the weights are), so checkpoints and early stopping watch a "
        "wrong number",
    ),
)


class UnsupportedStackError(ImportError):
    """A library older than the series supports; the message says how to upgrade."""


def parse(version: str) -> tuple[int, int]:
    """``"3.10.0"``, ``"2.16.0rc1"`` or ``"3.6.0.dev2024"`` -> ``(3, 10)`` and so on."""
    match = re.match(r"(\d+)\.(\d+)", version.strip())
    if not match:
        raise ValueError(f"{version!r} is not a version like '3.10.0'.")
    return int(match[1]), int(match[2])


def floor_text(library: str) -> str:
    """The floor of ``library`` as text, for example ``"3.10"``."""
    return ".".join(map(str, FLOORS[library]))


def fix_command(libraries) -> str:
    """The notebook line that upgrades ``libraries`` to their floors."""
    wanted = " ".join(f'"{name}>={floor_text(name)}"' for name in libraries)
    return f"%pip install -q -U {wanted}"


def too_old(versions: dict) -> list[str]:
    """The libraries of ``versions`` (name -> version text) older than their floor."""
    return [name for name, version in versions.items() if parse(version) < FLOORS[name]]


def problems(versions: dict) -> list[str]:
    """One sentence per library of ``versions`` (name -> version text) that is
    older than its floor; empty when the stack is supported."""
    found = []
    for name in too_old(versions):
        version = versions[name]
        oldest = floor_text(name)
        text = (
            f"{name} {version} is older than {oldest}, the oldest the series supports"
        )
        if name == "keras":
            broken = [why for fixed, why in KERAS_FIXES if parse(version) < fixed]
            text += ". On it " + "; ".join(broken)
        found.append(text + ".")
    return found


def advice(versions: dict) -> str | None:
    """The whole message for an unsupported stack (what is too old, why, and the
    line that fixes it), or None when ``versions`` are all supported."""
    found = problems(versions)
    if not found:
        return None
    command = fix_command(too_old(versions))
    return (
        " ".join(found)
        + f"\nFix: run `{command}` in a notebook cell (or the same line "
        "without % in a terminal), then restart the kernel (Colab: Runtime > "
        "Restart session) and run the notebook again from the top."
    )


def installed() -> dict:
    """The versions of the libraries with a floor, as this process imports them
    (a module's ``__version__``: TensorFlow may be installed as ``tensorflow-cpu``
    or ``tf-nightly``, whose package names differ)."""
    import keras
    import numpy
    import tensorflow

    return {
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
    }


def require_supported():
    """Raise :class:`UnsupportedStackError` when an installed library is older
    than its floor. Called by the modules that train, resume or export."""
    message = advice(installed())
    if message:
        raise UnsupportedStackError(message)


def report(say=print) -> dict:
    """Print the TensorFlow, Keras and NumPy this kernel runs and the GPUs it
    sees, and, when a library is too old, what goes wrong and how to fix it.
    Returns the versions, the GPU names and the advice (None when all is well)."""
    import tensorflow as tf

    versions = installed()
    gpus = [
        tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
        for gpu in tf.config.list_physical_devices("GPU")
    ]
    say(", ".join(f"{name} {version}" for name, version in versions.items()))
    say(f"GPUs: {', '.join(gpus) or 'none'}")
    message = advice(versions)
    if message:
        say("UNSUPPORTED: " + message)
    return {"versions": versions, "gpus": gpus, "advice": message}
