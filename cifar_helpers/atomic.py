"""Writing files so that a crash never leaves a half-written one where a later run
would trust it: everything is written beside its place under a ``.partial`` name,
flushed to disk, then renamed over the old file in one step (``os.replace`` is
atomic). A killed process leaves at most a ``.partial`` file, which nothing reads
and :func:`remove_partials` deletes. Training's checkpoints, the command line and
exports write through it; ``tests/test_faults.py`` kills runs to check it.
"""

import contextlib
import os
from pathlib import Path

MARK = ".partial"


def partial_path(path) -> Path:
    """Where ``path`` is written before it is complete: ``best.keras`` ->
    ``best.partial.keras``, ``epoch-3.weights.h5`` -> ``epoch-3.partial.weights.h5``
    (the suffixes stay last, as Keras checks them)."""
    path = Path(path)
    stem, dot, suffixes = path.name.partition(".")
    return path.with_name(f"{stem}{MARK}{dot}{suffixes}")


def commit(partial, path):
    """Flush the complete file ``partial`` to disk, then rename it to ``path`` in
    one step, replacing the old file."""
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)


@contextlib.contextmanager
def replacing(path):
    """Yield the partial path to write ``path``'s new content to; when the block
    ends without an error, flush it to disk and rename it to ``path``. After an
    error, the partial file is removed and ``path`` is unchanged."""
    path = Path(path)
    partial = partial_path(path)
    try:
        yield partial
        commit(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text(path, text: str):
    """Write ``text`` to ``path`` atomically (see :func:`replacing`)."""
    with replacing(path) as partial:
        partial.write_text(text)


def remove_partials(folder) -> list[Path]:
    """Delete the partial files a killed process left in ``folder`` (not in the
    folders below it); returns them."""
    folder = Path(folder)
    stale = (
        [p for p in folder.glob(f"*{MARK}.*") if p.is_file()] if folder.is_dir() else []
    )
    for path in stale:
        path.unlink()
    return stale
