import gzip
import math
import os
import pickle
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from make_cifar_fixture import make_cifar_folder
from make_mnist_fixture import make_mnist_folder, make_random_mnist_folder, read_idx, write_idx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, DistributedSampler

from lit_info.data.images import (
    DATASET_INFO,
    IndexedTensorDataset,
    NoisyImageDataModule,
    expected_files,
)
from lit_info.data.label_noise import CIFAR10_PAIR_MAP

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _binomial_ok(count: int, n: int, p: float, z: float = 5.0) -> bool:
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p))


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def mnist_raw(datasets_dir) -> Path:
    raw = datasets_dir / "MNIST" / "raw"
    if not (raw / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST test set not found at {raw} (set LIT_INFO_DATASETS)")
    return raw


@pytest.fixture(scope="session")
def mnist_ref(mnist_raw):
    """Real MNIST test images/labels parsed independently with numpy."""
    images = read_idx(mnist_raw / "t10k-images-idx3-ubyte.gz").copy()
    return images, read_idx(mnist_raw / "t10k-labels-idx1-ubyte.gz").copy()


@pytest.fixture(scope="session")
def mnist_root(mnist_raw, tmp_path_factory) -> Path:
    return make_mnist_folder(mnist_raw, tmp_path_factory.mktemp("mnist"), n_train=2000)


@pytest.fixture(scope="session")
def mnist_test_only_root(mnist_raw, tmp_path_factory) -> Path:
    return make_mnist_folder(mnist_raw, tmp_path_factory.mktemp("mnist_test_only"), n_train=0)


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    return make_cifar_folder(tmp_path_factory.mktemp("cifar10"), "cifar10", n_per_batch=50)


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory) -> Path:
    return make_cifar_folder(tmp_path_factory.mktemp("cifar100"), "cifar100", n_per_batch=40)


def _unnormalize(x: torch.Tensor, dataset: str) -> torch.Tensor:
    info = DATASET_INFO[dataset]
    mean = torch.tensor(info.mean).view(-1, 1, 1)
    std = torch.tensor(info.std).view(-1, 1, 1)
    return (x * std + mean) * info.pixel_max


def _read_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


# ------------------------------------------------------------------ MNIST (real images)


def test_mnist_reads_real_test_set(mnist_root, mnist_ref):
    ref_x, ref_y = mnist_ref
    dm = NoisyImageDataModule("mnist", data_dir=str(mnist_root), val_size=0, batch_size=64)
    dm.setup("fit")
    test = dm.test_dataset
    assert len(test) == 10_000 and len(dm.train_dataset) == 2000
    np.testing.assert_array_equal(test.labels[:10].numpy(), [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    np.testing.assert_array_equal(np.bincount(test.labels.numpy()), MNIST_TEST_COUNTS)
    np.testing.assert_array_equal(test.images[:, 0].numpy(), ref_x)
    # the fake train split is the first 2000 test images (see make_mnist_fixture)
    np.testing.assert_array_equal(dm.train_clean_labels.numpy(), ref_y[:2000])
    # items: normalised float images, label, position in the split
    x, y, i = test[1234]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert (y, i) == (int(ref_y[1234]), 1234)
    torch.testing.assert_close(
        _unnormalize(x, "mnist"), torch.from_numpy(ref_x[1234]).float()[None], atol=1e-4, rtol=0
    )
    # the standard MNIST constants normalise the real test set to ~ zero mean, unit std
    xs, ys, idx = next(iter(DataLoader(test, batch_size=10_000)))
    assert abs(xs.mean().item()) < 0.02 and abs(xs.std().item() - 1) < 0.02
    np.testing.assert_array_equal(idx.numpy(), np.arange(10_000))
    np.testing.assert_array_equal(ys.numpy(), ref_y)


def test_mnist_train_from_test_set(mnist_test_only_root, mnist_ref):
    ref_x, ref_y = mnist_ref
    dm = NoisyImageDataModule(
        "mnist",
        data_dir=str(mnist_test_only_root),
        train_from_test_set=2000,
        val_size=0,
        noise_type="uniform",
        noise_level=0.4,
        noise_seed=3,
    )
    dm.setup()  # works although the folder has no train-* files
    assert dm.source_split == "test"
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (8000, 0, 2000)
    train_src, test_src = dm.train_source_indices.numpy(), dm.test_source_indices.numpy()
    assert len(np.intersect1d(train_src, test_src)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_src, test_src])), np.arange(10_000))
    # images and clean labels are the real ones at the source positions; the test set is clean
    np.testing.assert_array_equal(dm.train_dataset.images[:, 0].numpy(), ref_x[train_src])
    np.testing.assert_array_equal(dm.train_clean_labels.numpy(), ref_y[train_src])
    np.testing.assert_array_equal(dm.test_dataset.labels.numpy(), ref_y[test_src])
    # noise rate and bookkeeping
    corrupted = dm.train_is_corrupted
    assert _binomial_ok(int(corrupted.sum()), 8000, 0.4)
    torch.testing.assert_close(corrupted, dm.train_noisy_labels != dm.train_clean_labels)
    torch.testing.assert_close(dm.train_dataset.labels, dm.train_noisy_labels)
    # the carve does not depend on the split or noise seeds
    other = NoisyImageDataModule(
        "mnist", data_dir=str(mnist_test_only_root), train_from_test_set=2000, split_seed=5
    )
    other.setup()
    torch.testing.assert_close(other.test_source_indices, dm.test_source_indices)


