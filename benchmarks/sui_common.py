"""Shared pieces of the smooth-unique-information benchmarks: MNIST 4 vs 9 and the MLP.

The data are the real MNIST test images shipped in ``$LIT_INFO_DATASETS/MNIST/raw``
(``t10k-*.gz``, read directly; nothing is downloaded). Digits 4 and 9 are kept, shuffled with a
fixed seed and split into a training set and a disjoint validation set (for F-SI). Inputs are
flattened, scaled to [0, 1] and standardized with MNIST's mean and std; the target of the one
network output is ``+1`` for a 9 and ``-1`` for a 4 (MSE, as in the linearized analysis).
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from lit_info.info import eigh_kernel, smooth_unique_information, structured_ntk_pair

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def datasets_dir() -> Path:
    """The shared data folder: ``$LIT_INFO_DATASETS`` or ``../shared/datasets``."""
    default = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    return Path(os.environ.get("LIT_INFO_DATASETS", default))


def _read_idx(path: Path) -> np.ndarray:
    if not path.is_file():
        raise SystemExit(f"MNIST file not found: {path} (set LIT_INFO_DATASETS)")
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def mnist_4v9(
    n_train: int,
    n_val: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    digits: str = "4v9",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training and validation inputs ``(n, 784)`` and targets ``(n, 1)`` (+1 for 9, -1 for 4).

    Args:
        n_train: Training samples.
        n_val: Validation samples (disjoint from the training ones).
        seed: Shuffle seed.
        dtype: Dtype of the returned tensors.
        digits: ``"4v9"`` (1,991 images) or ``"all"`` (all 10,000 test images, target +1 for
            a digit >= 5; for timings at larger ``n``).

    Returns:
        ``x_train, y_train, x_val, y_val``.
    """
    raw = datasets_dir() / "MNIST" / "raw"
    images = _read_idx(raw / "t10k-images-idx3-ubyte.gz")
    labels = _read_idx(raw / "t10k-labels-idx1-ubyte.gz")
    if digits not in ("4v9", "all"):
        raise SystemExit(f"digits must be '4v9' or 'all', got {digits!r}")
    if digits == "4v9":
        keep = np.flatnonzero((labels == 4) | (labels == 9))
    else:
        keep = np.arange(len(labels))
    if n_train + n_val > len(keep):
        raise SystemExit(
            f"only {len(keep)} images for digits={digits}; asked for {n_train} + {n_val}"
        )
    keep = np.random.default_rng(seed).permutation(keep)[: n_train + n_val]
    x = torch.from_numpy(images[keep].reshape(len(keep), -1).astype(np.float64) / 255.0)
    x = ((x - MNIST_MEAN) / MNIST_STD).to(dtype)
    positive = labels[keep] == 9 if digits == "4v9" else labels[keep] >= 5
    y = torch.from_numpy(np.where(positive, 1.0, -1.0)).to(dtype)[:, None]
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def mlp(hidden: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """The paper's MNIST 4 vs 9 MLP: 784 -> ``hidden`` (ReLU) -> 1, PyTorch's default init."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 1)).to(dtype)


def add_setting_arguments(
    parser: argparse.ArgumentParser, hidden: int = 1024, steps: int = 2000
) -> None:
    """Add the options shared by the SUI benchmarks: network, GD, validation set, device."""
    parser.add_argument("--val", type=int, default=500, help="validation samples for F-SI")
    parser.add_argument("--hidden", type=int, default=hidden)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--lam", type=float, default=0.0)
    parser.add_argument("--sigma2", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)


def parse_settings(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, torch.device]:
    """Parse the arguments, apply ``--threads`` and return them with the device."""
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args, torch.device(args.device)


def sui_estimates(
    model: nn.Module, x: Tensor, y: Tensor, xv: Tensor, args: argparse.Namespace
) -> tuple[Tensor, Tensor, float]:
    """SI and F-SI of every training sample (network linearized at its current weights, GD
    with ``args.lr`` for ``args.steps`` steps) and the largest kernel eigenvalue."""
    theta, theta_v = structured_ntk_pair(model, x, xv)
    with torch.no_grad():
        residual = model(x) - y
    eig = eigh_kernel(theta)
    si, fsi = smooth_unique_information(
        theta,
        residual,
        theta_v,
        eta=args.lr,
        t=args.steps,
        lam=args.lam,
        mode="discrete",
        sigma2=args.sigma2,
        eig=eig,
    )
    return si, fsi, float(eig[0][-1])


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on the CPU) so that wall-clock timings are right."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Accumulates wall-clock seconds per named stage (GPU-synchronized)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        """Time the enclosed block and add it to ``stage``."""
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    @property
    def total(self) -> float:
        """Sum over stages."""
        return sum(self.seconds.values())


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two 1-D tensors."""
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (no ties expected)."""
    return pearson(a.argsort().argsort().double(), b.argsort().argsort().double())
