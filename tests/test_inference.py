"""cifar_helpers.inference: any image file as CIFAR sees it, top-k names, loading and
exporting models. The end-to-end round trip on a model trained by `train` lives in
test_cli.py."""

import json

import numpy as np
import pytest
from PIL import Image

from cifar_helpers import inference

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _save(array, path, **options):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path, **options)
    return path


def test_a_32_pixel_rgb_png_reads_back_exactly(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
    image = inference.read_image(_save(pixels, tmp_path / "cifar.png"))
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, pixels)


def test_a_wide_photo_keeps_its_centred_square(tmp_path):
    # 96 x 32: red margins of 32 px left and right, a blue square in the middle.
    pixels = np.zeros((32, 96, 3), np.uint8)
    pixels[:, :] = RED
    pixels[:, 32:64] = BLUE
    image = inference.read_image(_save(pixels, tmp_path / "wide.png"))
    assert image.shape == (32, 32, 3)
    np.testing.assert_array_equal(image, np.broadcast_to(BLUE, (32, 32, 3)))


def test_a_huge_jpeg_is_shrunk_smoothly(tmp_path):
    # 4000 x 3000 pixels of 1-px stripes, alternately black and white: a filter that
    # averages gives even grey; sampling every 94th pixel would give black or white.
    pixels = np.zeros((3000, 4000, 3), np.uint8)
    pixels[:, ::2] = 255
    image = inference.read_image(_save(pixels, tmp_path / "huge.jpg", quality=95))
    assert image.shape == (32, 32, 3)
    assert np.all(np.abs(image.astype(int) - 128) < 12)


def test_a_tiny_image_is_enlarged(tmp_path):
    image = inference.read_image(_save([[RED]], tmp_path / "one_pixel.png"))
    np.testing.assert_array_equal(image, np.broadcast_to(RED, (32, 32, 3)))


def test_a_grey_image_gets_three_equal_channels(tmp_path):
    grey = np.random.default_rng(1).integers(0, 256, (32, 32), np.uint8)
    image = inference.read_image(_save(grey, tmp_path / "grey.png"))
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], grey)


def test_transparency_is_laid_on_white(tmp_path):
    # Left half: opaque red; right half: fully transparent black.
    pixels = np.zeros((32, 32, 4), np.uint8)
    pixels[:, :16] = (*RED, 255)
    image = inference.read_image(_save(pixels, tmp_path / "rgba.png"))
    np.testing.assert_array_equal(image[:, :16], np.broadcast_to(RED, (32, 16, 3)))
    np.testing.assert_array_equal(image[:, 16:], np.full((32, 16, 3), 255))


def test_grey_with_alpha_and_palettes_with_transparency_are_laid_on_white(tmp_path):
    grey_alpha = np.zeros((32, 32, 2), np.uint8)  # black, alpha 0 then 255
    grey_alpha[:, 16:, 1] = 255
    la = inference.read_image(_save(grey_alpha, tmp_path / "la.png"))
    assert np.all(la[:, :16] == 255) and np.all(la[:, 16:] == 0)
    palette = Image.new("P", (32, 32), 1)
    palette.putpalette([0, 0, 0, *BLUE] + [0] * 762)
    palette.info["transparency"] = 1  # index 1 (blue) is transparent
    palette.save(tmp_path / "palette.png", transparency=1)
    assert np.all(inference.read_image(tmp_path / "palette.png") == 255)


def test_a_phone_photo_is_turned_upright_by_its_exif_orientation(tmp_path):
    # Stored 64 wide x 32 tall, red above blue; EXIF orientation 6 says "rotate 90
    # degrees clockwise to display": upright it is 32 x 64 with blue left, red right.
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:16], pixels[16:] = RED, BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(pixels, tmp_path / "phone.png", exif=exif)
    image = inference.read_image(path).astype(int)
    assert np.all(image[:, :14, 2] > 200) and np.all(image[:, :14, 0] < 50)
    assert np.all(image[:, 18:, 0] > 200) and np.all(image[:, 18:, 2] < 50)


def test_sixteen_bit_grey_is_scaled_to_eight_bits(tmp_path):
    grey = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64  # 0 .. 65472
    Image.fromarray(grey).save(tmp_path / "deep.png")
    image = inference.read_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(image[..., 0], np.round(grey / 257).astype(np.uint8))


