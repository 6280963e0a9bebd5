"""CIFAR-100 as arrays: download, verify, parse, split, subset.

Introduced in notebook 01. The flow is one direction: an archive (the official one, a
local copy, or a synthetic one written by
:func:`cifar_helpers.synthetic.write_synthetic_archive`) goes through one parser into
a :class:`Cifar100` of uint8 NHWC arrays; splits and subsets are stratified index
picks; :mod:`cifar_helpers.pipeline` turns the arrays into ``tf.data`` pipelines.
Every failure raises a :class:`DatasetError` (a ``ValueError``) that names the file,
says what is wrong and how to fix it.
"""

import dataclasses
import errno
import hashlib
import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from cifar_helpers._moved import moved

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
ARCHIVE_NAME = "cifar-100-python.tar.gz"
FOLDER_NAME = "cifar-100-python"
MEMBERS = ("train", "test", "meta")
NUM_FINE, NUM_COARSE = 100, 20
ROW_BYTES = 32 * 32 * 3
# The largest member read, in bytes. The official ones are at most about 155 MB
# (train: 50,000 rows of 3,072 bytes, and labels); a larger member, such as a
# small gzip file that expands to gigabytes of zeros, is refused before reading.
MAX_MEMBER_BYTES = 512 * 2**20


class DatasetError(ValueError):
    """A data source is missing, unreachable, corrupt, or not CIFAR-100."""


class DownloadError(DatasetError):
    """The official archive could not be downloaded."""


class ChecksumError(DatasetError):
    """A downloaded archive does not have the published MD5."""


class CorruptArchiveError(DatasetError):
    """An archive or one of its members cannot be read (truncated, damaged)."""


class NotCifar100Error(DatasetError):
    """A readable archive or folder lacks CIFAR-100's layout (members, keys, sizes)."""


@dataclasses.dataclass(frozen=True)
class Cifar100:
    """CIFAR-100 (or the synthetic stand-in) as NumPy arrays.

    Images are uint8 ``N x 32 x 32 x 3`` (RGB), fine labels int64 in ``0..99``, coarse
    (superclass) labels int64 in ``0..19``. ``x_val``/``y_val``/``y_val_coarse`` are
    ``None`` until :func:`with_validation_split` carves them out of the training set.
    ``synthetic`` is True for the procedurally drawn stand-in: its accuracies are never
    CIFAR-100 results.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    y_train_coarse: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    y_test_coarse: np.ndarray
    fine_names: tuple[str, ...]
    coarse_names: tuple[str, ...]
    source: str
    synthetic: bool = False
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    y_val_coarse: np.ndarray | None = None

    @property
    def fine_to_coarse(self) -> np.ndarray:
        """int64 array of 100: the superclass of each fine class."""
        mapping = np.zeros(NUM_FINE, dtype=np.int64)
        mapping[self.y_train] = self.y_train_coarse
        return mapping

    def summary(self) -> str:
        """A few lines saying what was loaded, with sizes; flags synthetic data."""
        parts = [f"train {len(self.y_train):,}"]
        if self.y_val is not None:
            parts.append(f"validation {len(self.y_val):,}")
        parts.append(f"test {len(self.y_test):,}")
        kind = "SYNTHETIC stand-in (not CIFAR-100)" if self.synthetic else "CIFAR-100"
        return f"{kind} from {self.source}: " + ", ".join(parts) + " images"


# --------------------------------------------------------------------------- loading


def load_cifar100(
    source: str | os.PathLike | None = None, *, cache_dir=None
) -> Cifar100:
    """Load CIFAR-100 from ``source``.

    ``source`` is ``None`` (the official archive, downloaded once into the Keras cache
    and verified by its MD5), a path to a ``cifar-100-python.tar.gz`` or to its
    extracted folder, or ``"synthetic"`` (a stand-in archive written by
    :func:`cifar_helpers.synthetic.write_synthetic_archive` into the cache and
    parsed by the same code).
    ``cache_dir`` defaults to Keras' cache (``$KERAS_HOME`` or ``~/.keras``).
    """
    if source is None:
        return read_archive(download_cifar100(cache_dir=cache_dir))
    if str(source) == "synthetic":
        from cifar_helpers.synthetic import synthetic_archive_path

        return read_archive(synthetic_archive_path(cache_dir=cache_dir))
    path = Path(source).expanduser()
    if path.is_dir():
        return read_folder(path)
    if path.is_file():
        return read_archive(path)
    raise DatasetError(
        f"{path}: no such file or folder. Pass the path of a {ARCHIVE_NAME} or of its "
        "extracted folder, or 'synthetic'; to download the official archive, leave "
        "--data out (None in Python)."
    )


def cache_root(cache_dir=None) -> Path:
    """Where downloaded and synthetic archives are kept: ``cache_dir``, else Keras'
    cache (``$KERAS_HOME``, else ``~/.keras``)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))