def test_fashion_mnist_layout_and_constants(mnist_raw, mnist_ref, tmp_path):
    ref_x, _ = mnist_ref
    root = make_mnist_folder(mnist_raw, tmp_path, n_train=100, folder="FashionMNIST")
    dm = NoisyImageDataModule("fashion_mnist", data_dir=str(root), val_size=10)
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset)) == (90, 10)
    x, _, i = dm.test_dataset[7]
    torch.testing.assert_close(
        x * 0.3530 + 0.2860, torch.from_numpy(ref_x[7]).float()[None] / 255, atol=1e-5, rtol=0
    )


def test_mnist_missing_train_files_message(mnist_test_only_root):
    dm = NoisyImageDataModule("mnist", data_dir=str(mnist_test_only_root))
    with pytest.raises(FileNotFoundError) as err:
        dm.setup()
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg
    assert "download: true" in msg and str(mnist_test_only_root) in msg
    assert not dm._is_setup and not hasattr(dm, "train_dataset")


def test_mnist_reads_shared_gz_test_set_directly(mnist_raw, mnist_ref):
    # the shared folder itself: only the .gz test files (and train labels), nothing decompressed
    shared = mnist_raw.parent.parent
    ref_x, ref_y = mnist_ref
    before = sorted(p.name for p in mnist_raw.iterdir())
    dm = NoisyImageDataModule("mnist", data_dir=str(shared), train_from_test_set=2000, val_size=0)
    dm.check_files()
    dm.setup()
    assert (len(dm.train_dataset), len(dm.test_dataset)) == (8000, 2000)
    np.testing.assert_array_equal(np.bincount(ref_y), MNIST_TEST_COUNTS)
    for ds, src in (
        (dm.train_dataset, dm.train_source_indices),
        (dm.test_dataset, dm.test_source_indices),
    ):
        np.testing.assert_array_equal(ds.images[:, 0].numpy(), ref_x[src.numpy()])
    np.testing.assert_array_equal(dm.train_clean_labels.numpy(), ref_y[dm.train_source_indices])
    np.testing.assert_array_equal(dm.test_dataset.labels.numpy(), ref_y[dm.test_source_indices])
    assert sorted(p.name for p in mnist_raw.iterdir()) == before  # nothing written
    # the full two-split layout needs train images, which the shared copy lacks
    full = NoisyImageDataModule("mnist", data_dir=str(shared))
    with pytest.raises(FileNotFoundError) as err:
        full.check_files()
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and "--data.train_from_test_set" in msg
    assert "train-labels" not in msg and "t10k" not in msg  # those are present (as .gz)


def test_mnist_gz_and_plain_folders_read_the_same(mnist_raw, mnist_ref, tmp_path):
    plain = make_mnist_folder(mnist_raw, tmp_path / "plain", n_train=300)
    packed = make_mnist_folder(mnist_raw, tmp_path / "gz", n_train=300, compress=True)
    assert not list((packed / "MNIST" / "raw").glob("*-ubyte"))
    kw = dict(noise_type="uniform", noise_level=0.3, val_size=50)
    a = NoisyImageDataModule("mnist", data_dir=str(plain), **kw)
    b = NoisyImageDataModule("mnist", data_dir=str(packed), **kw)
    a.setup()
    b.setup()
    for name in ("train_dataset", "val_dataset", "test_dataset"):
        assert torch.equal(getattr(a, name).images, getattr(b, name).images)
        assert torch.equal(getattr(a, name).labels, getattr(b, name).labels)
    np.testing.assert_array_equal(b.test_dataset.images[:, 0].numpy(), mnist_ref[0])


def _small_mnist_folder(mnist_raw, tmp_path) -> Path:
    root = make_mnist_folder(mnist_raw, tmp_path, n_train=50)
    return root / "MNIST" / "raw"


def test_mnist_truncated_file_is_named(mnist_raw, tmp_path):
    raw = _small_mnist_folder(mnist_raw, tmp_path)
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    dm = NoisyImageDataModule("mnist", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="truncated") as err:
        dm.setup()
    assert str(path) in str(err.value) and "download: true" in str(err.value)
    assert not dm._is_setup


def test_mnist_garbage_and_gzipped_files_are_named(mnist_raw, tmp_path):
    raw = _small_mnist_folder(mnist_raw, tmp_path)
    lbl = raw / "train-labels-idx1-ubyte"
    lbl.write_bytes(os.urandom(300))
    with pytest.raises(ValueError, match="magic") as err:
        NoisyImageDataModule("mnist", data_dir=str(tmp_path)).setup()
    assert str(lbl) in str(err.value)
    img = raw / "t10k-images-idx3-ubyte"
    img.write_bytes(gzip.compress(img.read_bytes(), compresslevel=1))
    with pytest.raises(ValueError, match="gzip") as err:
        NoisyImageDataModule("mnist", data_dir=str(tmp_path), train_from_test_set=10).setup()
    assert str(img) in str(err.value)