def test_a_colour_marked_transparent_is_laid_on_white(tmp_path):
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:, :16] = RED  # the right half stays black, the colour marked transparent
    _save(pixels, tmp_path / "keyed.png", transparency=(0, 0, 0))
    image = inference.read_image(tmp_path / "keyed.png")
    np.testing.assert_array_equal(image[:, :16], np.broadcast_to(RED, (32, 16, 3)))
    np.testing.assert_array_equal(image[:, 16:], np.full((32, 16, 3), 255))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("notes.txt", b"a shopping list", "not an image"),
        ("empty.png", b"", "not an image"),
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image|damaged"),
    ],
)
def test_a_file_that_is_no_image_is_named_in_a_clear_error(
    tmp_path, name, content, message
):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(inference.ImageError, match=f"{name}: ({message})"):
        inference.read_image(path)


def test_a_truncated_jpeg_is_called_damaged(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 256, (200, 200, 3), np.uint8)
    whole = _save(pixels, tmp_path / "whole.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(inference.ImageError, match="cut.jpg: the image is damaged"):
        inference.read_image(cut)


def test_a_missing_file_and_a_folder_are_named(tmp_path):
    with pytest.raises(inference.ImageError, match="nowhere.png: no such file"):
        inference.read_image(tmp_path / "nowhere.png")
    with pytest.raises(inference.ImageError, match="a folder, not an image"):
        inference.read_image(tmp_path)


def test_a_decompression_bomb_is_refused_with_the_reason(tmp_path, monkeypatch):
    path = _save(np.zeros((100, 100, 3)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the real limit: 89 M
    with pytest.raises(inference.ImageError, match="bomb.png: .*Shrink the image"):
        inference.read_image(path)


def test_top_k_names_the_most_probable_classes_first():
    top = inference.top_k([0.1, 0.5, 0.1, 0.3], ["a", "b", "c", "d"], k=3)
    assert top == [("b", 0.5), ("d", 0.3), ("a", 0.1)]


def test_top_k_wants_one_probability_per_name():
    with pytest.raises(ValueError, match="one per class name"):
        inference.top_k([[0.5, 0.5]], ["a", "b"])


def test_class_names_come_from_classes_json_or_are_numbered(tmp_path):
    with pytest.warns(UserWarning, match="no classes.json beside the model"):
        numbered = inference.class_names(tmp_path, 3)
    assert numbered == ["class 0", "class 1", "class 2"]
    inference.write_class_names(tmp_path, ["cat", "dog"])
    assert inference.class_names(tmp_path, 2) == ["cat", "dog"]
    with pytest.raises(inference.ModelError, match="2 class names for a model with 5"):
        inference.class_names(tmp_path, 5)


def test_a_path_without_a_model_is_refused_with_what_to_give(tmp_path):
    with pytest.raises(inference.ModelError, match="no model here"):
        inference.load_classifier(tmp_path)
    with pytest.raises(inference.ModelError, match="no Keras model here"):
        inference.load_model(tmp_path / "model.h5")


@pytest.fixture(scope="module")
def tiny_model():
    from cifar_helpers import models

    return models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8, classes=3)


def test_a_float32_copy_computes_what_the_model_does_without_training_state():
    from cifar_helpers import models, recipes

    model = recipes.compile_model(models.baseline_cnn(filters=(4, 4, 4, 4), hidden=8))
    images = np.random.default_rng(3).integers(0, 256, (4, 32, 32, 3), np.uint8)
    copy = inference.float32_copy(model)
    assert model.compiled and not copy.compiled
    np.testing.assert_array_equal(copy(images), model(images))


def test_a_mixed_precision_model_exports_in_float32_for_tf_lite(tmp_path):
    import keras
    import tensorflow as tf

    from cifar_helpers import models

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = models.resnet9(widths=(4, 4, 8, 8), classes=3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("prep_conv").compute_dtype == "bfloat16"
    folder = inference.export(model, tmp_path / "export", ["a", "b", "c"])
    exported, _ = inference.load_model(folder)
    assert {layer.compute_dtype for layer in exported.layers[1:]} == {"float32"}
    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder / "saved_model"))
    assert len(converter.convert()) > 0  # bfloat16 ops would fail to convert


def test_export_refuses_an_existing_folder_and_leaves_it_alone(tiny_model, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(inference.ModelError, match="exists already"):
        inference.export(tiny_model, tmp_path, ["a", "b", "c"])
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_export_wants_one_name_per_output_and_leaves_nothing(tiny_model, tmp_path):
    with pytest.raises(inference.ModelError, match="2 class names for a model with 3"):
        inference.export(tiny_model, tmp_path / "export", ["a", "b"])
    assert list(tmp_path.iterdir()) == []


def test_an_export_holds_the_model_the_saved_model_and_the_names(tiny_model, tmp_path):
    folder = inference.export(tiny_model, tmp_path / "export", ["a", "b", "c"])
    assert sorted(p.name for p in folder.iterdir()) == [
        "classes.json",
        "model.keras",
        "saved_model",
    ]
    assert json.loads((folder / "saved_model" / "classes.json").read_text()) == [
        "a",
        "b",
        "c",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temporary left


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((32, 32, 3), np.uint8), r"one image; give a batch, images\[None\]"),
        (np.zeros((2, 28, 28, 3), np.uint8), "N x 32 x 32 x 3 RGB images"),
        (np.zeros((2, 32, 32, 1), np.uint8), "N x 32 x 32 x 3 RGB images"),
        (np.full((2, 32, 32, 3), 0.5), r"values in \[0, 1\]: multiply by 255"),
        (np.zeros((2, 32, 32, 3), np.int64), "dtype int64: the models take uint8"),
    ],
)
def test_images_of_the_wrong_shape_or_dtype_are_refused_with_the_fix(
    tiny_model, images, message
):
    from cifar_helpers import evaluation

    with pytest.raises(ValueError, match=message):
        evaluation.predict(tiny_model, images)


