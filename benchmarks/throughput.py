"""Training throughput of the lit_info LightningModules versus a plain PyTorch loop.

Trains the same network on the same synthetic in-memory data (random normal images, random
labels, a ``TensorDataset`` that also yields the sample index, as lit_info's datamodules do) with

- ``plain``: a hand-written loop (``model.train()``, ``zero_grad``/``backward``/``step``);
- ``lightning``: ``Trainer.fit`` on :class:`lit_info.methods.classifier.Classifier`;

and, unless ``--methods classifier`` is given, the same pair for LIMIT (two networks):

- ``plain-limit``: LIMIT's update written out by hand (one Adam over both networks);
- ``lightning-limit``: ``Trainer.fit`` on :class:`lit_info.methods.limit.LIMIT`.

Every variant is timed at each ``--batch-size`` (default 256 and 128: the smaller batch halves
the work per step, so Lightning's fixed cost per step weighs twice as much). Every variant runs
one untimed warm-up epoch followed by ``--epochs`` timed epochs; the variants
are interleaved (``--repeats`` rounds, the order alternating every round) so that drift of a noisy
machine affects all of them alike, and the median over rounds is reported. For Lightning the
timed span is ``on_train_epoch_start`` to ``on_train_epoch_end`` of a callback, so Trainer
start-up and tear-down are excluded; for the plain loop it is the same span (creating the
DataLoader iterator up to the end of the last optimizer step).

The overhead is Lightning's extra time per sample, ``plain_sps / lightning_sps - 1``, taken per
batch size as the median over rounds of this ratio for the two (adjacent) runs of each round.
The same is also reported with CPU time (``time.process_time``) instead of wall-clock time, and
as Lightning's extra CPU time per optimizer step in milliseconds (the fixed cost per step, which
``--net mlp --batch-size 4`` isolates from the arithmetic).

Run ``python benchmarks/throughput.py --help`` for the options; ``make bench`` runs the defaults.
With ``--ablation`` a third classifier variant, ``lightning-bare`` (the same module with a
training step that only computes the loss: no metrics, no ``self.log``, no finite-loss check),
separates the cost of the Trainer loop from the cost of the module's per-step logging.
``--fixed-cost`` times the three on a 16-8-10 MLP with batches of 4 on one thread, where the
arithmetic is negligible, and prints the fixed cost per step of each part in milliseconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import lightning
import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lit_info.methods.classifier import Classifier
from lit_info.methods.limit import LIMIT
from lit_info.nets import NET_NAMES, build_net

NUM_CLASSES = 10
INPUT_SHAPE = (1, 28, 28)
SEED = 0


# --------------------------------------------------------------------------------------------
# data and timing helpers
# --------------------------------------------------------------------------------------------
def make_dataset(num_samples: int, input_shape: tuple[int, int, int]) -> TensorDataset:
    """Random normal images, random labels and the sample index, all in memory."""
    gen = torch.Generator().manual_seed(SEED)
    x = torch.randn(num_samples, *input_shape, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (num_samples,), generator=gen)
    return TensorDataset(x, y, torch.arange(num_samples))


def make_loader(dataset: TensorDataset, batch_size: int) -> DataLoader:
    """The DataLoader used by every variant (same batch size, shuffle order and workers)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=0,
        generator=torch.Generator().manual_seed(SEED),
    )


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so that wall-clock timings are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class EpochTimes:
    """Per-epoch durations and sample counts of one run (warm-up epoch included).

    ``seconds`` is wall-clock time (``time.perf_counter``), the reported measure;
    ``cpu_seconds`` is the CPU time of the whole process (``time.process_time``), a secondary
    measure that is less sensitive to other processes competing for the cores.
    """

    device: torch.device
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    _wall0: float = 0.0
    _cpu0: float = 0.0

    def start(self) -> None:
        """Mark the start of an epoch (after finishing queued GPU work)."""
        sync(self.device)
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()

    def stop(self, count: int) -> None:
        """Mark the end of an epoch in which ``count`` samples were trained on."""
        sync(self.device)
        self.seconds.append(time.perf_counter() - self._wall0)
        self.cpu_seconds.append(time.process_time() - self._cpu0)
        self.samples.append(count)

    def throughput(self, skip: int, cpu: bool = False) -> float:
        """Samples per second over all epochs after the first ``skip`` (warm-up) epochs."""
        secs = sum((self.cpu_seconds if cpu else self.seconds)[skip:])
        count = sum(self.samples[skip:])
        if secs <= 0 or not count:
            raise RuntimeError(f"no timed epochs recorded (got {len(self.seconds)} epochs)")
        return count / secs


