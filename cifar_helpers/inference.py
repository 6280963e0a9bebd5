"""Your own images and shipping a model: read any photo as the network sees it,
name its top classes, load a trained model from where ``train`` or :func:`export`
left it, and export one for TensorFlow Serving or TF Lite. Introduced in notebook 06;
``python -m cifar_helpers predict`` and ``export`` compose these functions.
"""

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

SIZE = 32  # CIFAR's images are 32 x 32 RGB
# The largest image read_image opens, in pixels (8000 x 8000, a 64-megapixel
# photo): a PNG that declares more could take gigabytes to decode. Pillow's own
# decompression-bomb limit (about 89 megapixels, with only a warning below twice
# that) is looser.
MAX_PIXELS = 64_000_000
CLASSES_FILE = "classes.json"  # the class names, beside a saved model
SAVED_MODEL = "saved_model"  # the SavedModel folder inside an export


class ImageError(ValueError):
    """A file that cannot be read as an image; the message says why."""


class ModelError(ValueError):
    """A path that holds no model this module can load; the message says why."""


def to_cifar(image, size: int = SIZE) -> np.ndarray:
    """A PIL image as CIFAR sees one: uint8 ``size x size x 3`` RGB.

    Transparent pixels (RGBA, grey + alpha, a palette or a colour marked
    transparent) are laid on white, 16-bit grey is scaled to 8 bits (32-bit integer
    grey is clipped to the 16-bit range first), grey images get
    three equal channels, the largest centred square is kept
    (CIFAR's photos are square, with the object in the middle), and the square is
    resized with Lanczos filtering, which averages away detail when it shrinks a
    photo instead of aliasing it.
    """
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)  # phone photos store their rotation
    if image.mode in ("I", "I;16", "I;16L", "I;16B"):  # 16-bit grey: 0..65535
        # Pillow reads 16-bit grey as 32-bit integers ("I"); values outside
        # 0..65535 (a 32-bit TIFF) are clipped, not wrapped around.
        grey = np.clip(np.asarray(image, dtype=np.float64), 0, 65535) / 257
        image = Image.fromarray(grey.round().astype(np.uint8))
    if image.mode == "P" or "transparency" in image.info:  # a transparent colour
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.LANCZOS))


