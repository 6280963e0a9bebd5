"""Every metric of cifar_helpers.evaluation against small hand-computed examples."""

import numpy as np
import pytest

from cifar_helpers import evaluation

# Four images, four classes; superclasses: {0, 1} -> 0 and {2, 3} -> 1.
PROBABILITIES = np.array(
    [
        [0.7, 0.2, 0.1, 0.0],  # label 0: right, confidence 0.7
        [0.1, 0.3, 0.6, 0.0],  # label 1: wrong (2, other superclass); 1 is second
        [0.0, 0.1, 0.35, 0.55],  # label 2: wrong (3, same superclass); 2 is second
        [0.05, 0.05, 0.1, 0.8],  # label 3: right, confidence 0.8
    ]
)
LABELS = np.array([0, 1, 2, 3])
PREDICTED = PROBABILITIES.argmax(axis=1)  # [0, 2, 3, 3]
FINE_TO_COARSE = np.array([0, 0, 1, 1])


def test_top_k_accuracy_counts_the_label_among_the_k_most_probable():
    assert evaluation.top_k_accuracy(PROBABILITIES, LABELS, 1) == 0.5
    assert evaluation.top_k_accuracy(PROBABILITIES, LABELS, 2) == 1.0


def test_top_k_accuracy_names_the_expected_shapes():
    with pytest.raises(ValueError, match="N x classes"):
        evaluation.top_k_accuracy(PROBABILITIES, LABELS[:3])


def test_per_class_accuracy_with_an_empty_class():
    accuracy = evaluation.per_class_accuracy([0, 0, 1, 2], [0, 1, 1, 2], classes=4)
    assert accuracy[:3].tolist() == [1.0, 0.5, 1.0] and np.isnan(accuracy[3])


def test_superclass_accuracy_forgives_a_neighbour_in_the_same_superclass():
    # Image 2 (label 2, predicted 3) is right at the superclass level; image 1 is not.
    assert evaluation.superclass_accuracy(PREDICTED, LABELS, FINE_TO_COARSE) == 0.75


def test_share_of_mistakes_that_stay_in_the_superclass():
    share = evaluation.mistakes_in_right_superclass(PREDICTED, LABELS, FINE_TO_COARSE)
    assert share == 0.5  # of the two mistakes, one stays within its superclass
    no_mistakes = evaluation.mistakes_in_right_superclass(
        LABELS, LABELS, FINE_TO_COARSE
    )
    assert np.isnan(no_mistakes)


def test_confusion_matrix_rows_are_true_classes():
    matrix = evaluation.confusion_matrix(PREDICTED, LABELS, classes=4)
    expected = np.zeros((4, 4), int)
    expected[0, 0] = expected[1, 2] = expected[2, 3] = expected[3, 3] = 1
    np.testing.assert_array_equal(matrix, expected)


def test_superclass_confusion_maps_both_sides_to_superclasses():
    matrix = evaluation.superclass_confusion(PREDICTED, LABELS, FINE_TO_COARSE)
    np.testing.assert_array_equal(matrix, [[1, 1], [0, 2]])


def test_most_confused_pairs_skip_the_diagonal_and_sort_by_count():
    matrix = np.array([[9, 3, 0], [1, 8, 5], [3, 0, 7]])
    pairs = evaluation.most_confused_pairs(matrix, count=3)
    assert pairs == [(1, 2, 5), (0, 1, 3), (2, 0, 3)]
    assert evaluation.most_confused_pairs(np.eye(3, dtype=int)) == []


def test_reliability_bins_and_expected_calibration_error():
    result = evaluation.reliability(PROBABILITIES, LABELS, bins=2)
    # Bin (0, 0.5]: nothing. Bin (0.5, 1]: confidences 0.7, 0.6, 0.55, 0.8, two right.
    assert result["counts"].tolist() == [0, 4]
    assert np.isnan(result["confidence"][0]) and np.isnan(result["accuracy"][0])
    assert result["confidence"][1] == pytest.approx(0.6625)
    assert result["accuracy"][1] == pytest.approx(0.5)
    assert result["ece"] == pytest.approx(0.1625)