def datasets_folder(cache_dir=None) -> Path:
    """``cache_root(cache_dir)/datasets``, created if needed; a cache that cannot
    be written (``KERAS_HOME`` naming a file, say) raises :class:`DatasetError`."""
    folder = cache_root(cache_dir) / "datasets"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(errno.EACCES, "Permission denied", str(folder))
    except OSError as error:
        where = "cache_dir" if cache_dir is not None else "KERAS_HOME (or ~/.keras)"
        raise DatasetError(
            f"{folder}: cannot be used as the data cache ({error.strerror}). Point "
            f"{where} to a folder you can write to, e.g. "
            "`export KERAS_HOME=$HOME/.keras`."
        ) from None
    return folder


def file_md5(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _set_aside(path: Path) -> Path:
    """Rename a file that failed verification so it is never trusted again."""
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    return aside


def download_cifar100(*, cache_dir=None) -> Path:
    """Return the path of the verified official archive, downloading it if needed.

    A cached file with the wrong MD5 (an interrupted download, say) is renamed to
    ``*.corrupt`` and downloaded again; a fresh download with the wrong MD5 is renamed
    the same way and raises :class:`ChecksumError`.
    """
    import keras

    datasets = datasets_folder(cache_dir)
    target = datasets / ARCHIVE_NAME
    manual = (
        f"Or download {CIFAR100_URL} by hand (MD5 {CIFAR100_MD5}) and place it at "
        f"{target}, or pass its path as `source`."
    )
    if target.is_file():
        if file_md5(target) == CIFAR100_MD5:
            return target
        aside = _set_aside(target)
        print(f"{target} had the wrong MD5 (moved to {aside.name}); downloading again.")
    try:
        # Keras falls back to /tmp/.keras when the cache is not writable: use its path.
        target = Path(
            keras.utils.get_file(
                fname=ARCHIVE_NAME,
                origin=CIFAR100_URL,
                cache_dir=str(cache_root(cache_dir)),
                cache_subdir="datasets",
            )
        )
    except Exception as error:
        raise DownloadError(
            f"{target}: could not download {CIFAR100_URL} ({error}). Check the "
            f"network connection and run again. {manual}"
        ) from error
    actual = file_md5(target)
    if actual != CIFAR100_MD5:
        aside = _set_aside(target)
        raise ChecksumError(
            f"{target}: the download has MD5 {actual}, not the published "
            f"{CIFAR100_MD5}, so it is incomplete or not the official file; it was "
            f"moved to {aside}. Run again to download it afresh. {manual}"
        )
    return target


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and NumPy arrays, and refuses any other object.

    The CIFAR pickles need nothing more, and refusing the rest means a foreign or
    malicious file cannot run code while it is read.
    """

    _allowed = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def unpickle(raw: bytes, where: str) -> dict:
    """The dict a CIFAR pickle (``raw`` bytes, read from ``where``) holds, unpickled
    with :class:`_ArrayUnpickler`, which refuses anything but dicts, lists, bytes and
    NumPy arrays: a plain ``pickle.loads`` calls whatever function the file names.
    Introduced in notebook 01."""
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as error:
        raise CorruptArchiveError(
            f"{where}: not a readable CIFAR pickle ({type(error).__name__}: {error}). "
            "The file is damaged or not CIFAR-100: download it again."
        ) from error
    if not isinstance(obj, dict):
        raise NotCifar100Error(
            f"{where}: holds a {type(obj).__name__}, not the dict of a CIFAR-100 "
            "member. Use the official cifar-100-python archive."
        )
    return obj


def _check_size(size: int, where: str):
    if size > MAX_MEMBER_BYTES:
        raise NotCifar100Error(
            f"{where}: {size:,} bytes, more than any CIFAR-100 member (at most about "
            f"155 MB; this reads up to {MAX_MEMBER_BYTES:,}), so it is not read. Use "
            f"the official {ARCHIVE_NAME} from {CIFAR100_URL}."
        )


def read_archive(path: str | os.PathLike) -> Cifar100:
    """Parse a ``cifar-100-python.tar.gz`` without extracting it to disk; members
    larger than :data:`MAX_MEMBER_BYTES` are refused before they are read."""
    path = Path(path)
    raw = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            by_name = {}
            for info in tar:  # headers one by one: a huge member stops it early
                if info.isfile():
                    name = info.name.removeprefix("./")
                    _check_size(info.size, f"{path} (member {name})")
                    by_name[name] = info
            # tarfile stops quietly at a damaged header; reading on to the end makes
            # gzip check its CRC, so damage is reported as damage, not missing members.
            while tar.fileobj.read(1 << 20):
                pass
            for member in MEMBERS:
                info = by_name.get(f"{FOLDER_NAME}/{member}")
                if info is None:
                    found = ", ".join(sorted(by_name)[:8]) or "no files"
                    raise NotCifar100Error(
                        f"{path}: has no member {FOLDER_NAME}/{member} (found: "
                        f"{found}). This is not the CIFAR-100 python archive; download "
                        f"{ARCHIVE_NAME} from {CIFAR100_URL}."
                    )
                raw[member] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise CorruptArchiveError(
            f"{path}: cannot be read as a tar.gz archive ({type(error).__name__}: "
            f"{error}); it is truncated or damaged. Delete it and download "
            f"{ARCHIVE_NAME} again."
        ) from error
    return _parse_members(raw, str(path))


def read_folder(path: str | os.PathLike) -> Cifar100:
    """Parse an extracted archive: the ``cifar-100-python`` folder or its parent."""
    path = Path(path)
    folder = path / FOLDER_NAME if (path / FOLDER_NAME).is_dir() else path
    raw = {}
    for member in MEMBERS:
        file = folder / member
        if not file.is_file():
            raise NotCifar100Error(
                f"{folder}: has no file '{member}'. Point to the extracted "
                f"'{FOLDER_NAME}' folder (it holds train, test and meta)."
            )
        try:
            _check_size(file.stat().st_size, str(file))
            raw[member] = file.read_bytes()
        except OSError as error:
            raise CorruptArchiveError(
                f"{file}: cannot be read ({error.strerror}). Check its permissions, "
                "or extract the archive again."
            ) from error
    return _parse_members(raw, str(folder))


def _parse_members(raw: dict[str, bytes], where: str) -> Cifar100:
    meta = unpickle(raw["meta"], f"{where} (meta)")
    fine_names = _names(meta, b"fine_label_names", NUM_FINE, f"{where} (meta)")
    coarse_names = _names(meta, b"coarse_label_names", NUM_COARSE, f"{where} (meta)")
    x_train, y_train, c_train = _split_arrays(raw["train"], f"{where} (train)")
    x_test, y_test, c_test = _split_arrays(raw["test"], f"{where} (test)")
    _check_superclasses(y_train, c_train, y_test, c_test, where)
    # The synthetic archive is recognised by its class names, wherever it is read
    # from. (synthetic writes in this module's layout, so it is imported here.)
    from cifar_helpers.synthetic import synthetic_class_names

    synthetic = fine_names == synthetic_class_names()[0]
    return Cifar100(
        x_train=x_train,
        y_train=y_train,
        y_train_coarse=c_train,
        x_test=x_test,
        y_test=y_test,
        y_test_coarse=c_test,
        fine_names=fine_names,
        coarse_names=coarse_names,
        source="synthetic archive " + where if synthetic else where,
        synthetic=synthetic,
    )


def _require(obj: dict, key: bytes, where: str):
    if key not in obj:
        keys = ", ".join(sorted(k.decode(errors="replace") for k in obj)) or "none"
        raise NotCifar100Error(
            f"{where}: has no key '{key.decode()}' (keys: {keys}). This is not a "
            "CIFAR-100 python pickle; use the official cifar-100-python archive."
        )
    return obj[key]


def _names(meta: dict, key: bytes, count: int, where: str) -> tuple[str, ...]:
    names = _require(meta, key, where)
    problem = None
    if not isinstance(names, list | tuple):
        problem = f"is a {type(names).__name__}, not a list of names"
    elif len(names) != count:
        problem = f"lists {len(names)} names, CIFAR-100 has {count}"
    elif not all(isinstance(n, bytes | str) for n in names):
        problem = "holds entries that are not names (text)"
    else:
        try:
            names = tuple(n.decode() if isinstance(n, bytes) else n for n in names)
        except UnicodeDecodeError:
            problem = "holds names that are not UTF-8 text"
        else:
            if len(set(names)) != count:
                problem = "names some class twice"
    if problem:
        raise NotCifar100Error(
            f"{where}: '{key.decode()}' {problem}. Use the official "
            "cifar-100-python archive."
        )
    return names


def _whole_numbers(obj: dict, key: bytes, where: str) -> np.ndarray:
    """The labels under ``key`` as int64, refusing anything but whole numbers
    (float labels would be truncated silently: 0.9 would become class 0)."""
    raw = _require(obj, key, where)
    try:
        values = np.asarray(raw)
    except (TypeError, ValueError):
        values = None
    if (
        values is None
        or values.ndim != 1
        or (values.size and values.dtype.kind not in "iu")
    ):
        kind = "values" if values is None else f"{values.dtype} values"
        raise NotCifar100Error(
            f"{where}: '{key.decode()}' holds {kind}, not a list of whole numbers. "
            "This is not CIFAR-100: use the official archive."
        )
    return values.astype(np.int64)


def _split_arrays(raw: bytes, where: str):
    obj = unpickle(raw, where)
    try:
        data = np.asarray(_require(obj, b"data", where))
    except (TypeError, ValueError) as error:
        raise NotCifar100Error(
            f"{where}: 'data' is not an array ({error}). The file is damaged or "
            "from another dataset: download it again."
        ) from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW_BYTES:
        raise NotCifar100Error(
            f"{where}: 'data' is a {data.dtype} array of shape {data.shape}; CIFAR-100 "
            f"has uint8 rows of {ROW_BYTES} bytes (N x {ROW_BYTES}). The file is "
            "damaged or from another dataset: download it again."
        )
    labels = []
    for key, count in ((b"fine_labels", NUM_FINE), (b"coarse_labels", NUM_COARSE)):
        values = _whole_numbers(obj, key, where)
        if values.shape != (len(data),):
            raise NotCifar100Error(
                f"{where}: '{key.decode()}' has {values.size} entries for {len(data)} "
                "images. The file is damaged: download it again."
            )
        if values.size and (values.min() < 0 or values.max() >= count):
            raise NotCifar100Error(
                f"{where}: '{key.decode()}' holds values outside 0..{count - 1}. "
                "This is not CIFAR-100: use the official archive."
            )
        labels.append(values)
    # Rows are channel-planar: 1024 red bytes, then green, then blue.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels[0], labels[1]


def _check_superclasses(y_train, c_train, y_test, c_test, where):
    fine = np.concatenate([y_train, y_test])
    coarse = np.concatenate([c_train, c_test])
    pairs = np.unique(np.stack([fine, coarse]), axis=1)
    if len(np.unique(pairs[0])) != pairs.shape[1]:
        raise NotCifar100Error(
            f"{where}: some fine class is labelled with two superclasses; in CIFAR-100 "
            "each fine class belongs to exactly one. Download the archive again."
        )


# ------------------------------------------------------------ splits and subsets


# The series' one split seed: every notebook, the command line and the tests take
# their validation split (and smoke subset) with it, so that notebook 06's validation
# images were never in the training images of notebooks 04 and 05.
SPLIT_SEED = 0


class TooFewImagesError(DatasetError):
    """A split or subset asks for more images of a class than the data holds."""


def _stratified_pick(
    labels: np.ndarray, per_class: int, seed: int, where: str = "the data"
) -> np.ndarray:
    """Sorted indices of ``per_class`` items of every class, chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    picks = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if per_class > len(members):
            raise TooFewImagesError(
                f"{where}: per_class={per_class} but class {cls} has only "
                f"{len(members)} images: ask for fewer per class, or use data with "
                "more images of every class (the official archive has 500 training "
                "and 100 test images a class)."
            )
        picks.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(picks))


