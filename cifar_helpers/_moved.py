"""Old names that moved to another module keep working, with a warning, for one
minor version: ``__getattr__ = moved(__name__, {"module": ["name", ...]})`` at the
end of the module they left."""

import importlib
import warnings

REMOVED_IN = "0.3"


def moved(module: str, homes: dict[str, list[str]], renamed=None):
    """A module-level ``__getattr__`` that serves each old name from its new home:
    ``homes`` maps a module of cifar_helpers to the names that moved there
    unchanged, ``renamed`` maps an old name to ``(module, new name)``. Each use
    warns (``DeprecationWarning``) with the new home."""
    names = {name: (home, name) for home, listed in homes.items() for name in listed}
    names.update(renamed or {})

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