def test_mnist_label_count_mismatch(mnist_raw, tmp_path):
    raw = _small_mnist_folder(mnist_raw, tmp_path)
    shutil.copy(raw / "t10k-labels-idx1-ubyte", raw / "train-labels-idx1-ubyte")
    with pytest.raises(ValueError, match=r"10000 labels but train-images-idx3-ubyte has 50"):
        NoisyImageDataModule("mnist", data_dir=str(tmp_path)).setup()


# ------------------------------------------------------------------ CIFAR (generated files)


def test_cifar10_reads_official_pickle_format(cifar10_root):
    folder = cifar10_root / "cifar-10-batches-py"
    batches = [_read_pickle(folder / f"data_batch_{i}") for i in range(1, 6)]
    test_batch = _read_pickle(folder / "test_batch")
    dm = NoisyImageDataModule("cifar10", data_dir=str(cifar10_root), val_size=0, batch_size=16)
    dm.setup()
    assert dm.augment is True and dm.input_shape == (3, 32, 32) and dm.num_classes == 10
    ref_x = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
    ref_y = np.concatenate([b["labels"] for b in batches])
    np.testing.assert_array_equal(dm.train_dataset.images.numpy(), ref_x)
    np.testing.assert_array_equal(dm.train_clean_labels.numpy(), ref_y)
    np.testing.assert_array_equal(dm.test_dataset.labels.numpy(), test_batch["labels"])
    x, y, i = dm.test_dataset[3]
    ref = torch.from_numpy(test_batch["data"][3].reshape(3, 32, 32)).float()
    torch.testing.assert_close(_unnormalize(x, "cifar10"), ref, atol=1e-3, rtol=0)
    xb, yb, ib = next(iter(dm.train_dataloader()))
    assert xb.shape == (16, 3, 32, 32) and yb.dtype == torch.long and ib.dtype == torch.long
    torch.testing.assert_close(yb, dm.train_noisy_labels[ib])


def test_cifar_augmentation_is_a_padded_crop_with_flip(cifar10_root):
    dm = NoisyImageDataModule("cifar10", data_dir=str(cifar10_root))
    dm.setup()
    torch.manual_seed(0)
    n_flipped = n_shifted = 0
    for k in range(30):
        x, _, i = dm.train_dataset[k]
        assert x.shape == (3, 32, 32)
        got = _unnormalize(x, "cifar10").round()
        padded = torch.nn.functional.pad(dm.train_dataset.images[i].float(), (4, 4, 4, 4))
        matches = [
            (top, left, flip)
            for flip in (False, True)
            for top in range(9)
            for left in range(9)
            if torch.equal(
                (lambda c: c.flip(-1) if flip else c)(padded[:, top : top + 32, left : left + 32]),
                got,
            )
        ]
        assert matches, f"augmented item {k} is no padded crop of its image"
        n_flipped += matches[0][2]
        n_shifted += matches[0][:2] != (4, 4)
    assert 5 < n_flipped < 25 and n_shifted > 20
    # eval-time views (validation, test, train_eval) are deterministic and un-augmented
    x1, _, _ = dm.train_eval_dataset[0]
    x2, _, _ = dm.train_eval_dataset[0]
    torch.testing.assert_close(x1, x2)
    torch.testing.assert_close(
        _unnormalize(x1, "cifar10"), dm.train_dataset.images[0].float(), atol=1e-3, rtol=0
    )


def test_cifar10_pair_noise(cifar10_root):
    dm = NoisyImageDataModule(
        "cifar10", data_dir=str(cifar10_root), noise_type="pair", noise_level=0.45, val_size=0
    )
    dm.setup()
    clean, noisy = dm.train_clean_labels, dm.train_noisy_labels
    changed = noisy != clean
    assert changed.any()
    for c in range(10):
        sel = clean == c
        if c in CIFAR10_PAIR_MAP:
            assert set(noisy[sel].tolist()) <= {c, CIFAR10_PAIR_MAP[c]}
        else:
            assert not changed[sel].any()


def test_cifar100_fine_labels(cifar100_root):
    train = _read_pickle(cifar100_root / "cifar-100-python" / "train")
    dm = NoisyImageDataModule("cifar100", data_dir=str(cifar100_root), val_size=0.25)
    dm.setup()
    assert dm.model_hints() == {"num_classes": 100, "input_shape": (3, 32, 32)}
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (150, 50, 40)
    src = dm.train_source_indices.numpy()
    fine = np.array(train["fine_labels"])
    np.testing.assert_array_equal(dm.train_clean_labels.numpy(), fine[src])