class EpochTimer(pl.Callback):
    """Times each training epoch from ``on_train_epoch_start`` to ``on_train_epoch_end``."""

    def __init__(self, device: torch.device) -> None:
        self.times = EpochTimes(device)
        self._count = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._count = 0
        self.times.start()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: object,
        batch: tuple[Tensor, ...],
        batch_idx: int,
    ) -> None:
        self._count += int(batch[0].shape[0])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.times.stop(self._count)


# --------------------------------------------------------------------------------------------
# plain PyTorch loops
# --------------------------------------------------------------------------------------------
def plain_classifier(
    loader: DataLoader, net: str, lr: float, epochs: int, device: torch.device
) -> EpochTimes:
    """Hand-written cross-entropy training loop of the same network and optimizer."""
    torch.manual_seed(SEED)
    model = build_net(net, NUM_CLASSES, INPUT_SHAPE).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    times = EpochTimes(device)
    for _ in range(epochs):
        times.start()
        count = 0
        for x, y, _index in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            count += x.shape[0]
        times.stop(count)
    return times


def plain_limit(
    loader: DataLoader, net: str, lr: float, epochs: int, device: torch.device
) -> EpochTimes:
    """Hand-written LIMIT_G update (beta = 0, no sampling): classifier ``a`` and predictor ``q``.

    ``q`` is fitted to the true cross-entropy gradient ``softmax(a) - onehot(y)`` with a squared
    error; the classifier receives ``softmax(a) - softmax(q)`` (detached) at its logits through the
    surrogate ``mean <a, g_hat>``. One Adam optimizer over both networks, as in the module.
    """
    torch.manual_seed(SEED)
    classifier = build_net(net, NUM_CLASSES, INPUT_SHAPE).to(device)
    predictor = build_net(net, NUM_CLASSES, INPUT_SHAPE).to(device)
    params = list(classifier.parameters()) + list(predictor.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    classifier.train()
    predictor.train()
    times = EpochTimes(device)
    for _ in range(epochs):
        times.start()
        count = 0
        for x, y, _index in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            optimizer.zero_grad()
            logits = classifier(x)
            probs = torch.softmax(logits.detach(), dim=1)
            g_hat = probs - torch.softmax(predictor(x), dim=1)
            g_true = probs - F.one_hot(y, NUM_CLASSES).to(probs.dtype)
            info_penalty = (g_hat - g_true).pow(2).sum(dim=1).mean()
            surrogate = (logits * g_hat.detach()).sum(dim=1).mean()
            (surrogate + info_penalty).backward()
            optimizer.step()
            count += x.shape[0]
        times.stop(count)
    return times


# --------------------------------------------------------------------------------------------
# Lightning runs
# --------------------------------------------------------------------------------------------
class BareClassifier(Classifier):
    """Ablation: the classifier with a training step that only computes the loss."""

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y, _ = batch
        return F.cross_entropy(self(x), y)


def lightning_fit(
    module_factory: Callable[[], pl.LightningModule],
    loader: DataLoader,
    epochs: int,
    device: torch.device,
) -> EpochTimes:
    """Fit a module with a bare Trainer (no logger, checkpoints, progress bar or validation)."""
    torch.manual_seed(SEED)
    module = module_factory()
    timer = EpochTimer(device)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator=device.type,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=loader)
    return timer.times


# --------------------------------------------------------------------------------------------
# fixed cost per step: a network so small that the step's arithmetic is negligible
# --------------------------------------------------------------------------------------------
TINY_SHAPE = (1, 4, 4)
TINY_NET_KWARGS = {"hidden": [8]}


def tiny_plain_seconds(loader: DataLoader, lr: float) -> float:
    """One epoch of the hand-written loop on the tiny MLP (16-8-10)."""
    torch.manual_seed(SEED)
    model = build_net("mlp", NUM_CLASSES, TINY_SHAPE, **TINY_NET_KWARGS)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    for x, y, _index in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return time.perf_counter() - start


def tiny_lightning_seconds(module_class: type[Classifier], loader: DataLoader, lr: float) -> float:
    """The second of two epochs of ``Trainer.fit`` on the tiny MLP (the first warms up)."""
    hp = {"num_classes": NUM_CLASSES, "input_shape": TINY_SHAPE, "lr": lr}

    def factory() -> Classifier:
        return module_class(net="mlp", net_kwargs=TINY_NET_KWARGS, loss="ce", **hp)

    return lightning_fit(factory, loader, 2, torch.device("cpu")).seconds[1]


