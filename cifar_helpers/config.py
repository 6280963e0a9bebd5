"""Run settings from the environment: the only reader of CIFAR_SMOKE and CIFAR_DATA.

``CIFAR_SMOKE=1`` asks for a smoke run: a stratified subset, few epochs, narrow models,
so a notebook finishes in minutes on a CPU. ``CIFAR_DATA`` selects the data: unset for
the official CIFAR-100 archive, ``synthetic`` for the procedurally drawn stand-in, or
a path to a ``cifar-100-python.tar.gz`` or its extracted folder. CI sets both; nothing
else switches a run to small or fake data. Introduced in notebook 01.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class ConfigError(ValueError):
    """An environment variable of the series holds a value it does not understand."""


@dataclass(frozen=True)
class RunConfig:
    """``smoke``: shrink the run. ``data_source``: what ``data.load_cifar100`` takes."""

    smoke: bool = False
    data_source: str | None = None

    def describe(self) -> str:
        """One line for a notebook's output, saying plainly what kind of run this is."""
        mode = "SMOKE run (reduced data)" if self.smoke else "full run"
        data = self.data_source or "official CIFAR-100 archive"
        if self.data_source == "synthetic":
            data = "SYNTHETIC stand-in data (not CIFAR-100)"
        return f"{mode} on {data}"


def from_env(environ: Mapping[str, str] | None = None) -> RunConfig:
    """Read ``CIFAR_SMOKE`` and ``CIFAR_DATA`` (from ``os.environ`` by default)."""
    environ = os.environ if environ is None else environ
    raw_smoke = environ.get("CIFAR_SMOKE", "").strip().lower()
    if raw_smoke not in _TRUE | _FALSE:
        raise ConfigError(
            f"CIFAR_SMOKE={environ['CIFAR_SMOKE']!r} is not understood: set it to 1 "
            "for a smoke run or 0 (or leave it unset) for a full run."
        )
    data_source = environ.get("CIFAR_DATA", "").strip() or None
    return RunConfig(smoke=raw_smoke in _TRUE, data_source=data_source)