def _rows(data: Cifar100, part: str, index: np.ndarray, *, into: str | None = None):
    """The images, fine and coarse labels of ``part`` at ``index``, as fields of
    ``into`` (default ``part``): the three arrays of a split always move together."""
    into = into or part
    return {
        f"x_{into}": getattr(data, f"x_{part}")[index],
        f"y_{into}": getattr(data, f"y_{part}")[index],
        f"y_{into}_coarse": getattr(data, f"y_{part}_coarse")[index],
    }


def with_validation_split(
    data: Cifar100, *, val_per_class: int = 20, seed: int = SPLIT_SEED
):
    """Move ``val_per_class`` training images of every class into a validation split.

    Deterministic for a given ``seed`` (the series uses :data:`SPLIT_SEED`, the
    default, everywhere); the default 20 per class gives 48,000 / 2,000 (the original
    series' final code held out nothing and watched the test set). The test set is
    never touched: decisions (early stopping, model choice) use validation only.
    """
    if data.x_val is not None:
        raise ValueError(
            "with_validation_split: this data already has a validation split."
        )
    val = _stratified_pick(
        data.y_train, val_per_class, seed, f"{data.source} (training images)"
    )
    train = np.setdiff1d(np.arange(len(data.y_train)), val)
    return dataclasses.replace(
        data, **_rows(data, "train", train), **_rows(data, "train", val, into="val")
    )


