"""The synthetic stand-in for CIFAR-100: an archive in exactly the official layout,
whose 100 classes are drawn shapes in five colours.

No machine of the project's CI can download the real archive, so the tests and the
smoke runs feed archives written by :func:`write_synthetic_archive` through the same
parsing code as the real one (:func:`cifar_helpers.data.read_archive`). Each class is
a colour and a shape (``red_disc``); its superclass is the shape, so the 20
superclasses are meaningful, and a small CNN learns the classes well above chance in
a few epochs. It is not CIFAR-100: accuracies on it only show that code runs and
learns. ``load_cifar100("synthetic")`` reads the one that :func:`synthetic_archive_path`
caches. Introduced in notebook 01.
"""

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

from cifar_helpers import atomic
from cifar_helpers.data import FOLDER_NAME, NUM_FINE, ROW_BYTES, datasets_folder

# The size of the archive that ``load_cifar100("synthetic")`` writes (and caches).
TRAIN_PER_CLASS = 100
TEST_PER_CLASS = 20
_VERSION = 1  # bump when the drawing changes, so caches are not reused

_COLOURS = {
    "red": (220, 45, 40),
    "green": (45, 200, 70),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 45),
    "purple": (165, 60, 215),
}


def _patterns():
    """20 shapes and textures (the synthetic superclasses), each a mask function.

    Each takes row/column offsets from the shape's centre ``dy, dx``, absolute
    coordinates ``yy, xx``, the radius ``r`` and a phase ``p`` (all broadcastable to
    ``n x 32 x 32``) and returns a boolean mask.
    """
    dist = np.hypot
    big = np.maximum
    return {
        "disc": lambda dy, dx, yy, xx, r, p: dist(dy, dx) < r,
        "ring": lambda dy, dx, yy, xx, r, p: abs(dist(dy, dx) - 0.8 * r) < 0.22 * r,
        "square": lambda dy, dx, yy, xx, r, p: big(abs(dy), abs(dx)) < 0.8 * r,
        "frame": lambda dy, dx, yy, xx, r, p: (
            abs(big(abs(dy), abs(dx)) - 0.7 * r) < 0.15 * r
        ),
        "diamond": lambda dy, dx, yy, xx, r, p: abs(dy) + abs(dx) < r,
        "plus": lambda dy, dx, yy, xx, r, p: (
            (abs(dy) < 0.28 * r) & (abs(dx) < r) | (abs(dx) < 0.28 * r) & (abs(dy) < r)
        ),
        "cross": lambda dy, dx, yy, xx, r, p: (
            (abs(abs(dy) - abs(dx)) < 0.4 * r) & (big(abs(dy), abs(dx)) < 0.9 * r)
        ),
        "triangle": lambda dy, dx, yy, xx, r, p: (
            (dy < 0.7 * r) & (abs(dx) < 0.6 * (dy + r))
        ),
        "hstripes": lambda dy, dx, yy, xx, r, p: (yy + p) % 8 < 4,
        "vstripes": lambda dy, dx, yy, xx, r, p: (xx + p) % 8 < 4,
        "diagonals": lambda dy, dx, yy, xx, r, p: (yy + xx + p) % 10 < 5,
        "checks": lambda dy, dx, yy, xx, r, p: ((yy + p) // 6 + (xx + p) // 6) % 2 == 0,
        "dots": lambda dy, dx, yy, xx, r, p: ((yy + p) % 8 < 3) & ((xx + p) % 8 < 3),
        "hbar": lambda dy, dx, yy, xx, r, p: (abs(dy) < 0.3 * r) & (abs(dx) < 1.3 * r),
        "vbar": lambda dy, dx, yy, xx, r, p: (abs(dx) < 0.3 * r) & (abs(dy) < 1.3 * r),
        "halfdisc": lambda dy, dx, yy, xx, r, p: (dist(dy, dx) < r) & (dy < 0),
        "twodiscs": lambda dy, dx, yy, xx, r, p: (
            (dist(dy, dx - 0.6 * r) < 0.45 * r) | (dist(dy, dx + 0.6 * r) < 0.45 * r)
        ),
        "ell": lambda dy, dx, yy, xx, r, p: (
            (abs(dx + 0.5 * r) < 0.3 * r) & (abs(dy) < r)
            | (abs(dy - 0.7 * r) < 0.3 * r) & (abs(dx) < 0.8 * r)
        ),
        "target": lambda dy, dx, yy, xx, r, p: (
            (dist(dy, dx) < 0.3 * r) | (abs(dist(dy, dx) - 0.85 * r) < 0.15 * r)
        ),
        "corner": lambda dy, dx, yy, xx, r, p: (
            (dy < 0.2 * r) & (dx < 0.2 * r) & (dist(dy, dx) < 1.3 * r)
        ),
    }


def synthetic_class_names() -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
    """Fine names (``colour_shape``, sorted), coarse names (shapes, sorted), map."""
    coarse = tuple(sorted(_patterns()))
    fine = tuple(sorted(f"{c}_{s}" for s in coarse for c in _COLOURS))
    fine_to_coarse = np.array([coarse.index(n.split("_", 1)[1]) for n in fine])
    return fine, coarse, fine_to_coarse


def draw_synthetic_images(fine_label: int, count: int, rng) -> np.ndarray:
    """``count`` uint8 32x32x3 images of one synthetic class, drawn with ``rng``.

    A coloured shape or texture (the class) at a random place and size, on a random
    dark background with pixel noise.
    """
    fine, coarse, fine_to_coarse = synthetic_class_names()
    colour = np.array(_COLOURS[fine[fine_label].split("_", 1)[0]], dtype=np.float32)
    pattern = _patterns()[coarse[fine_to_coarse[fine_label]]]
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    shape = (count, 1, 1)
    cy, cx = rng.uniform(12, 20, shape), rng.uniform(12, 20, shape)
    radius = rng.uniform(6.5, 10.5, shape)
    phase = rng.integers(0, 8, shape)
    mask = pattern(yy - cy, xx - cx, yy, xx, radius, phase)[..., None]
    background = rng.uniform(0, 110, (count, 1, 1, 3))
    foreground = colour + rng.uniform(-30, 30, (count, 1, 1, 3))
    images = np.where(mask, foreground, background)
    images += rng.normal(0, 12, images.shape)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def _pickle_member(obj: dict) -> bytes:
    # Protocol 2 with byte-string keys: what the official Python-2 pickles hold.
    return pickle.dumps(obj, protocol=2)


def _synthetic_split(per_class: int, rng, label: bytes, prefix: str) -> dict:
    fine, _, fine_to_coarse = synthetic_class_names()
    images = np.concatenate(
        [draw_synthetic_images(c, per_class, rng) for c in range(100)]
    )
    fine_labels = np.repeat(np.arange(NUM_FINE), per_class)
    order = rng.permutation(len(fine_labels))
    images, fine_labels = images[order], fine_labels[order]
    return {
        b"filenames": [
            f"{prefix}_{fine[c]}_{i:05d}.png".encode()
            for i, c in enumerate(fine_labels)
        ],
        b"batch_label": label,
        b"fine_labels": fine_labels.tolist(),
        b"coarse_labels": fine_to_coarse[fine_labels].tolist(),
        # Channel-planar rows: all red bytes, then green, then blue.
        b"data": images.transpose(0, 3, 1, 2).reshape(len(images), ROW_BYTES),
    }


def write_synthetic_archive(
    path: str | os.PathLike,
    *,
    train_per_class: int = TRAIN_PER_CLASS,
    test_per_class: int = TEST_PER_CLASS,
    seed: int = 0,
) -> Path:
    """Write a synthetic ``cifar-100-python.tar.gz`` in exactly the official layout.

    Members ``cifar-100-python/train``, ``test`` and ``meta`` hold protocol-2 pickles
    with byte-string keys, like the official ones. Each of the 100 classes is a colour
    and a shape (``red_disc``); its superclass is the shape, so the 20 superclasses
    are meaningful. A small CNN learns the classes well above chance in a few epochs.
    This is not CIFAR-100: accuracies on it only show that code runs and learns.
    The file is written atomically (:func:`cifar_helpers.atomic.replacing`).
    """
    if train_per_class < 1 or test_per_class < 1:
        raise ValueError(
            f"write_synthetic_archive: train_per_class={train_per_class} and "
            f"test_per_class={test_per_class} must both be at least 1."
        )
    rng = np.random.default_rng(seed)
    fine, coarse, _ = synthetic_class_names()
    members = {
        "train": _synthetic_split(
            train_per_class, rng, b"training batch 1 of 1", "train"
        ),
        "test": _synthetic_split(test_per_class, rng, b"testing batch 1 of 1", "test"),
        "meta": {
            b"fine_label_names": [n.encode() for n in fine],
            b"coarse_label_names": [n.encode() for n in coarse],
        },
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic.replacing(path) as partial,
        tarfile.open(partial, mode="w:gz", compresslevel=6) as tar,
    ):
        folder = tarfile.TarInfo(FOLDER_NAME)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for name, obj in members.items():
            payload = _pickle_member(obj)
            info = tarfile.TarInfo(f"{FOLDER_NAME}/{name}")
            info.size, info.mode = len(payload), 0o644
            tar.addfile(info, io.BytesIO(payload))
    return path


def synthetic_archive_path(*, cache_dir=None, seed: int = 0) -> Path:
    """The cached synthetic archive that ``load_cifar100("synthetic")`` reads.

    Written on first use (a second or two) and reused afterwards.
    """
    name = (
        f"cifar-100-synthetic-v{_VERSION}-{TRAIN_PER_CLASS}x"
        f"{TEST_PER_CLASS}-seed{seed}.tar.gz"
    )
    path = datasets_folder(cache_dir) / name
    if not path.is_file():
        write_synthetic_archive(path, seed=seed)
    return path
