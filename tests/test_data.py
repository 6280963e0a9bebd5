"""The data layer: archive layout, parsing, splits, and every error path."""

import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest

from cifar_helpers import data, synthetic


def _members(archive):
    with tarfile.open(archive, "r:gz") as tar:
        return {
            m.name: tar.extractfile(m).read() if m.isfile() else None
            for m in tar.getmembers()
        }


def _write_tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def _with_member(tmp_path, archive, member, payload: bytes):
    """A copy of ``archive`` whose ``member`` holds ``payload``."""
    members = {k: v for k, v in _members(archive).items() if v is not None}
    members[f"cifar-100-python/{member}"] = payload
    return _write_tar(tmp_path / "edited.tar.gz", members)


def _edited_pickle(archive, member, edit):
    obj = pickle.loads(
        _members(archive)[f"cifar-100-python/{member}"], encoding="bytes"
    )
    edit(obj)
    return pickle.dumps(obj, protocol=2)


# ----------------------------------------------------------------- layout, parsing


def test_synthetic_archive_has_the_official_member_layout(synthetic_archive):
    members = _members(synthetic_archive)
    assert set(members) == {
        "cifar-100-python",
        "cifar-100-python/train",
        "cifar-100-python/test",
        "cifar-100-python/meta",
    }
    assert members["cifar-100-python"] is None  # a folder entry, as in the official tar


def test_synthetic_pickles_are_protocol_2_with_byte_string_keys(synthetic_archive):
    members = _members(synthetic_archive)
    train_raw = members["cifar-100-python/train"]
    assert train_raw[:2] == b"\x80\x02"  # protocol 2, readable by Python 2
    train = pickle.loads(train_raw, encoding="bytes")
    assert set(train) == {
        b"data",
        b"fine_labels",
        b"coarse_labels",
        b"filenames",
        b"batch_label",
    }
    assert train[b"data"].dtype == np.uint8 and train[b"data"].shape == (1200, 3072)
    assert all(isinstance(name, bytes) for name in train[b"filenames"])
    meta = pickle.loads(members["cifar-100-python/meta"], encoding="bytes")
    assert set(meta) == {b"fine_label_names", b"coarse_label_names"}
    assert len(meta[b"fine_label_names"]) == 100
    assert len(meta[b"coarse_label_names"]) == 20


def test_parsed_images_are_the_channel_planar_rows_of_the_archive(
    synthetic_archive, cifar
):
    raw = pickle.loads(
        _members(synthetic_archive)["cifar-100-python/train"], encoding="bytes"
    )
    k, row, col = 17, 5, 30
    for channel in range(3):
        expected = raw[b"data"][k, channel * 1024 + row * 32 + col]
        assert cifar.x_train[k, row, col, channel] == expected
    assert cifar.x_train.shape == (1200, 32, 32, 3) and cifar.x_train.dtype == np.uint8
    np.testing.assert_array_equal(cifar.y_train, raw[b"fine_labels"])
    np.testing.assert_array_equal(cifar.y_train_coarse, raw[b"coarse_labels"])


def test_synthetic_archive_round_trips_exactly(tmp_path, cifar):
    fine, coarse, fine_to_coarse = synthetic.synthetic_class_names()
    assert cifar.fine_names == fine and cifar.coarse_names == coarse
    np.testing.assert_array_equal(cifar.fine_to_coarse, fine_to_coarse)
    np.testing.assert_array_equal(np.bincount(cifar.y_train), np.full(100, 12))
    np.testing.assert_array_equal(np.bincount(cifar.y_test), np.full(100, 4))
    assert cifar.synthetic and "SYNTHETIC" in cifar.summary()
    # The same seed writes the same archive contents.
    again = data.read_archive(
        synthetic.write_synthetic_archive(
            tmp_path / "again.tar.gz", train_per_class=12, test_per_class=4, seed=3
        )
    )
    np.testing.assert_array_equal(again.x_train, cifar.x_train)
    np.testing.assert_array_equal(again.x_test, cifar.x_test)


def test_extracted_folder_and_its_parent_give_the_same_arrays(
    tmp_path, synthetic_archive, cifar
):
    with tarfile.open(synthetic_archive) as tar:
        tar.extractall(tmp_path, filter="data")
    for source in (tmp_path, tmp_path / "cifar-100-python"):
        loaded = data.load_cifar100(source)
        for field in ("x_train", "y_train", "y_train_coarse", "x_test", "y_test"):
            np.testing.assert_array_equal(getattr(loaded, field), getattr(cifar, field))
        assert loaded.fine_names == cifar.fine_names