def with_test_as_validation(data: Cifar100) -> Cifar100:
    """The original series' arrangement: no validation split, every training image
    trains, and the test set stands where the validation split would be (what its
    early stopping watched). Used only by the faithful recipe; a run that does this
    has an optimistic test score and says so."""
    if data.x_val is not None:
        raise ValueError(
            "with_test_as_validation: this data already has a validation split."
        )
    return dataclasses.replace(
        data,
        **_rows(data, "test", np.arange(len(data.y_test)), into="val"),
        source=f"{data.source}; no validation split, the test set in its place",
    )


def stratified_subset(
    data: Cifar100,
    *,
    train_per_class: int,
    test_per_class: int,
    seed: int = SPLIT_SEED,
) -> Cifar100:
    """Keep ``train_per_class``/``test_per_class`` images of every class (smoke runs).

    Call it before :func:`with_validation_split`, which then splits the subset.
    """
    if data.x_val is not None:
        raise ValueError(
            "stratified_subset: take the subset before the validation split."
        )
    train = _stratified_pick(
        data.y_train, train_per_class, seed, f"{data.source} (training images)"
    )
    test = _stratified_pick(
        data.y_test, test_per_class, seed, f"{data.source} (test images)"
    )
    return dataclasses.replace(
        data,
        **_rows(data, "train", train),
        **_rows(data, "test", test),
        source=f"{data.source}, {train_per_class}/{test_per_class} per class",
    )


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 NHWC images, in pixel units."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64)
    return pixels.mean(axis=0), pixels.std(axis=0)


# Names that lived here before cifar_helpers 0.2.
__getattr__ = moved(
    __name__,
    {
        "pipeline": ["make_dataset", "images_per_second"],
        "synthetic": [
            "write_synthetic_archive",
            "synthetic_archive_path",
            "synthetic_class_names",
            "draw_synthetic_images",
        ],
    },
    renamed={
        "SYNTHETIC_TRAIN_PER_CLASS": ("synthetic", "TRAIN_PER_CLASS"),
        "SYNTHETIC_TEST_PER_CLASS": ("synthetic", "TEST_PER_CLASS"),
    },
)
