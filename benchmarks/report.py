"""What every benchmark records beside its numbers, and where it writes them."""

import json
import os
import platform
from pathlib import Path

import keras
import tensorflow as tf


def environment() -> dict:
    """The machine and library versions a result was measured with."""
    return {
        "cpus": os.cpu_count(),
        "devices": [d.device_type for d in tf.config.list_physical_devices()],
        "machine": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def save(summary: dict, path: str) -> None:
    """Write ``summary`` and :func:`environment` as JSON to ``path``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({**summary, **environment()}, indent=2))
    print(f"wrote {path}")
