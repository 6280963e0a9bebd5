"""tf.data pipelines: batching, shuffling, augmentation per batch, determinism."""

import keras
import numpy as np
import pytest

from cifar_helpers import augment, data, pipeline, synthetic


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_training_batches_are_whole_uint8_and_shuffled(cifar):
    ds = pipeline.make_dataset(
        cifar.x_train, cifar.y_train, batch_size=256, training=True
    )
    batches = _batches(ds)
    assert len(batches) == 1200 // 256  # the last partial batch is dropped
    x, y = batches[0]
    assert x.shape == (256, 32, 32, 3) and x.dtype == np.uint8
    assert not np.array_equal(y, cifar.y_train[:256])


def test_the_shuffle_is_seeded_and_changes_every_epoch(cifar):
    def first_labels(seed):
        ds = pipeline.make_dataset(
            cifar.x_train, cifar.y_train, batch_size=64, training=True, seed=seed
        )
        return [_batches(ds)[0][1] for _ in range(2)]

    epoch1, epoch2 = first_labels(seed=5)
    again1, _ = first_labels(seed=5)
    np.testing.assert_array_equal(epoch1, again1)
    assert not np.array_equal(epoch1, epoch2)


def test_evaluation_keeps_order_and_the_last_partial_batch(cifar):
    ds = pipeline.make_dataset(
        cifar.x_test, cifar.y_test, batch_size=256, training=False
    )
    labels = np.concatenate([y for _, y in _batches(ds)])
    np.testing.assert_array_equal(labels, cifar.y_test)


def test_augmentation_is_mapped_over_batches_reproducibly(cifar):
    def first_batch():
        ds = pipeline.make_dataset(
            cifar.x_train,
            cifar.y_train,
            batch_size=64,
            training=True,
            seed=1,
            augment=augment.augment_batch,
        )
        return _batches(ds)[0]

    (x1, y1), (x2, y2) = first_batch(), first_batch()
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert x1.dtype == np.uint8
    # The images are the shuffled originals, augmented: same labels, other pixels.
    plain = pipeline.make_dataset(
        cifar.x_train, cifar.y_train, batch_size=64, training=True, seed=1
    )
    x0, y0 = _batches(plain)[0]
    np.testing.assert_array_equal(y0, y1)
    assert not np.array_equal(x0, x1)


def test_augmentation_changes_from_epoch_to_epoch(cifar):
    one_per_class = np.unique(cifar.y_train, return_index=True)[1]
    x, y = cifar.x_train[one_per_class], cifar.y_train[one_per_class]

    def two_epochs(augment_fn):
        ds = pipeline.make_dataset(
            x, y, batch_size=100, training=True, augment=augment_fn
        )
        # Labels are unique, so sorting by label lines the two epochs up image by image.
        return [bx[np.argsort(by)] for bx, by in (_batches(ds)[0], _batches(ds)[0])]

    plain1, plain2 = two_epochs(None)
    np.testing.assert_array_equal(plain1, plain2)
    augmented1, augmented2 = two_epochs(augment.augment_batch)
    assert not np.array_equal(augmented1, augmented2)


def test_evaluation_data_is_never_augmented(cifar):
    with pytest.raises(ValueError, match="augment only training data"):
        pipeline.make_dataset(
            cifar.x_test,
            cifar.y_test,
            batch_size=8,
            training=False,
            augment=augment.augment_batch,
        )


def test_images_per_second_counts_real_batches(cifar):
    ds = pipeline.make_dataset(
        cifar.x_test, cifar.y_test, batch_size=100, training=False
    )
    assert pipeline.images_per_second(ds, batches=5, warmup=1) > 0


def test_a_small_cnn_learns_the_synthetic_classes_well_above_chance(tmp_path):
    """The synthetic archive teaches: a tiny CNN beats 1 % chance by far in 4 epochs."""
    archive = synthetic.write_synthetic_archive(
        tmp_path / "s.tar.gz", train_per_class=40, test_per_class=10, seed=0
    )
    cifar = data.read_archive(archive)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3), dtype="uint8"),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(100),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    train = pipeline.make_dataset(
        cifar.x_train, cifar.y_train, batch_size=64, training=True
    )
    test = pipeline.make_dataset(
        cifar.x_test, cifar.y_test, batch_size=250, training=False
    )
    model.fit(train, epochs=4, verbose=0)
    _, accuracy = model.evaluate(test, verbose=0)
    print(f"synthetic test accuracy after 4 epochs: {accuracy:.3f}")
    assert accuracy > 0.2, accuracy


def test_eval_batch_size_splits_the_set_evenly():
    assert pipeline.eval_batch_size(10_000, 512) == 500
    assert pipeline.eval_batch_size(1_000, 512) == 500
    assert pipeline.eval_batch_size(300, 512) == 300
    assert pipeline.eval_batch_size(1_009, 512) == 512  # a prime: no even split
    assert pipeline.eval_batch_size(10_000, 4096, replicas=8) == 2000


def test_split_datasets_give_full_training_batches_and_even_validation_ones(cifar):
    split = data.with_validation_split(cifar, val_per_class=2, seed=0)  # 200 images
    train, val = pipeline.split_datasets(split, batch_size=64, replicas=2)
    assert all(images.shape[0] == 64 for images, _ in train)
    assert len(train) == len(split.y_train) // 64
    # 50: the largest size up to 64 that divides 200 and splits over 2 replicas.
    assert [images.shape[0] for images, _ in val] == [50] * 4