def test_a_calibrated_model_has_no_calibration_error():
    # Confidence 0.5 in every image, right in half of them.
    probabilities = np.array([[0.5, 0.3, 0.2]] * 4)
    result = evaluation.reliability(probabilities, np.array([0, 0, 1, 2]), bins=10)
    assert result["ece"] == pytest.approx(0.0)
    assert result["counts"][4] == 4  # 0.5 lies in the bin (0.4, 0.5]


def _asymmetric_model():
    import keras

    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(5, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def test_flip_predict_averages_each_image_and_its_mirror():
    keras_model = _asymmetric_model()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    single = evaluation.predict(keras_model, images)
    mirrored = evaluation.predict(keras_model, images[:, :, ::-1].copy())
    assert not np.allclose(single, mirrored)  # the model sees the flip
    np.testing.assert_allclose(
        evaluation.flip_predict(keras_model, images), (single + mirrored) / 2, rtol=1e-6
    )
    assert single.shape == (6, 5) and single.dtype == np.float32


def _one_filter_model():
    """8 x 8 grey images -> a 2 x 2 mean (a 4 x 4 feature map, "features") -> global
    average -> logits (+1, -1) x that mean -> softmax. Class 0's evidence is the
    image's brightness, class 1's its darkness."""
    import keras

    images = keras.Input((8, 8, 1))
    features = keras.layers.Conv2D(1, 2, strides=2, use_bias=False, name="features")
    x = keras.layers.GlobalAveragePooling2D()(features(images))
    logits = keras.layers.Dense(2, use_bias=False, name="logits")
    outputs = keras.layers.Activation("softmax")(logits(x))
    model = keras.Model(images, outputs)
    features.set_weights([np.full((2, 2, 1, 1), 0.25)])
    logits.set_weights([np.array([[1.0, -1.0]])])
    return model


def test_grad_cam_lights_up_where_the_evidence_for_the_class_is():
    model = _one_filter_model()
    image = np.zeros((1, 8, 8, 1), np.float32)
    image[0, 4:, :4] = 1.0  # a bright bottom-left quarter
    # Class 0: each channel's weight is +1/16, so the map is the feature map itself
    # (1 in the bright 2 x 2 feature cells, 0 elsewhere), resized bilinearly to 8 x 8.
    heat = evaluation.grad_cam(model, image, classes=[0])[0]
    assert heat.shape == (8, 8) and heat.max() == 1.0
    assert np.all(heat[5:, :3] == 1.0) and np.all(heat[:3, :] == 0.0)
    assert np.all(heat[:, 5:] == 0.0)
    # Class 1's weight is -1/16: nothing in the image speaks for it.
    assert np.all(evaluation.grad_cam(model, image, classes=[1]) == 0.0)


def test_grad_cam_explains_the_predicted_class_by_default():
    model = _one_filter_model()
    image = np.zeros((1, 8, 8, 1), np.float32)
    image[0, 4:, :4] = 1.0  # predicted: class 0 (logits +1/4, -1/4)
    np.testing.assert_array_equal(
        evaluation.grad_cam(model, image),
        evaluation.grad_cam(model, image, classes=[0]),
    )


def test_grad_cam_on_the_modern_network_uses_its_last_feature_map():
    from cifar_helpers import models

    model = models.resnet9(widths=(8, 8, 16, 16))
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), np.uint8)
    assert evaluation._last_feature_map(model) == "layer3_dropblock"
    heat = evaluation.grad_cam(model, images)
    assert heat.shape == (3, 32, 32) and heat.dtype == np.float32
    assert np.all((heat >= 0) & (heat <= 1))
    # Each map is divided by its maximum, unless nothing speaks for the class.
    assert np.all(np.isin(heat.max(axis=(1, 2)), [0.0, 1.0]))
