"""Helpers for the CIFAR-100 notebook series (TensorFlow 2, Keras 3).

Import the modules you need (``from cifar_helpers import data, augment, plots``); the
package itself only carries its version, so importing it is instant.
"""

import re
import warnings

__version__ = "0.3.0"

__all__ = ["__version__", "require_version"]


def _parse(version: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", version.strip())
    if not match:
        raise ValueError(
            f"require_version: {version!r} is not a version like '0.1' or '0.1.2'."
        )
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def require_version(minimum: str) -> str:
    """Check that the installed cifar_helpers suits a notebook; return its version.

    Raises ``RuntimeError`` when the installed package is older than ``minimum``
    (with the command that upgrades it), and warns when it is a newer minor or major
    release than the notebook was written for, since recipes may have moved on.
    Introduced in notebook 01.
    """
    wanted, installed = _parse(minimum), _parse(__version__)
    if installed < wanted:
        raise RuntimeError(
            f"This notebook needs cifar_helpers {minimum} or newer, but {__version__} "
            "is installed. Run `pip install -e .` in the repository (or rerun the "
            "Colab setup cell after restarting the runtime) to update it."
        )
    if installed[:2] > wanted[:2]:
        warnings.warn(
            f"cifar_helpers {__version__} is newer than the {minimum} this notebook "
            "was written for; results may differ from the notebook's prose.",
            stacklevel=2,
        )
    return __version__