def test_load_cifar100_synthetic_writes_the_archive_once_into_the_cache(tmp_path):
    first = data.load_cifar100("synthetic", cache_dir=tmp_path)
    (cached,) = (tmp_path / "datasets").glob("cifar-100-synthetic-*.tar.gz")
    stamp = cached.stat().st_mtime_ns
    second = data.load_cifar100("synthetic", cache_dir=tmp_path)
    assert cached.stat().st_mtime_ns == stamp
    assert first.synthetic and len(first.y_train) == 100 * synthetic.TRAIN_PER_CLASS
    np.testing.assert_array_equal(first.x_test, second.x_test)
    # The default validation split is the original series' 20 images per class.
    split = data.with_validation_split(first)
    np.testing.assert_array_equal(np.bincount(split.y_val), np.full(100, 20))


# ------------------------------------------------------------- splits and subsets


def test_validation_split_is_stratified_disjoint_and_complete(cifar):
    split = data.with_validation_split(cifar, val_per_class=3, seed=1)
    np.testing.assert_array_equal(np.bincount(split.y_val), np.full(100, 3))
    np.testing.assert_array_equal(np.bincount(split.y_train), np.full(100, 9))
    together = np.concatenate([split.x_train, split.x_val]).reshape(1200, -1)
    assert len(np.unique(together, axis=0)) == len(
        np.unique(cifar.x_train.reshape(1200, -1), axis=0)
    )
    assert split.x_test is cifar.x_test  # the test set is never touched


def test_validation_split_is_deterministic_and_depends_on_the_seed(cifar):
    a = data.with_validation_split(cifar, val_per_class=3, seed=1)
    b = data.with_validation_split(cifar, val_per_class=3, seed=1)
    c = data.with_validation_split(cifar, val_per_class=3, seed=2)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.x_val, c.x_val)


def test_stratified_subset_keeps_the_same_count_of_every_class(cifar):
    small = data.stratified_subset(cifar, train_per_class=5, test_per_class=2, seed=0)
    np.testing.assert_array_equal(np.bincount(small.y_train), np.full(100, 5))
    np.testing.assert_array_equal(np.bincount(small.y_test), np.full(100, 2))
    np.testing.assert_array_equal(small.fine_to_coarse, cifar.fine_to_coarse)


def test_asking_for_more_per_class_than_exist_says_so(cifar):
    with pytest.raises(ValueError, match="class 0 has only 12 images"):
        data.stratified_subset(cifar, train_per_class=13, test_per_class=1)


def test_channel_stats_are_per_channel_mean_and_std():
    images = np.zeros((2, 2, 2, 3), np.uint8)
    images[..., 0] = 255
    images[0, ..., 2] = 100
    mean, std = data.channel_stats(images)
    np.testing.assert_allclose(mean, [255, 0, 50])
    np.testing.assert_allclose(std, [0, 0, 50])


# --------------------------------------------------------------------- error paths


def test_a_missing_path_names_it_and_the_accepted_sources(tmp_path):
    with pytest.raises(data.DatasetError, match="no such file or folder.*synthetic"):
        data.load_cifar100(tmp_path / "nowhere.tar.gz")


def test_a_truncated_archive_is_a_corrupt_archive_error(tmp_path, synthetic_archive):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(synthetic_archive.read_bytes()[:50_000])
    with pytest.raises(
        data.CorruptArchiveError, match=r"cut\.tar\.gz.*truncated or damaged"
    ):
        data.load_cifar100(cut)


