"""Where every benchmark writes its numbers, with the machine they were measured on."""

import json
from pathlib import Path

from cifar_helpers.devices import environment


def save(summary: dict, path: str) -> None:
    """Write ``summary`` and :func:`cifar_helpers.devices.environment` as JSON to
    ``path``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({**summary, **environment()}, indent=2))
    print(f"wrote {path}")