# ------------------------------------------------ hostile inputs (issue 15)


def _png_declaring(path, width, height):
    """A tiny PNG file whose header declares ``width x height`` grey pixels (the
    pixel data is never decoded: the size is refused first)."""
    import struct
    import zlib

    def chunk(kind, payload):
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(64)))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize(
    "side, why",
    [(12000, "exceeds limit"), (9000, "is more than the 64,000,000")],
    ids=["Pillow's warning band", "this module's stricter limit"],
)
def test_an_image_declaring_too_many_pixels_is_refused_unread(tmp_path, side, why):
    path = _png_declaring(tmp_path / "huge.png", side, side)
    with pytest.raises(inference.ImageError, match=f"huge.png: too large.*{why}"):
        inference.read_image(path)


def test_a_fifo_is_refused_without_opening_it(tmp_path):
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it to read would wait for a writer forever
    with pytest.raises(inference.ImageError, match="pipe.png: not a regular file"):
        inference.read_image(fifo)


def test_thirty_two_bit_integer_grey_is_clipped_not_wrapped(tmp_path):
    values = np.array([[200_000, -5], [65_535, 0]], dtype=np.int32)
    path = tmp_path / "deep.tif"
    Image.fromarray(values, mode="I").save(path)
    pixels = inference.to_cifar(Image.open(path), size=2)
    assert pixels[..., 0].tolist() == [[255, 0], [255, 0]]  # white, black: clipped


@pytest.mark.parametrize(
    "content, message",
    [
        ('["cat", "do', "classes.json: cannot be read"),
        ("", "classes.json: cannot be read"),
        (json.dumps("x" * 3), "classes.json: not a list of names"),
        (json.dumps([0, 1, 2]), "classes.json: not a list of names"),
        (json.dumps(["cat", "cat", "dog"]), "some class names appear twice"),
    ],
    ids=["truncated", "empty", "one string", "integers", "repeated"],
)
def test_a_damaged_classes_json_is_named(tmp_path, content, message):
    (tmp_path / "classes.json").write_text(content)
    with pytest.raises(inference.ModelError, match=message):
        inference.class_names(tmp_path, 3)


def test_a_damaged_or_foreign_keras_file_is_named(tiny_model, tmp_path):
    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    with pytest.raises(inference.ModelError, match="notes.keras: not a Keras model"):
        inference.load_model(text)
    whole = tmp_path / "whole.keras"
    tiny_model.save(whole)
    cut = tmp_path / "cut.keras"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(inference.ModelError, match="cut.keras: not a Keras model"):
        inference.load_model(cut)
    (tmp_path / "empty.keras").write_bytes(b"")
    with pytest.raises(inference.ModelError, match="empty.keras: not a Keras model"):
        inference.load_classifier(tmp_path / "empty.keras")


def test_a_garbage_saved_model_is_named(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(inference.ModelError, match="the SavedModel cannot be loaded"):
        inference.load_classifier(tmp_path)