def test_damaged_compressed_bytes_are_a_corrupt_archive_error(
    tmp_path, synthetic_archive
):
    raw = bytearray(synthetic_archive.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(bytes(raw))
    with pytest.raises(data.CorruptArchiveError, match="download"):
        data.load_cifar100(damaged)


def test_a_file_that_is_no_archive_is_a_corrupt_archive_error(tmp_path):
    text = tmp_path / "notes.tar.gz"
    text.write_text("not an archive at all")
    with pytest.raises(data.CorruptArchiveError, match="notes.tar.gz"):
        data.load_cifar100(text)


def test_a_foreign_tar_lists_what_it_holds(tmp_path):
    foreign = _write_tar(
        tmp_path / "other.tar.gz", {"cifar-10-batches-py/data_batch_1": b"x"}
    )
    with pytest.raises(
        data.NotCifar100Error, match="no member cifar-100-python/train.*data_batch_1"
    ):
        data.load_cifar100(foreign)


def test_a_missing_member_is_named(tmp_path, synthetic_archive):
    members = {k: v for k, v in _members(synthetic_archive).items() if v is not None}
    del members["cifar-100-python/meta"]
    partial = _write_tar(tmp_path / "partial.tar.gz", members)
    with pytest.raises(data.NotCifar100Error, match="cifar-100-python/meta"):
        data.load_cifar100(partial)


def test_a_member_that_is_not_a_pickle_is_corrupt(tmp_path, synthetic_archive):
    bad = _with_member(tmp_path, synthetic_archive, "test", b"garbage bytes")
    with pytest.raises(
        data.CorruptArchiveError, match=r"\(test\): not a readable CIFAR pickle"
    ):
        data.load_cifar100(bad)


class _Exploit:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pickle ran code')",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, synthetic_archive):
    bad = _with_member(
        tmp_path, synthetic_archive, "meta", pickle.dumps({b"x": _Exploit()})
    )
    with pytest.raises(
        data.CorruptArchiveError, match="refusing to load builtins.exec"
    ):
        data.load_cifar100(bad)


def test_a_pickle_of_the_wrong_type_is_not_cifar(tmp_path, synthetic_archive):
    bad = _with_member(
        tmp_path, synthetic_archive, "meta", pickle.dumps([1, 2], protocol=2)
    )
    with pytest.raises(data.NotCifar100Error, match="holds a list"):
        data.load_cifar100(bad)


def test_a_missing_key_is_named_with_the_keys_found(tmp_path, synthetic_archive):
    payload = _edited_pickle(
        synthetic_archive, "train", lambda d: d.pop(b"fine_labels")
    )
    bad = _with_member(tmp_path, synthetic_archive, "train", payload)
    with pytest.raises(
        data.NotCifar100Error, match="no key 'fine_labels'.*coarse_labels"
    ):
        data.load_cifar100(bad)


def test_rows_of_the_wrong_size_are_reported(tmp_path, synthetic_archive):
    def shrink(d):
        d[b"data"] = d[b"data"][:, :1024]

    bad = _with_member(
        tmp_path,
        synthetic_archive,
        "train",
        _edited_pickle(synthetic_archive, "train", shrink),
    )
    with pytest.raises(data.NotCifar100Error, match=r"shape \(1200, 1024\).*3072"):
        data.load_cifar100(bad)


def test_labels_that_do_not_match_the_images_are_reported(tmp_path, synthetic_archive):
    def drop(d):
        d[b"fine_labels"] = d[b"fine_labels"][:-1]

    bad = _with_member(
        tmp_path,
        synthetic_archive,
        "test",
        _edited_pickle(synthetic_archive, "test", drop),
    )
    with pytest.raises(data.NotCifar100Error, match="399 entries for 400 images"):
        data.load_cifar100(bad)


def test_labels_out_of_range_are_reported(tmp_path, synthetic_archive):
    def widen(d):
        d[b"coarse_labels"][0] = 20

    bad = _with_member(
        tmp_path,
        synthetic_archive,
        "test",
        _edited_pickle(synthetic_archive, "test", widen),
    )
    with pytest.raises(data.NotCifar100Error, match="outside 0..19"):
        data.load_cifar100(bad)


def test_a_wrong_number_of_class_names_is_reported(tmp_path, synthetic_archive):
    def trim(d):
        d[b"fine_label_names"] = d[b"fine_label_names"][:10]

    bad = _with_member(
        tmp_path,
        synthetic_archive,
        "meta",
        _edited_pickle(synthetic_archive, "meta", trim),
    )
    with pytest.raises(
        data.NotCifar100Error, match="lists 10 names, CIFAR-100 has 100"
    ):
        data.load_cifar100(bad)


def test_a_folder_without_the_members_is_reported(tmp_path):
    (tmp_path / "train").write_bytes(b"")
    with pytest.raises(data.NotCifar100Error, match="has no file 'test'"):
        data.load_cifar100(tmp_path)


def test_every_data_error_is_a_value_error():
    for error in (
        data.DownloadError,
        data.ChecksumError,
        data.CorruptArchiveError,
        data.NotCifar100Error,
    ):
        assert issubclass(error, ValueError)


# ------------------------------------------------------------------------ download


@pytest.fixture
def official(monkeypatch, synthetic_archive):
    """Serve the synthetic archive as if it were the official one, over file://."""
    monkeypatch.setattr(data, "CIFAR100_URL", synthetic_archive.as_uri())
    monkeypatch.setattr(data, "CIFAR100_MD5", data.file_md5(synthetic_archive))
    return synthetic_archive


def test_no_network_gives_the_url_and_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(
        data, "CIFAR100_URL", "http://127.0.0.1:9/cifar-100-python.tar.gz"
    )
    target = tmp_path / "datasets" / "cifar-100-python.tar.gz"
    with pytest.raises(data.DownloadError) as error:
        data.load_cifar100(cache_dir=tmp_path)
    message = str(error.value)
    assert "http://127.0.0.1:9/cifar-100-python.tar.gz" in message
    assert f"place it at {target}" in message
    assert not target.exists()


def test_a_download_with_the_wrong_md5_is_set_aside_not_kept(
    tmp_path, monkeypatch, synthetic_archive
):
    monkeypatch.setattr(data, "CIFAR100_URL", synthetic_archive.as_uri())
    target = tmp_path / "datasets" / "cifar-100-python.tar.gz"
    with pytest.raises(
        data.ChecksumError, match="not the published eb9058c3a382ffc7106e4002c42a8d85"
    ):
        data.load_cifar100(cache_dir=tmp_path)
    assert not target.exists()
    assert (
        target.with_name(target.name + ".corrupt").read_bytes()
        == synthetic_archive.read_bytes()
    )


def test_a_verified_download_is_parsed_and_reused(
    tmp_path, monkeypatch, official, cifar
):
    loaded = data.load_cifar100(cache_dir=tmp_path)
    np.testing.assert_array_equal(loaded.x_train, cifar.x_train)
    monkeypatch.setattr(data, "CIFAR100_URL", "http://127.0.0.1:9/unreachable")
    again = data.load_cifar100(cache_dir=tmp_path)  # from the cache: no network needed
    np.testing.assert_array_equal(again.y_test, cifar.y_test)


def test_a_damaged_cached_archive_is_set_aside_and_downloaded_again(tmp_path, official):
    target = tmp_path / "datasets" / "cifar-100-python.tar.gz"
    target.parent.mkdir()
    target.write_bytes(gzip.compress(b"half a download"))
    assert data.download_cifar100(cache_dir=tmp_path) == target
    assert target.read_bytes() == official.read_bytes()
    assert target.with_name(target.name + ".corrupt").exists()


# ------------------------------------------------- hostile archives (issue 15)


@pytest.mark.parametrize(
    "member, edit, message",
    [
        (
            "train",
            lambda d: d.update({b"fine_labels": [v + 0.9 for v in d[b"fine_labels"]]}),
            "'fine_labels' holds float64 values, not a list of whole numbers",
        ),
        (
            "test",
            lambda d: d.update({b"coarse_labels": ["x"] * len(d[b"coarse_labels"])}),
            "'coarse_labels' holds <U1 values, not a list of whole numbers",
        ),
        (
            "meta",
            lambda d: d.update({b"fine_label_names": list(range(100))}),
            "'fine_label_names' holds entries that are not names",
        ),
        (
            "meta",
            lambda d: d.update({b"fine_label_names": [b"x"] * 100}),
            "'fine_label_names' names some class twice",
        ),
        (
            "meta",
            lambda d: d.update({b"coarse_label_names": 20}),
            "'coarse_label_names' is a int, not a list of names",
        ),
        (
            "train",
            lambda d: d.update({b"data": [[1, 2], [3]]}),
            "'data' is not an array",
        ),
    ],
    ids=["float labels", "text labels", "int names", "same names", "no list", "ragged"],
)
def test_labels_and_names_of_the_wrong_type_are_not_cifar(
    tmp_path, synthetic_archive, member, edit, message
):
    bad = _with_member(
        tmp_path,
        synthetic_archive,
        member,
        _edited_pickle(synthetic_archive, member, edit),
    )
    with pytest.raises(data.NotCifar100Error, match=message):
        data.load_cifar100(bad)


def test_a_member_that_declares_gigabytes_is_refused_before_it_is_read(tmp_path):
    # A tar header declaring a 3 GiB member, as a 14 MB archive of zeros would: the
    # size is checked when the header is read, before a byte of the member is.
    info = tarfile.TarInfo("cifar-100-python/train")
    info.size = 3 * 2**30
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(gzip.compress(info.tobuf() + bytes(1 << 20)))
    with pytest.raises(data.NotCifar100Error, match="3,221,225,472 bytes, more than"):
        data.load_cifar100(bomb)
    official_train_bytes = 50_000 * data.ROW_BYTES
    assert 3 * official_train_bytes < data.MAX_MEMBER_BYTES  # well above the official


def test_an_oversized_file_of_an_extracted_folder_is_refused(tmp_path, monkeypatch):
    for member in data.MEMBERS:
        (tmp_path / member).write_bytes(bytes(100))
    monkeypatch.setattr(data, "MAX_MEMBER_BYTES", 99)
    with pytest.raises(data.NotCifar100Error, match="100 bytes, more than"):
        data.load_cifar100(tmp_path)


def test_too_few_images_for_a_subset_is_a_dataset_error(cifar):
    with pytest.raises(data.TooFewImagesError, match=r"\(test images\): per_class"):
        data.stratified_subset(cifar, train_per_class=1, test_per_class=10**6)


def test_a_cache_that_is_a_file_is_named_with_the_fix(tmp_path, monkeypatch):
    (tmp_path / "keras-home").write_text("not a folder")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    with pytest.raises(data.DatasetError, match="cannot be used as the data cache"):
        data.load_cifar100("synthetic")


def test_a_cache_that_cannot_be_written_is_named_with_the_fix(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for non-root
    with pytest.raises(
        data.DatasetError, match=r"\(Permission denied\). Point KERAS_HOME"
    ):
        data.load_cifar100("synthetic")
