"""Old names that moved to another module keep working, with a warning, for one
minor version: ``__getattr__ = moved(__name__, {"old": ("module", "new")})`` at
the end of the module they left."""

import importlib
import warnings

REMOVED_IN = "0.3"


def moved(module: str, names: dict[str, tuple[str, str]]):
    """A module-level ``__getattr__`` that serves each old name of ``names`` from
    its new home, ``cifar_helpers.<module>.<new name>``, with a
    ``DeprecationWarning`` that names the new home."""

    def __getattr__(name):
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        home, new = names[name]
        warnings.warn(
            f"{module}.{name} is now cifar_helpers.{home}.{new}; the old name "
            f"goes in cifar_helpers {REMOVED_IN}.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(f"cifar_helpers.{home}"), new)

    return __getattr__