def fixed_cost(args: argparse.Namespace) -> None:
    """Print the per-step time of the plain loop, the bare module and the Classifier.

    On a 16-8-10 MLP with batches of 4 on one thread every variant's time is its fixed cost
    per step (data loader, autograd and Adam calls for the plain loop); the differences are
    Lightning's own loop (bare) and lit_info's training step (metrics, finite-loss windows).
    """
    torch.set_num_threads(1)
    dataset = make_dataset(args.fixed_cost_steps * 4, TINY_SHAPE)
    loader = make_loader(dataset, 4)
    runs: dict[str, list[float]] = {"plain": [], "lightning-bare": [], "lightning": []}
    tiny_plain_seconds(loader, args.lr)  # warm-up
    for _ in range(args.repeats):
        runs["plain"].append(tiny_plain_seconds(loader, args.lr))
        runs["lightning-bare"].append(tiny_lightning_seconds(BareClassifier, loader, args.lr))
        runs["lightning"].append(tiny_lightning_seconds(Classifier, loader, args.lr))
    ms = {k: 1000.0 * statistics.median(v) / len(loader) for k, v in runs.items()}
    print(
        f"\nfixed cost per step (MLP 16-8-10, batch 4, 1 thread, {len(loader)} steps, median of "
        f"{args.repeats} rounds)"
    )
    print(f"  plain loop                 {ms['plain']:.3f} ms")
    print(
        f"  Lightning, bare step       {ms['lightning-bare']:.3f} ms  "
        f"(+{ms['lightning-bare'] - ms['plain']:.3f}: Lightning's loop)"
    )
    print(
        f"  Lightning, Classifier      {ms['lightning']:.3f} ms  "
        f"(+{ms['lightning'] - ms['lightning-bare']:.3f}: lit_info's training step)"
    )


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
#: (Lightning variant, plain variant) pairs whose overhead is reported.
PAIRS = (("lightning", "plain"), ("lightning-bare", "plain"), ("lightning-limit", "plain-limit"))


def paired_overhead(plain: list[float], lit: list[float]) -> float:
    """Median over rounds of ``plain / lightning - 1`` in percent (runs of a round are adjacent).

    Pairing the two runs of each round cancels slow drift of the machine's speed better than
    the ratio of the two separate medians.
    """
    return 100.0 * (statistics.median(p / q for p, q in zip(plain, lit, strict=True)) - 1.0)