def read_image(path) -> np.ndarray:
    """The image file at ``path`` (PNG, JPEG, or anything else Pillow reads, of any
    size up to :data:`MAX_PIXELS`, grey, RGB or with transparency) as uint8
    ``32 x 32 x 3`` (:func:`to_cifar`).

    Raises :class:`ImageError` naming the file for a missing, unreadable, damaged,
    too large or non-image file, and for anything that is not a regular file (a
    folder, a FIFO, a device), which is never opened.
    """
    import stat

    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file; check the path.") from None
    except OSError as error:
        raise ImageError(f"{path}: cannot be read ({error.strerror}).") from None
    if stat.S_ISDIR(mode):
        raise ImageError(f"{path}: a folder, not an image file.")
    if not stat.S_ISREG(mode):
        raise ImageError(
            f"{path}: not a regular file (a pipe, socket or device); give an image "
            "file."
        )
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it: refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                # A JPEG can decode at 1/2, 1/4 or 1/8 scale: a 12-megapixel photo
                # then costs a fraction of the time and memory, and still has far
                # more than 32 x 32 pixels to average.
                image.draft("RGB", (4 * SIZE, 4 * SIZE))
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise Image.DecompressionBombError(
                        f"{width} x {height} pixels is more than the "
                        f"{MAX_PIXELS:,} this reads."
                    )
                image.load()
                return to_cifar(image)
    except UnidentifiedImageError:
        raise ImageError(
            f"{path}: not an image Pillow can read (no format it knows); give a "
            "PNG or JPEG file (an iPhone's HEIC photo: save it as JPEG first)."
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(
            f"{path}: too large to read safely ({error}). Shrink the image (to a few "
            "megapixels, say) first."
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(
            f"{path}: the image is damaged or truncated ({error}); save it again "
            "or use another copy."
        ) from None


def top_k(probabilities, names, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of one image, as ``(name, probability)``,
    most probable first (ties: the lower class index first)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 1 or len(probabilities) != len(names):
        raise ValueError(
            f"probabilities of shape {probabilities.shape} for {len(names)} names: "
            "give one image's probabilities, one per class name."
        )
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(names[i], float(probabilities[i])) for i in order]


def write_class_names(folder, names):
    """Write ``names`` to ``folder/classes.json``, where :func:`load_classifier`
    finds them."""
    from cifar_helpers import atomic

    atomic.write_text(Path(folder) / CLASSES_FILE, json.dumps(list(names), indent=1))


def read_class_names(path) -> list[str]:
    """The class names saved at ``path`` (a ``classes.json``): a list of distinct
    strings, or :class:`ModelError` naming the file and what is wrong."""
    path = Path(path)
    fix = (
        "It should list the model's class names, each once, as `train` and "
        "`export` write it."
    )
    try:
        names = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ModelError(f"{path}: cannot be read ({error}). {fix}") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ModelError(f"{path}: not a list of names (strings). {fix}")
    if len(set(names)) != len(names):
        raise ModelError(f"{path}: some class names appear twice. {fix}")
    return names


def class_names(folder: Path, classes: int) -> list[str]:
    """The ``classes`` names of the model saved in ``folder``: its ``classes.json``
    (``train``, ``export`` and notebook 06 write one; see :func:`read_class_names`),
    else ``class 0``, ``class 1``... Raises :class:`ModelError` when the file is
    damaged or does not hold exactly ``classes`` names."""
    saved = Path(folder) / CLASSES_FILE
    if not saved.is_file():
        warnings.warn(
            f"{folder}: no classes.json beside the model, so its classes are "
            "numbered; save the names with inference.write_class_names(folder, "
            "names).",
            stacklevel=2,
        )
        return [f"class {i}" for i in range(classes)]
    names = read_class_names(saved)
    if len(names) != classes:
        raise ModelError(
            f"{saved}: {len(names)} class names for a model with {classes} outputs; "
            "the names belong to another model."
        )
    return names


def _keras_file(path: Path) -> Path | None:
    if path.is_dir() and (path / "model.keras").is_file():
        return path / "model.keras"
    return path if path.is_file() and path.suffix == ".keras" else None


def check_keras_file(path, fix: str = ""):
    """Raise :class:`ModelError` naming ``path`` (and ``fix``) unless it is a zip
    archive, as every ``.keras`` file is (Keras would call a cut-short one "File
    not found"). Cheap: it reads the archive's directory, not the model."""
    import zipfile

    if not zipfile.is_zipfile(path):
        raise ModelError(
            f"{path}: not a Keras model file (cut short or replaced). {fix}".rstrip()
        )


def read_keras_model(path, *, compile: bool = True, fix: str | None = None):
    """``keras.saving.load_model(path)``, with the series' custom layers registered;
    a file that cannot be loaded raises :class:`ModelError` naming it, what is wrong
    and ``fix`` (by default: use another copy)."""
    import keras

    import cifar_helpers.models  # noqa: F401  registers the series' custom layers

    path = Path(path)
    fix = fix or "Use another copy, or train the model again."
    check_keras_file(path, fix)
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as error:  # a damaged zip, weights or config: many kinds
        raise ModelError(
            f"{path}: the Keras model cannot be loaded ({type(error).__name__}: "
            f"{error}); the file is damaged or was saved by a different model. {fix}"
        ) from None


def load_model(path):
    """The Keras model at ``path`` (a ``.keras`` file, or a run or export folder
    holding ``model.keras``) without its training state, and its class names:
    ``(model, names)``."""
    path = Path(path)
    if (path / "run.json").is_file():  # a run folder of `train`
        from cifar_helpers import runs

        if runs.finished_results(path) is None:
            raise ModelError(
                f"{path}: a run folder whose run has not finished (no finished.json), "
                "so any model.keras there is not its result. Finish it first: run "
                "the same `train` command again."
            )
    file = _keras_file(path)
    if file is None:
        raise ModelError(
            f"{path}: no Keras model here. Give a .keras file, or the --out folder "
            "of a finished `train` command (it holds model.keras)."
        )
    model = read_keras_model(file, compile=False)
    return model, class_names(file.parent, model.output_shape[-1])


def load_classifier(path):
    """A trained model from ``path`` and its class names: ``(predict, names)``.

    ``path`` is anything :func:`load_model` takes, an :func:`export` folder, or a
    SavedModel folder (loaded with TensorFlow alone, as TensorFlow Serving does).
    ``predict`` maps uint8 ``N x 32 x 32 x 3`` images to float32 ``N x classes``
    probabilities.
    """
    from cifar_helpers import models

    path = Path(path)
    if _keras_file(path) is not None:
        model, names = load_model(path)

        def predict(images):
            return np.asarray(model.predict(models.check_images(images), verbose=0))

        return predict, names
    if path.is_dir() and (path / "saved_model.pb").is_file():
        import tensorflow as tf

        try:
            served = tf.saved_model.load(str(path))
            # export() writes the names into the SavedModel folder too, so that
            # they travel with it.
            signature = served.signatures["serving_default"]
            (output,) = signature.structured_outputs.values()
        except Exception as error:  # a damaged protobuf, variables or signature
            raise ModelError(
                f"{path}: the SavedModel cannot be loaded ({type(error).__name__}: "
                f"{error}); it is damaged, or not one that `export` wrote (it needs "
                "a serving_default signature with one output). Export it again."
            ) from None

        def predict(images):
            return served.serve(tf.constant(models.check_images(images))).numpy()

        return predict, class_names(path, output.shape[-1])
    raise ModelError(
        f"{path}: no model here. Give a .keras file, the --out folder of a "
        "finished `train` command (it holds model.keras), an export folder or a "
        "SavedModel folder."
    )


def float32_copy(model):
    """``model`` rebuilt with every layer computing in float32, with its weights and
    without its training state (optimizer, loss).

    A model trained under mixed precision keeps its weights in float32 already, so
    nothing is lost; its 16-bit computations would tie an exported model to
    accelerators (CPUs and TF Lite's converter lack many 16-bit kernels).
    """
    import keras

    import cifar_helpers.models  # noqa: F401  registers the series' custom layers

    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] != "InputLayer":  # its dtype is the input's: uint8
            layer["config"]["dtype"] = "float32"
    copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def export(model, folder, names) -> Path:
    """Write ``model`` for use elsewhere, in float32 (:func:`float32_copy`), into
    the new folder ``folder``:

    - ``model.keras``: the Keras model, without training state (reload with
      ``keras.saving.load_model`` after ``import cifar_helpers.models``, or with
      :func:`load_model`);
    - ``saved_model/``: a TensorFlow SavedModel whose ``serve`` signature takes uint8
      ``N x 32 x 32 x 3`` images and returns the probabilities; it needs TensorFlow
      only, and feeds TensorFlow Serving and the TF Lite converter;
    - ``classes.json``: the class names, in output order.

    The folder is written under a temporary name and renamed when complete, so an
    interrupted export leaves no half-written folder. An existing ``folder`` is
    refused rather than overwritten.
    """
    import tensorflow as tf

    from cifar_helpers import stack

    stack.require_supported()  # Model.export takes input_signature from Keras 3.8
    folder = Path(folder)
    if folder.exists():
        raise ModelError(
            f"{folder} exists already; choose a new folder (or delete this one) to "
            "export into."
        )
    if len(names) != model.output_shape[-1]:
        raise ModelError(
            f"{len(names)} class names for a model with {model.output_shape[-1]} "
            "outputs: give one name per output."
        )
    model = float32_copy(model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save(partial / "model.keras")
        images = tf.TensorSpec((None, SIZE, SIZE, 3), tf.uint8, name="images")
        model.export(partial / SAVED_MODEL, input_signature=[images], verbose=False)
        write_class_names(partial, names)
        write_class_names(partial / SAVED_MODEL, names)
        os.replace(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return folder