def _copy_cifar(root: Path, tmp_path: Path) -> Path:
    shutil.copytree(root / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    return tmp_path / "cifar-10-batches-py"


def test_cifar_truncated_and_garbage_files_are_named(cifar10_root, tmp_path):
    folder = _copy_cifar(cifar10_root, tmp_path)
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    dm = NoisyImageDataModule("cifar10", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="not a readable CIFAR python batch") as err:
        dm.setup()
    assert str(path) in str(err.value) and not dm._is_setup
    path.write_bytes(b"this is not a pickle at all")
    with pytest.raises(ValueError, match="data_batch_3"):
        NoisyImageDataModule("cifar10", data_dir=str(tmp_path)).setup()


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar_pickle_with_foreign_globals_is_refused(cifar10_root, tmp_path):
    folder = _copy_cifar(cifar10_root, tmp_path)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": _Evil(), "labels": [0]}, f, protocol=2)
    with pytest.raises(ValueError, match=r"(?s)test_batch.*is not allowed"):
        NoisyImageDataModule("cifar10", data_dir=str(tmp_path)).setup()


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"data": np.zeros((4, 3072), np.uint8)}, "'labels' or 'fine_labels'"),
        ({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}, "100 columns"),
        ({"data": np.zeros((4, 3072), np.float32), "labels": [0] * 4}, "uint8"),
        ({"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 3}, "3 labels for 4 images"),
        ({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 10]}, r"outside \[0, 10\)"),
    ],
)
def test_cifar_malformed_batch(cifar10_root, tmp_path, entry, match):
    folder = _copy_cifar(cifar10_root, tmp_path)
    with open(folder / "data_batch_5", "wb") as f:
        pickle.dump(entry, f, protocol=2)
    with pytest.raises(ValueError, match=match) as err:
        NoisyImageDataModule("cifar10", data_dir=str(tmp_path)).setup()
    assert "data_batch_5" in str(err.value)