def paired_step_cost(plain: list[float], lit: list[float], batch_size: int) -> float:
    """Median over rounds of Lightning's extra CPU time per optimizer step, in milliseconds.

    ``batch_size / lightning - batch_size / plain`` (samples/s of CPU time): the fixed cost per
    step, independent of how long the step's arithmetic takes.
    """
    diffs = (batch_size / q - batch_size / p for p, q in zip(plain, lit, strict=True))
    return 1000.0 * statistics.median(diffs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults finish in well under 3 minutes on 2 CPU cores)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=8192, help="synthetic training samples")
    p.add_argument(
        "--batch-size",
        type=int,
        nargs="+",
        default=[256, 128],
        help="one or more batch sizes, each timed for every variant (default: 256 128)",
    )
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per run (after 1 warm-up)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds; median reported")
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: CPU count)"
    )
    p.add_argument("--net", default="mnist_cnn", choices=NET_NAMES)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument(
        "--methods",
        nargs="+",
        choices=("classifier", "limit"),
        default=["classifier", "limit"],
        help="which method pairs to benchmark",
    )
    p.add_argument(
        "--ablation",
        action="store_true",
        help="also time 'lightning-bare' (classifier without metrics/logging in training_step)",
    )
    p.add_argument(
        "--fixed-cost",
        action="store_true",
        help="also time the fixed cost per step on a tiny MLP (plain, bare module, Classifier)",
    )
    p.add_argument(
        "--fixed-cost-steps", type=int, default=2048, help="steps per --fixed-cost epoch"
    )
    p.add_argument(
        "--device",
        default=None,
        choices=("cpu", "cuda"),
        help="default: cuda when available, else cpu",
    )
    p.add_argument(
        "--max-overhead",
        type=float,
        default=None,
        help="exit with status 1 when an overhead (percent) exceeds this value",
    )
    args = p.parse_args(argv)
    for name in ("samples", "epochs", "repeats", "fixed_cost_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if any(b < 1 for b in args.batch_size):
        p.error(f"--batch-size must be >= 1, got {args.batch_size}")
    args.batch_size = list(dict.fromkeys(args.batch_size))  # each size once, in the given order
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.lr <= 0:
        p.error(f"--lr must be positive, got {args.lr}")
    return args


def quiet_lightning() -> None:
    """Silence Trainer start-up messages and the few-workers / tensor-core hints."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Tensor Cores.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # torch 2.14 vs lightning 2.6
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")


def make_variants(
    args: argparse.Namespace, loader: DataLoader, total_epochs: int, device: torch.device
) -> dict[str, Callable[[], EpochTimes]]:
    """The runs to time on one loader (one batch size), by variant name, in running order."""
    hp = {"num_classes": NUM_CLASSES, "input_shape": INPUT_SHAPE, "net": args.net, "lr": args.lr}
    variants: dict[str, Callable[[], EpochTimes]] = {}
    if "classifier" in args.methods:
        variants["plain"] = lambda: plain_classifier(
            loader, args.net, args.lr, total_epochs, device
        )
        variants["lightning"] = lambda: lightning_fit(
            lambda: Classifier(loss="ce", **hp), loader, total_epochs, device
        )
        if args.ablation:
            variants["lightning-bare"] = lambda: lightning_fit(
                lambda: BareClassifier(loss="ce", **hp), loader, total_epochs, device
            )
    if "limit" in args.methods:
        variants["plain-limit"] = lambda: plain_limit(
            loader, args.net, args.lr, total_epochs, device
        )
        variants["lightning-limit"] = lambda: lightning_fit(
            lambda: LIMIT(q_dist="gaussian", **hp), loader, total_epochs, device
        )
    return variants


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a table and ``key: value`` lines; return the exit status."""
    args = parse_args(argv)
    quiet_lightning()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda requested but CUDA is not available", file=sys.stderr)
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = args.threads if args.threads is not None else (os.cpu_count() or 1)
    torch.set_num_threads(threads)

    dataset = make_dataset(args.samples, INPUT_SHAPE)
    total_epochs = 1 + args.epochs  # one warm-up epoch, excluded from the timings
    variants = {
        batch_size: make_variants(args, make_loader(dataset, batch_size), total_epochs, device)
        for batch_size in args.batch_size
    }

    print(
        f"device: {device.type}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    print(f"threads: {torch.get_num_threads()}")
    print(f"torch: {torch.__version__}")
    print(f"lightning: {lightning.__version__}")
    print(f"python: {platform.python_version()}")
    sizes = " ".join(str(b) for b in args.batch_size)
    print(
        f"config: net={args.net} samples={args.samples} batch_size={sizes} "
        f"epochs={args.epochs} (+1 warm-up) repeats={args.repeats} lr={args.lr}"
    )
    sys.stdout.flush()

    # wall[batch_size][variant] and cpu[batch_size][variant]: samples/s of each round
    wall = {b: {name: [] for name in v} for b, v in variants.items()}
    cpu = {b: {name: [] for name in v} for b, v in variants.items()}
    for rep in range(args.repeats):
        for batch_size, by_name in variants.items():
            names = list(by_name)
            for name in names if rep % 2 == 0 else names[::-1]:
                times = by_name[name]()
                wall[batch_size][name].append(times.throughput(skip=1))
                cpu[batch_size][name].append(times.throughput(skip=1, cpu=True))
                print(
                    f"  round {rep + 1}/{args.repeats} batch {batch_size:4d} {name:16s} "
                    f"{wall[batch_size][name][-1]:10.1f} samples/s "
                    f"(cpu time: {cpu[batch_size][name][-1]:10.1f})",
                    flush=True,
                )

    header = ("batch", "variant", "median", "min", "max", "cpu-time")
    print()
    print(f"{header[0]:>5s} {header[1]:16s}" + "".join(f"{h:>11s}" for h in header[2:]))
    for batch_size, by_name in wall.items():
        for name, vals in by_name.items():
            row = (statistics.median(vals), min(vals), max(vals))
            row += (statistics.median(cpu[batch_size][name]),)
            print(f"{batch_size:5d} {name:16s}" + "".join(f"{v:11.1f}" for v in row))
    print("(samples/s)")
    print()
    worst = float("-inf")
    for batch_size, by_name in wall.items():
        tag = f"batch_size={batch_size}"
        for name, vals in by_name.items():
            print(f"throughput {name} {tag} samples/s: {statistics.median(vals):.1f}")
        for lit, plain in PAIRS:
            if lit in by_name and plain in by_name:
                overhead = paired_overhead(by_name[plain], by_name[lit])
                cpu_overhead = paired_overhead(cpu[batch_size][plain], cpu[batch_size][lit])
                worst = max(worst, overhead)
                print(f"{lit} overhead {tag}: {overhead:.1f}%")
                print(f"{lit} overhead {tag} (cpu time): {cpu_overhead:.1f}%")
                step_cost = paired_step_cost(
                    cpu[batch_size][plain], cpu[batch_size][lit], batch_size
                )
                print(f"{lit} cost per step {tag} (cpu time): {step_cost:.3f} ms")
    if args.fixed_cost:
        fixed_cost(args)
    if args.max_overhead is not None and worst > args.max_overhead:
        print(f"FAIL: overhead {worst:.1f}% above --max-overhead {args.max_overhead}%")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