@pytest.mark.parametrize(
    ("dataset", "files"),
    [
        ("mnist", ["MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte"]),
        ("fashion_mnist", ["FashionMNIST/raw/t10k-images-idx3-ubyte"]),
        ("cifar10", ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"]),
        ("cifar100", ["cifar-100-python/train", "cifar-100-python/test"]),
    ],
)
def test_missing_folder_message(tmp_path, dataset, files):
    data_dir = tmp_path / "nowhere"
    dm = NoisyImageDataModule(dataset, data_dir=str(data_dir))
    with pytest.raises(FileNotFoundError) as err:
        dm.setup()
    msg = str(err.value)
    assert dataset in msg and str(data_dir) in msg and "no such folder" in msg
    for hint in ("--data.data_dir", "LIT_INFO_DATA", "--data.download true", "download: true"):
        assert hint in msg
    # one line; the folder once, each missing file once
    assert "\n" not in msg and len(msg) < 500 + 2 * len(str(data_dir))
    folder = data_dir / Path(files[0]).parent
    assert msg.count(str(folder)) == 1
    listed = msg.split(". Set --data.data_dir")[0].replace(str(folder), "")
    needed = [p.name for ps in expected_files(dataset, data_dir).values() for p in ps]
    for name in needed:
        assert len(re.findall(rf"\b{re.escape(name)}\b", listed)) == 1, name
    for f in files:
        assert Path(f).name in msg
    with pytest.raises(FileNotFoundError) as err2:
        dm.check_files()
    assert str(err2.value) == msg
    assert not data_dir.exists()  # nothing was written


# ------------------------------------------------------------------ digits


def _digits_split():
    d = load_digits()
    tr, te = train_test_split(
        np.arange(len(d.target)), test_size=0.2, stratify=d.target, random_state=0
    )
    return d, np.sort(tr), np.sort(te)


def test_digits_sizes_and_content():
    d, tr, te = _digits_split()
    dm = NoisyImageDataModule("digits", val_size=0.1)
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (1293, 144, 360)
    assert len(tr) == 1437 and len(te) == 360
    # test set: the documented fixed stratified split, images scaled from 0..16
    np.testing.assert_array_equal(dm.test_dataset.labels.numpy(), d.target[te])
    assert np.bincount(dm.test_dataset.labels.numpy()).min() >= 34
    x, _, _ = dm.test_dataset[5]
    torch.testing.assert_close(
        x * 0.3760 + 0.3053,
        torch.tensor(d.images[te[5]] / 16.0, dtype=torch.float32)[None],
        atol=1e-5,
        rtol=0,
    )
    # train/val partition the pool
    both = np.concatenate([dm.train_source_indices.numpy(), dm.val_source_indices.numpy()])
    np.testing.assert_array_equal(np.sort(both), np.arange(1437))
    np.testing.assert_array_equal(
        dm.train_clean_labels.numpy(), d.target[tr][dm.train_source_indices.numpy()]
    )


@pytest.mark.parametrize("noisy_validation", [True, False])
def test_digits_noise_bookkeeping(noisy_validation):
    dm = NoisyImageDataModule(
        "digits",
        noise_type="uniform",
        noise_level=0.4,
        noise_seed=1,
        val_size=300,
        noisy_validation=noisy_validation,
    )
    dm.setup()
    corrupted = dm.train_is_corrupted
    torch.testing.assert_close(corrupted, dm.train_noisy_labels != dm.train_clean_labels)
    assert _binomial_ok(int(corrupted.sum()), len(dm.train_dataset), 0.4)
    torch.testing.assert_close(dm.train_dataset.labels, dm.train_noisy_labels)
    torch.testing.assert_close(dm.train_eval_dataset.labels, dm.train_noisy_labels)
    assert (dm.val_noisy_labels != dm.val_clean_labels).float().mean() > 0.25
    expected_val = dm.val_noisy_labels if noisy_validation else dm.val_clean_labels
    torch.testing.assert_close(dm.val_dataset.labels, expected_val)
    _, tr, te = _digits_split()
    np.testing.assert_array_equal(dm.test_dataset.labels.numpy(), load_digits().target[te])


def _noisy_by_source(dm):
    src = torch.cat([dm.train_source_indices, dm.val_source_indices])
    noisy = torch.cat([dm.train_noisy_labels, dm.val_noisy_labels])
    return noisy[src.argsort()]


def test_digits_seeds():
    kw = dict(noise_type="uniform", noise_level=0.3)
    a = NoisyImageDataModule("digits", noise_seed=1, split_seed=2, **kw)
    b = NoisyImageDataModule("digits", noise_seed=1, split_seed=2, **kw)
    c = NoisyImageDataModule("digits", noise_seed=9, split_seed=2, **kw)
    d = NoisyImageDataModule("digits", noise_seed=1, split_seed=7, **kw)
    for dm in (a, b, c, d):
        dm.setup()
    torch.testing.assert_close(a.train_source_indices, b.train_source_indices)
    torch.testing.assert_close(a.train_noisy_labels, b.train_noisy_labels)
    torch.testing.assert_close(a.train_source_indices, c.train_source_indices)
    assert (a.train_noisy_labels != c.train_noisy_labels).any()
    assert not torch.equal(a.val_source_indices, d.val_source_indices)
    # noise is drawn on the pool before the split: the split seed does not change it
    torch.testing.assert_close(_noisy_by_source(a), _noisy_by_source(d))


def test_digits_train_subset_nested():
    small = NoisyImageDataModule("digits", train_subset=200, val_size=0)
    large = NoisyImageDataModule("digits", train_subset=500, val_size=0)
    small.setup()
    large.setup()
    assert len(small.train_dataset) == 200 and len(large.train_dataset) == 500
    assert set(small.train_source_indices.tolist()) <= set(large.train_source_indices.tolist())


def test_setup_is_idempotent():
    dm = NoisyImageDataModule("digits", noise_type="uniform", noise_level=0.5)
    dm.setup("fit")
    ds, labels = dm.train_dataset, dm.train_noisy_labels.clone()
    dm.setup("test")
    dm.prepare_data()
    assert dm.train_dataset is ds
    torch.testing.assert_close(dm.train_noisy_labels, labels)


def test_distributed_sampler_over_two_fake_ranks():
    dm = NoisyImageDataModule("digits", val_size=0, batch_size=100, split_seed=3)
    dm.setup()
    n = len(dm.train_dataset)
    seen = []
    for rank in range(2):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        loader = dm.train_dataloader()
        assert isinstance(loader.sampler, DistributedSampler) and loader.sampler.seed == 3
        idx = torch.cat([b[2] for b in loader]).tolist()
        assert len(idx) == math.ceil(n / 2)
        seen.append(idx)
    assert set(seen[0]) | set(seen[1]) == set(range(n))
    dm.trainer = None
    single = dm.train_dataloader()
    order0 = list(single.sampler)
    single.sampler.set_epoch(1)
    assert sorted(order0) == list(range(n)) and list(single.sampler) != order0


def test_train_eval_dataloader_is_ordered_and_unaugmented():
    dm = NoisyImageDataModule("digits", augment=True, batch_size=32, eval_batch_size=500)
    dm.setup()
    loader = dm.train_eval_dataloader()
    assert loader.batch_size == 500
    xs, ys, idx = (torch.cat(t) for t in zip(*loader, strict=True))
    np.testing.assert_array_equal(idx.numpy(), np.arange(len(dm.train_dataset)))
    torch.testing.assert_close(ys, dm.train_noisy_labels)
    expected = (dm.train_dataset.images.float() / 16 - 0.3053) / 0.3760
    torch.testing.assert_close(xs, expected)
    torch.manual_seed(0)
    aug = torch.stack([dm.train_dataset[i][0] for i in range(50)])
    assert not torch.allclose(aug, expected[:50])  # the training view is augmented


class _Recorder(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(64, 10)
        self.seen: dict[int, list[int]] = {}

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        self.seen.setdefault(self.current_epoch, []).extend(idx.tolist())
        return torch.nn.functional.cross_entropy(self.lin(x.flatten(1)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_shuffle_order_survives_checkpoint_resume(tmp_path):
    def trainer(epochs):
        return pl.Trainer(
            max_epochs=epochs,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            default_root_dir=tmp_path,
        )

    def data():
        return NoisyImageDataModule("digits", val_size=0, batch_size=256, split_seed=11)

    full = _Recorder()
    trainer(2).fit(full, data())
    first = _Recorder()
    t1 = trainer(1)
    t1.fit(first, data())
    ckpt = tmp_path / "e0.ckpt"
    t1.save_checkpoint(ckpt)
    resumed = _Recorder()
    trainer(2).fit(resumed, data(), ckpt_path=str(ckpt))
    assert full.seen[0] == first.seen[0]
    assert resumed.seen[1] == full.seen[1]
    assert full.seen[1] != full.seen[0]


def test_shapes_and_hints_without_loading(tmp_path):
    for name, shape, k in [
        ("digits", (1, 8, 8), 10),
        ("mnist", (1, 28, 28), 10),
        ("fashion_mnist", (1, 28, 28), 10),
        ("cifar10", (3, 32, 32), 10),
        ("cifar100", (3, 32, 32), 100),
    ]:
        dm = NoisyImageDataModule(name, data_dir=str(tmp_path / "absent"))
        assert dm.input_shape == shape and dm.num_classes == k
        assert dm.model_hints() == {"num_classes": k, "input_shape": shape}
        assert dm.augment is name.startswith("cifar")


def test_val_size_from_cli_strings_keeps_counts_and_fractions():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(NoisyImageDataModule, "data")
    sizes = {}
    for text in ("0.1", "300", "0", "300.0"):
        cfg = parser.parse_args(["--data.val_size", text])
        dm = NoisyImageDataModule(val_size=cfg.data.val_size)
        dm.setup()
        sizes[text] = len(dm.val_dataset)
    assert sizes == {"0.1": 144, "300": 300, "0": 0, "300.0": 300}


def test_data_dir_default_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LIT_INFO_DATA", str(tmp_path))
    assert NoisyImageDataModule("mnist").data_dir == tmp_path
    monkeypatch.delenv("LIT_INFO_DATA")
    assert NoisyImageDataModule("mnist").data_dir == Path("./data")


def test_indexed_tensor_dataset():
    images = torch.arange(12).view(4, 3)
    ds = IndexedTensorDataset(images, torch.tensor([3, 1, 0, 2]), transform=lambda x: x * 2)
    assert len(ds) == 4
    x, y, i = ds[2]
    assert torch.equal(x, images[2] * 2) and (y, i) == (0, 2)
    with pytest.raises(ValueError, match="same length"):
        IndexedTensorDataset(images, torch.zeros(3, dtype=torch.long))


# ------------------------------------------------------------------ argument validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "svhn"}, r"dataset must be one of .*'svhn'"),
        ({"noise_type": "uniform", "noise_level": 1.0}, "noise_level.*1.0"),
        ({"noise_type": "uniform", "noise_level": -0.2}, "noise_level.*-0.2"),
        ({"noise_level": 0.3}, "noise_type is None"),
        ({"noise_type": "gaussian"}, "noise_type"),
        ({"dataset": "mnist", "noise_type": "pair", "noise_level": 0.2}, r"'mnist'.*cifar10"),
        ({"dataset": "cifar100", "noise_type": "pair", "noise_level": 0.2}, "'cifar100'"),
        ({"val_size": 1.5}, "val_size"),
        ({"val_size": 0.999999 + 1}, "val_size"),
        ({"val_size": -1}, "val_size"),
        ({"val_size": "10%"}, "val_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"train_from_test_set": 0}, "train_from_test_set"),
        ({"train_subset": -5}, "train_subset"),
        ({"split_seed": -1}, "split_seed"),
        ({"augment": "yes"}, "augment"),
        ({"predict_split": "validation"}, r"predict_split must be one of .*'validation'"),
        ({"predict_split": "val", "val_size": 0}, "predict_split='val' needs a validation set"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoisyImageDataModule(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_size": 1437}, "val_size=1437 leaves no training data"),
        ({"train_subset": 5000}, "train_subset=5000 exceeds the training pool of 1437"),
        ({"train_from_test_set": 360}, "train_from_test_set=360 must be smaller than the 360"),
    ],
)
def test_sizes_that_do_not_fit_the_data(kwargs, match):
    dm = NoisyImageDataModule("digits", **kwargs)
    with pytest.raises(ValueError, match=match):
        dm.setup()
    assert not dm._is_setup


def test_class_subset_relabels_in_the_given_order():
    from sklearn.datasets import load_digits

    dm = NoisyImageDataModule(dataset="digits", classes=[9, 4], val_size=0.2)
    assert dm.num_classes == 2 and dm.model_hints()["num_classes"] == 2
    dm.setup()
    digits = load_digits()
    n_total = int(np.isin(digits.target, [4, 9]).sum())
    n = len(dm.train_dataset) + len(dm.val_dataset) + len(dm.test_dataset)
    assert n == n_total
    # every kept image is a real 9 (label 0) or 4 (label 1) of the bundled data
    for ds in (dm.train_dataset, dm.test_dataset):
        assert set(torch.unique(ds.labels).tolist()) == {0, 1}
    x9 = [i for i in range(len(dm.test_dataset)) if int(dm.test_dataset.labels[i]) == 0]
    img = dm.test_dataset.images[x9[0]].reshape(-1).numpy().astype(float)
    matches = np.nonzero((digits.data == img).all(axis=1))[0]
    assert len(matches) >= 1 and set(digits.target[matches]) == {9}


def test_class_subset_errors_are_named():
    with pytest.raises(ValueError, match="classes must list at least 2 classes"):
        NoisyImageDataModule(dataset="mnist", classes=[4])
    with pytest.raises(ValueError, match=r"classes lists 4 twice \(\[4, 4, 9\]\)"):
        NoisyImageDataModule(dataset="mnist", classes=[4, 4, 9])
    with pytest.raises(ValueError, match="classes lists 4 twice"):
        NoisyImageDataModule(dataset="mnist", classes=[4, 4])
    with pytest.raises(ValueError, match="classes lists 4 3 times and 9 twice"):
        NoisyImageDataModule(dataset="mnist", classes=[4, 9, 4, 9, 4])
    with pytest.raises(ValueError, match="classes must be integers"):
        NoisyImageDataModule(dataset="mnist", classes=[4, 9.5])
    with pytest.raises(ValueError, match=r"classes must lie in \[0, 10\)"):
        NoisyImageDataModule(dataset="mnist", classes=[4, 10])
    with pytest.raises(ValueError, match="pair"):
        NoisyImageDataModule(dataset="cifar10", classes=[3, 5], noise_type="pair", noise_level=0.2)


def test_class_subset_on_cifar_files(tmp_path):
    root = make_cifar_folder(tmp_path, "cifar10")
    dm = NoisyImageDataModule(dataset="cifar10", data_dir=str(root), classes=[3, 5], val_size=0)
    dm.setup()
    assert dm.num_classes == 2
    assert set(torch.unique(dm.train_clean_labels).tolist()) <= {0, 1}


# ------------------------------------------------------------------ .gz files, check_files
# (random pixels: these run without the shared data)


def _raw(root: Path) -> Path:
    return root / "MNIST" / "raw"


def test_expected_files_accepts_either_form(tmp_path):
    root = make_random_mnist_folder(tmp_path, n_train=10, n_test=10, compress=True)
    raw = _raw(root)
    plain = expected_files("mnist", root)
    assert plain["test"] == [raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte"]
    resolved = expected_files("mnist", root, resolve=True)
    assert resolved["test"] == [p.with_name(p.name + ".gz") for p in plain["test"]]
    # the uncompressed file wins where both exist
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(10, np.uint8))
    resolved = expected_files("mnist", root, resolve=True)
    assert resolved["test"] == [raw / "t10k-images-idx3-ubyte.gz", raw / "t10k-labels-idx1-ubyte"]
    # CIFAR batches have no .gz form
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "test_batch.gz").write_bytes(b"")
    cifar = expected_files("cifar10", tmp_path, resolve=True)["test"]
    assert cifar == [tmp_path / "cifar-10-batches-py" / "test_batch"]


def test_mnist_prefers_the_uncompressed_file(tmp_path):
    root = make_random_mnist_folder(tmp_path, n_train=30, n_test=10, compress=True, seed=1)
    raw = _raw(root)
    gz_dm = NoisyImageDataModule("mnist", data_dir=str(root), val_size=0)
    gz_dm.setup()
    # a different, valid uncompressed training set next to the .gz files is what is read
    images = np.full((30, 28, 28), 7, np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", images)
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(30, dtype=np.uint8) % 10)
    dm = NoisyImageDataModule("mnist", data_dir=str(root), val_size=0)
    dm.setup()
    assert (dm.train_dataset.images == 7).all()
    np.testing.assert_array_equal(dm.train_clean_labels.numpy(), np.arange(30) % 10)
    assert torch.equal(dm.test_dataset.images, gz_dm.test_dataset.images)  # still the .gz
    # ... and a damaged uncompressed file is reported, not silently replaced by the .gz
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError) as err:
        NoisyImageDataModule("mnist", data_dir=str(root)).check_files()
    assert str(raw / "train-images-idx3-ubyte") + ":" in str(err.value)


def _truncate(path: Path, keep: int = 600) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _cut_pickle(path: Path) -> None:
    data = path.read_bytes()
    cut = 5000
    while data[cut - 1] == ord("."):  # keep the test independent of the random bytes
        cut -= 1
    path.write_bytes(data[:cut])


def _gzip_garbage(path: Path) -> None:
    path.write_bytes(gzip.compress(os.urandom(500)))


def _gunzipped_but_named_gz(path: Path) -> None:
    path.write_bytes(gzip.decompress(path.read_bytes()))


def _crc_error(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the stored CRC32
    path.write_bytes(bytes(data))


def _label_10(path: Path) -> None:
    labels = read_idx(path).copy()
    labels[3] = 10
    write_idx(path, labels)


# (dataset, compressed, file to damage, damage, expected words in the message)
DAMAGE = [
    ("mnist", False, "train-images-idx3-ubyte", _truncate, "header announces dims"),
    ("mnist", False, "t10k-labels-idx1-ubyte", lambda p: p.write_bytes(os.urandom(300)), "magic"),
    ("mnist", False, "train-labels-idx1-ubyte", _label_10, "label 10 >= 10 classes"),
    ("mnist", True, "train-images-idx3-ubyte.gz", _truncate, "EOFError"),
    ("mnist", True, "t10k-images-idx3-ubyte.gz", _crc_error, "CRC check failed"),
    ("mnist", True, "train-labels-idx1-ubyte.gz", _gzip_garbage, "magic"),
    ("mnist", True, "t10k-labels-idx1-ubyte.gz", _gunzipped_but_named_gz, "rename it"),
    (
        "mnist",
        True,
        "train-images-idx3-ubyte.gz",
        lambda p: p.write_bytes(b"not gzip at all"),
        "gzip magic bytes",
    ),
    ("mnist", True, "t10k-labels-idx1-ubyte.gz", _label_10, "label 10 >= 10 classes"),
    ("fashion_mnist", True, "t10k-images-idx3-ubyte.gz", _truncate, "EOFError"),
    ("cifar10", False, "data_batch_2", _cut_pickle, "cut short"),
    ("cifar10", False, "test_batch", lambda p: p.write_bytes(b"plain text"), "not a pickle"),
    ("cifar10", False, "test_batch", lambda p: p.write_bytes(b"\xff\x00."), "no pickle opcode"),
    ("cifar10", False, "data_batch_1", lambda p: p.write_bytes(b"\x80\x09}."), "protocol"),
    ("cifar10", False, "data_batch_4", lambda p: p.write_bytes(b""), "empty"),
]


@pytest.mark.parametrize(("dataset", "compress", "name", "damage", "words"), DAMAGE)
def test_check_files_finds_damaged_files_before_setup(
    tmp_path, dataset, compress, name, damage, words
):
    if dataset == "cifar10":
        root = make_cifar_folder(tmp_path, "cifar10", n_per_batch=20)
        folder = root / "cifar-10-batches-py"
    else:
        folder_name = DATASET_INFO[dataset].folder
        root = make_random_mnist_folder(tmp_path, folder=folder_name, compress=compress)
        folder = root / folder_name / "raw"
    NoisyImageDataModule(dataset, data_dir=str(root)).check_files()  # intact: passes
    path = folder / name
    damage(path)
    listing = sorted(tmp_path.rglob("*"))
    dm = NoisyImageDataModule(dataset, data_dir=str(root))
    with pytest.raises(ValueError) as err:
        dm.check_files()
    msg = str(err.value)
    assert f"corrupt or truncated data file {path}: " in msg and words in msg
    assert "download: true" in msg
    assert not dm._is_setup and sorted(tmp_path.rglob("*")) == listing  # nothing written
    # setup alone (no check_files) raises the very same error; so does download=True
    with pytest.raises(ValueError) as err_setup:
        NoisyImageDataModule(dataset, data_dir=str(root)).setup()
    assert str(err_setup.value) == msg
    with pytest.raises(ValueError) as err_dl:
        NoisyImageDataModule(dataset, data_dir=str(root), download=True).check_files()
    assert str(err_dl.value) == msg


def test_check_files_reads_only_the_splits_in_use(tmp_path):
    root = make_random_mnist_folder(tmp_path, n_train=30, compress=True)
    _truncate(_raw(root) / "train-images-idx3-ubyte.gz")
    NoisyImageDataModule("mnist", data_dir=str(root), train_from_test_set=5).check_files()
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        NoisyImageDataModule("mnist", data_dir=str(root)).check_files()


def test_check_files_with_download_skips_missing_files(tmp_path):
    # nothing there: with download the files would be fetched in prepare_data, so no error
    dm = NoisyImageDataModule("mnist", data_dir=str(tmp_path / "empty"), download=True)
    dm.check_files()
    assert not (tmp_path / "empty").exists()
    NoisyImageDataModule("digits", data_dir=str(tmp_path / "empty")).check_files()


def test_mnist_gzipped_file_without_gz_name_is_named(tmp_path):
    root = make_random_mnist_folder(tmp_path, n_train=0, n_test=10)
    path = _raw(root) / "t10k-images-idx3-ubyte"
    path.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(ValueError, match="name it t10k-images-idx3-ubyte.gz") as err:
        NoisyImageDataModule("mnist", data_dir=str(root), train_from_test_set=5).check_files()
    assert str(path) in str(err.value)


def test_mnist_wrong_image_size_is_named(tmp_path):
    root = make_random_mnist_folder(tmp_path, n_train=0, n_test=10, compress=True)
    path = write_idx(_raw(root) / "t10k-images-idx3-ubyte.gz", np.zeros((10, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"items are \(32, 32\), expected \(28, 28\)") as err:
        NoisyImageDataModule("mnist", data_dir=str(root), train_from_test_set=5).setup()
    assert str(path) in str(err.value)


# ------------------------------------------------------------------ predict


class _PredictRecorder(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(64, 10)

    def predict_step(self, batch, batch_idx):
        x, y, idx = batch
        return {"x": x, "y": y, "index": idx}


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_predict_dataloader_serves_the_chosen_split(split):
    dm = NoisyImageDataModule(
        "digits",
        noise_type="uniform",
        noise_level=0.4,
        val_size=200,
        augment=True,
        batch_size=16,
        eval_batch_size=128,
        predict_split=split,
    )
    assert dm.hparams.predict_split == split
    loader = dm.predict_dataloader()  # sets up on demand
    expected = {"train": dm.train_eval_dataset, "val": dm.val_dataset, "test": dm.test_dataset}
    dataset = expected[split]
    assert loader.dataset is dataset and loader.batch_size == 128
    assert not isinstance(loader.sampler, DistributedSampler)  # Lightning shards it under DDP
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    out = trainer.predict(_PredictRecorder(), datamodule=dm)
    xs, ys, idx = (torch.cat([o[k] for o in out]) for k in ("x", "y", "index"))
    n = len(dataset)
    np.testing.assert_array_equal(idx.numpy(), np.arange(n))  # each item once, in order
    torch.testing.assert_close(ys, dataset.labels)
    if split == "train":
        torch.testing.assert_close(ys, dm.train_noisy_labels)
        assert dm.train_is_corrupted.any()  # noisy labels, not the clean ones
    elif split == "val":
        torch.testing.assert_close(ys, dm.val_noisy_labels)  # noisy_validation=True
    else:
        np.testing.assert_array_equal(ys.numpy(), load_digits().target[_digits_split()[2]])
    # eval view: unaugmented, identical on every pass
    reference = (dataset.images.float() / 16 - 0.3053) / 0.3760
    torch.testing.assert_close(xs, reference)


def test_predict_on_an_empty_validation_split_is_refused():
    dm = NoisyImageDataModule("digits", val_size=0.0001, predict_split="val")
    with pytest.raises(ValueError, match="predict_split='val' selects an empty split"):
        dm.predict_dataloader()
