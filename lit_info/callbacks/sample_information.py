r"""Smooth unique information (SUI) of every training sample, as a Lightning callback.

Harutyunyan et al. (ICLR 2021), "Estimating informativeness of samples with smooth unique
information": linearize the network at a point ``w0`` (the current weights, or a reference
checkpoint), train the linearized model on the training set (mean squared error toward the
one-hot *given*, possibly noisy, labels; hyperparameters ``eta``, ``t``, ``mode``, ``lam``) and
measure for every sample ``i`` how much leaving it out changes

* the weights: ``si[i] = ||w - w_{-i}||^2 / (2 sigma2)``, the KL divergence between
  ``N(w, sigma2 I)`` and ``N(w_{-i}, sigma2 I)`` (:func:`lit_info.info.weight_si`, kernel space);
* the predictions on the validation (or test) inputs:
  ``fsi[i] = 1/(2 sigma2) mean_j ||f(x_j) - f_{-i}(x_j)||^2``
  (:func:`lit_info.info.functional_si`).

Everything is exact for the linearized model (conventions in :mod:`lit_info.info.sample_info`;
leave-one-out problems use the mean over the ``n - 1`` remaining samples by default). The
Jacobian is taken in eval mode (BatchNorm frozen at its running statistics, dropout off), and
``f0`` is the network's output at the linearization point.

Kernel (``kernel``): ``"structured"`` (:func:`lit_info.info.structured_ntk_pair`) builds the
empirical NTK of ``nn.Linear`` layers from their inputs and output gradients, without their
Jacobian (other parameters, e.g. convolutions and BatchNorm, through their exact Jacobian);
``"jacobian"`` materializes the full Jacobian (the only choice with a random sketch);
``"auto"`` (default) picks ``"structured"`` unless ``sketch_dim`` is set. Both give the same
kernel up to rounding.

Precision (``feature_dtype``): the kernel algebra is float64 either way. With ``"float64"``
(default) the kernel features too (the outputs ``f0``, the Jacobian, or the structured kernel's
layer inputs and output gradients) come from a float64 copy of the network on float64 inputs
(the training model keeps its dtype), so the results are exact to float64 rounding: the same,
to about 1e-12 relative, whatever the BLAS kernels, the thread count or the DDP sharding. The
copy holds the parameters and buffers once more in float64 (twice their float32 memory, e.g.
90 MB for ResNet-18) and the activations and Jacobian chunks take twice their float32 memory;
float64 is about 2x slower on CPUs, and far slower on GPUs with little float64 throughput.
``"network"`` computes the features in the network's own dtype (cast to float64 only for the
algebra): cheaper, but then float32 rounding shows in SI and F-SI (about 1e-6 relative, varying
with the machine's BLAS and with the sharding).

Cost: the Jacobian holds ``n k p`` numbers (or ``n k sketch_dim`` with a random sketch; the
structured kernel keeps only ``n k`` numbers per Linear output unit and per input unit, plus the
Jacobian of the non-Linear parameters); the leave-one-out needs one eigendecomposition of the
``n k x n k`` kernel, ``O((n k)^3)`` (``O(n (n k)^3)`` only for infinite time with ``lam = 0``),
hence ``max_train_samples``.

Distributed training: every rank computes the outputs (and, for ``kernel="jacobian"``, the
Jacobian rows) of its shard of the training set (and of the F-SI set) under a
``DistributedSampler(shuffle=False)``; the shards are gathered by sample index (padding
deduplicated) so every rank holds the full Jacobian. The structured kernel instead gathers the
inputs of the shards by index, and rank zero computes the kernel from all inputs. The kernel
algebra then runs on rank zero only and its per-sample results are broadcast, so every rank ends
with the same ``results`` as a single-process run on the same weights.

``targets="binary"`` (two classes only) linearizes the logit difference ``f_1 - f_0`` (one
output) with targets ``+1`` (given label 1) and ``-1`` (given label 0), the difference of the
one-hot targets; ``"onehot"`` (default, any number of classes) uses all ``k`` logits.

Mislabeled samples (``detection_score``): large F-SI flags samples whose given label surprises
the others. ``"fsi_confidence"`` adds the network's own view: the cross-entropy ``loss`` of the
given label under the training model as it is when computing (``pl_module.net``, eval mode;
with ``linearize_at="initial"`` at the end of fitting: the trained network, while F-SI comes
from the initialization) and the score ``detection = (rank(fsi) + rank(loss)) / (2 n)``
(average ranks, ``1/n`` to ``1``). ``"loo_margin"`` needs no trained network: the leave-one-out
solutions behind F-SI also give each sample's prediction by the linearized network trained
*without* it, an out-of-sample confidence without cross-validation
(:func:`lit_info.callbacks.detection.leave_one_out_margin`; column ``loo_margin``, the margin
of the given label, and ``detection = -loo_margin``). On MNIST 4 vs 9 with 10% flipped labels
(``benchmarks/sui_detection.py``: 1000 samples, 3 draws) the AUC-ROC at initialization is 0.984
for ``"fsi"`` and 0.990 for ``"loo_margin"`` (in about 1 s), against 0.988 for cleanlab on
5-fold cross-validated probabilities of the same MLP (12 min on a CPU) and 0.988 for
``"fsi_confidence"`` (with the trained network's loss).

After each computation rank zero prints a summary (rows written, the file, mean F-SI of
corrupted vs clean samples and, where corrupted samples are known, the AUC-ROC of F-SI, SI and
the detection score) through Lightning's ``rank_zero_info``.
"""

from __future__ import annotations

import copy
import csv
import math
import numbers
import os
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import Dataset

from lit_info.callbacks.detection import auroc, leave_one_out_margin, rank_mean
from lit_info.checkpoints import load_state_dict_from_checkpoint
from lit_info.dist import gather_by_index, local_log_dir, rank_shard_loader, world_size
from lit_info.info import (
    empirical_ntk,
    functional_si,
    leave_one_out_differences,
    network_jacobian,
    smooth_unique_information,
    structured_ntk_pair,
    weight_si,
)
from lit_info.info.jacobian import SKETCH_TYPES
from lit_info.info.linearized import resolve_mode

__all__ = ["SampleInformation"]

_FSI_SPLITS = ("val", "test")
_TARGETS = ("onehot", "binary")
_KERNELS = ("auto", "structured", "jacobian")
_LINEARIZE_AT = ("current", "initial")
_FEATURE_DTYPES = ("float64", "network")
_DETECTION_SCORES = ("fsi", "fsi_confidence", "loo_margin")


class _LogitDifference(nn.Module):
    """The logit difference ``f_1 - f_0`` (shape ``(N, 1)``) of a two-output network."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        """Compute ``f_1(x) - f_0(x)``.

        Args:
            x: Inputs ``(N, ...)``.

        Returns:
            Tensor of shape ``(N, 1)``.
        """
        out = self.net(x)
        return out[:, 1:] - out[:, :1]


def _to_network(x: Tensor, net: nn.Module, device: torch.device) -> Tensor:
    """Move a batch to ``device`` and floating inputs to the dtype of the network's weights."""
    x = x.to(device)
    if x.is_floating_point():
        dtypes = [p.dtype for p in net.parameters() if p.is_floating_point()]
        if dtypes and x.dtype != dtypes[0]:
            x = x.to(dtypes[0])
    return x


def _positive_int_or_none(value: object, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


class SampleInformation(pl.Callback):
    """Compute SI and F-SI of every training sample of a linearized network.

    Args:
        every_n_epochs: Compute at the end of every this-many training epochs (None: never).
        every_n_train_steps: Compute after every this-many optimizer steps (None: never); needs
            ``{step}`` in ``filename``.
        on_fit_end: Compute once more when fitting ends (skipped if the last epoch was just done).
        reference_checkpoint: A Lightning checkpoint whose ``net.`` weights give the
            linearization point (e.g. pretrained weights); None: see ``linearize_at``.
        linearize_at: Without ``reference_checkpoint``: ``"current"`` linearizes
            ``pl_module.net`` as it is when computing; ``"initial"`` linearizes the weights it
            had when fitting started (the paper's setting: the linearized model trained from
            ``w0`` for ``t`` steps predicts the information of the real training run). The
            initial weights are kept in the callback's checkpoint state, so a resumed run
            linearizes the same ``w0``.
        eta: Learning rate of the linearized training (unused for infinite time).
        t: Steps (``"discrete"``) or time (``"continuous"``); None or ``math.inf`` means infinite
            time (then ``mode`` is ignored).
        mode: ``"discrete"``, ``"continuous"`` or ``"infinite"``.
        lam: L2 regularization toward the linearization point.
        sigma2: Variance of the Gaussian smoothing: ``1/(2 sigma2)`` factor of SI and F-SI.
        sketch_dim: Project the parameter dimension to this many random directions (None: exact).
        sketch_seed: Seed of that projection.
        sketch_type: Kind of projection: ``"gaussian"`` (default; dense, ``p x sketch_dim``
            random normals per Jacobian chunk) or ``"countsketch"`` (one bucket and sign per
            parameter, ``O(p)`` per Jacobian row: use it for large networks); see
            :mod:`lit_info.info.jacobian`. Unused without ``sketch_dim``.
        max_train_samples: Refuse training sets larger than this (None: no limit); the
            leave-one-out needs an eigendecomposition of the ``n k x n k`` kernel (``O((n k)^3)``
            time, ``(n k)^2`` memory; the infinite-time ``lam = 0`` case ``O(n (n k)^3)``).
        fsi_split: Inputs of F-SI: ``"val"`` (validation set) or ``"test"``.
        targets: ``"onehot"`` or ``"binary"`` (two classes; see the module docstring).
        loo_normalization: ``"remaining"`` or ``"original"`` (see
            :mod:`lit_info.info.sample_info`).
        jacobian_chunk_size: Samples per vectorized Jacobian call (and per forward/backward pass
            of the structured kernel).
        log_images: Log a grid of the 8 most and 8 least informative (by F-SI) training images.
        filename: CSV name pattern in ``trainer.log_dir`` with an ``{epoch}`` and/or ``{step}``
            (global step) field; None
            disables the CSV.
        kernel: How the empirical NTK is computed: ``"structured"``, ``"jacobian"`` or
            ``"auto"`` (structured unless ``sketch_dim`` is set); see the module docstring.
        feature_dtype: Dtype of the kernel features (``f0``, Jacobian, layer inputs and output
            gradients): ``"float64"`` (default; from a float64 copy of the network, exact to
            float64 rounding, twice the parameter memory) or ``"network"`` (the network's own
            dtype, e.g. float32: cheaper, float32 rounding in the results); see the module
            docstring.
        detection_score: Score for flagging mislabeled samples, used in the printed AUC:
            ``"fsi"`` (default; F-SI itself, no extra columns) or ``"fsi_confidence"`` (the mean
            normalized rank of F-SI and of the network's cross-entropy on the given label; adds
            the columns ``loss`` and ``detection`` to the results and the CSV; one more forward
            pass over the training set) or ``"loo_margin"`` (minus the margin of the given label
            under the linearized network trained without the sample; adds ``loo_margin`` and
            ``detection``). See the module docstring.

    Attributes:
        results: After a computation: ``index``, ``label`` (clean), ``given_label``,
            ``corrupted``, ``si``, ``fsi`` (float64), ordered by training-sample index, plus
            ``epoch`` and ``step`` (ints); with ``detection_score="fsi_confidence"`` also
            ``loss`` and ``detection``, with ``"loo_margin"`` ``loo_margin`` and ``detection``
            (float64).

    Raises:
        ValueError: If an argument is invalid (the message names it).
    """

    def __init__(
        self,
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        on_fit_end: bool = True,
        reference_checkpoint: str | None = None,
        eta: float | None = 0.1,
        t: float | None = None,
        mode: str = "discrete",
        lam: float = 1e-3,
        sigma2: float = 1.0,
        sketch_dim: int | None = None,
        sketch_seed: int = 0,
        max_train_samples: int | None = 2000,
        fsi_split: str = "val",
        targets: str = "onehot",
        loo_normalization: str = "remaining",
        jacobian_chunk_size: int = 64,
        log_images: bool = True,
        filename: str | None = "sample_information_epoch{epoch}.csv",
        kernel: str = "auto",
        linearize_at: str = "current",
        sketch_type: str = "gaussian",
        feature_dtype: str = "float64",
        detection_score: str = "fsi",
    ) -> None:
        super().__init__()
        _positive_int_or_none(every_n_epochs, "every_n_epochs")
        _positive_int_or_none(every_n_train_steps, "every_n_train_steps")
        _positive_int_or_none(sketch_dim, "sketch_dim")
        _positive_int_or_none(max_train_samples, "max_train_samples")
        _positive_int_or_none(jacobian_chunk_size, "jacobian_chunk_size")
        if not isinstance(on_fit_end, bool):
            raise ValueError(f"on_fit_end must be True or False, got {on_fit_end!r}")
        if every_n_epochs is None and every_n_train_steps is None and not on_fit_end:
            raise ValueError(
                "nothing to do: set every_n_epochs, every_n_train_steps and/or on_fit_end=True"
            )
        resolve_mode(mode, eta, t)  # validates mode, eta, t
        if not isinstance(lam, numbers.Real) or not lam >= 0 or math.isinf(lam):
            raise ValueError(f"lam must be a non-negative finite number, got {lam!r}")
        if not isinstance(sigma2, numbers.Real) or not sigma2 > 0 or math.isinf(sigma2):
            raise ValueError(f"sigma2 must be a positive finite number, got {sigma2!r}")
        if fsi_split not in _FSI_SPLITS:
            raise ValueError(f"fsi_split must be one of {_FSI_SPLITS}, got {fsi_split!r}")
        if targets not in _TARGETS:
            raise ValueError(f"targets must be one of {_TARGETS}, got {targets!r}")
        if loo_normalization not in ("remaining", "original"):
            raise ValueError(
                f"loo_normalization must be 'remaining' or 'original', got {loo_normalization!r}"
            )
        if isinstance(sketch_seed, bool) or not isinstance(sketch_seed, int):
            raise ValueError(f"sketch_seed must be an integer, got {sketch_seed!r}")
        if not isinstance(sketch_type, str) or sketch_type not in SKETCH_TYPES:
            raise ValueError(f"sketch_type must be one of {SKETCH_TYPES}, got {sketch_type!r}")
        if reference_checkpoint is not None and not Path(reference_checkpoint).is_file():
            raise FileNotFoundError(f"reference_checkpoint not found: {reference_checkpoint}")
        if filename is not None and "{epoch}" not in filename and "{step}" not in filename:
            raise ValueError(f"filename must contain '{{epoch}}' or '{{step}}', got {filename!r}")
        if filename is not None and every_n_train_steps is not None and "{step}" not in filename:
            raise ValueError(
                "every_n_train_steps writes one CSV per step: filename needs a '{step}' field, "
                f"e.g. 'sample_information_step{{step}}.csv'; got {filename!r}"
            )
        if not isinstance(kernel, str) or kernel not in _KERNELS:
            raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
        if kernel == "structured" and sketch_dim is not None:
            raise ValueError(
                "kernel='structured' computes the exact kernel: it cannot use sketch_dim; "
                "use kernel='jacobian' (or 'auto') with a sketch"
            )
        if linearize_at not in _LINEARIZE_AT:
            raise ValueError(f"linearize_at must be one of {_LINEARIZE_AT}, got {linearize_at!r}")
        if not isinstance(feature_dtype, str) or feature_dtype not in _FEATURE_DTYPES:
            raise ValueError(
                f"feature_dtype must be one of {_FEATURE_DTYPES}, got {feature_dtype!r}"
            )
        if not isinstance(detection_score, str) or detection_score not in _DETECTION_SCORES:
            raise ValueError(
                f"detection_score must be one of {_DETECTION_SCORES}, got {detection_score!r}"
            )
        if linearize_at == "initial" and reference_checkpoint is not None:
            raise ValueError(
                "give either reference_checkpoint or linearize_at='initial', not both: both "
                "choose the linearization point"
            )
        self.every_n_epochs = every_n_epochs
        self.every_n_train_steps = every_n_train_steps
        self.on_fit_end_enabled = on_fit_end
        self.reference_checkpoint = reference_checkpoint
        self.eta = eta
        self.t = t
        self.mode = mode
        self.lam = float(lam)
        self.sigma2 = float(sigma2)
        self.sketch_dim = sketch_dim
        self.sketch_seed = sketch_seed
        self.sketch_type = sketch_type
        self.max_train_samples = max_train_samples
        self.fsi_split = fsi_split
        self.targets = targets
        self.loo_normalization = loo_normalization
        self.jacobian_chunk_size = jacobian_chunk_size
        self.log_images = log_images
        self.filename = filename
        self.kernel = kernel
        self.linearize_at = linearize_at
        self.feature_dtype = feature_dtype
        self.detection_score = detection_score
        self._initial_state: dict[str, Tensor] | None = None
        self.results: dict[str, Tensor | int] = {}
        self._last_global_step: int | None = None

    @property
    def kernel_method(self) -> str:
        """The kernel actually used: ``"structured"`` or ``"jacobian"`` (``"auto"`` resolved)."""
        if self.kernel == "auto":
            return "structured" if self.sketch_dim is None else "jacobian"
        return self.kernel

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Remember the initial weights (``linearize_at="initial"``; kept on resume)."""
        if self.linearize_at == "initial" and self._initial_state is None:
            self._initial_state = {
                name: value.detach().cpu().clone()
                for name, value in pl_module.net.state_dict().items()
            }

    @property
    def state_key(self) -> str:
        """Checkpoint key, unique per configuration so several instances can coexist."""
        return self._generate_state_key(
            every_n_epochs=self.every_n_epochs,
            every_n_train_steps=self.every_n_train_steps,
            on_fit_end=self.on_fit_end_enabled,
            reference_checkpoint=self.reference_checkpoint,
            linearize_at=self.linearize_at,
            eta=self.eta,
            t=self.t,
            mode=self.mode,
            lam=self.lam,
            kernel=self.kernel,
            sketch_dim=self.sketch_dim,
            # only when not the default, so the keys of existing checkpoints stay the same
            **({} if self.sketch_type == "gaussian" else {"sketch_type": self.sketch_type}),
            **({} if self.detection_score == "fsi" else {"detection": self.detection_score}),
            **({} if self.feature_dtype == "float64" else {"feature_dtype": self.feature_dtype}),
            targets=self.targets,
            filename=self.filename,
        )

    def state_dict(self) -> dict[str, object]:
        """Checkpoint state: the initial weights for ``linearize_at="initial"``."""
        return {"initial_state": self._initial_state}

    def load_state_dict(self, state_dict: dict[str, object]) -> None:
        """Restore the initial weights saved by :meth:`state_dict`."""
        initial = state_dict.get("initial_state")
        if initial is not None:
            self._initial_state = initial

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
    ) -> None:
        """Compute every ``every_n_train_steps`` optimizer steps."""
        step = trainer.global_step
        if self.every_n_train_steps is None or step == 0 or step % self.every_n_train_steps:
            return
        if self._last_global_step == step:  # gradient accumulation: same step, later batch
            return
        self.run(trainer, pl_module, epoch=trainer.current_epoch, log_step=step)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Compute at the configured epochs."""
        if trainer.sanity_checking or self.every_n_epochs is None:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if self._last_global_step == trainer.global_step:  # just done by every_n_train_steps
            return
        self.run(trainer, pl_module, epoch=trainer.current_epoch)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Compute at the end of fitting (unless the last epoch's results are current)."""
        if not self.on_fit_end_enabled or self._last_global_step == trainer.global_step:
            return
        self.run(trainer, pl_module, epoch=max(trainer.current_epoch - 1, 0))

    # ------------------------------------------------------------ computation
    def run(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        epoch: int,
        log_step: int | None = None,
    ) -> None:
        """Compute, store in :attr:`results`, write the CSV and log (rank zero).

        Args:
            trainer: The trainer (its datamodule provides the data).
            pl_module: The module; its ``net`` is linearized unless ``reference_checkpoint``.
            epoch: Epoch number used in the CSV name and (by default) as the logging step.
            log_step: TensorBoard step (default: ``epoch``); the step-triggered runs use the
                global step.
        """
        with torch.inference_mode(False), torch.enable_grad():
            results = self.compute(trainer, pl_module)
        results["epoch"] = epoch
        results["step"] = trainer.global_step
        self.results = results
        self._last_global_step = trainer.global_step
        if trainer.is_global_zero:
            path = self._write_csv(trainer, epoch)
            self._log(trainer, epoch if log_step is None else log_step)
            rank_zero_info(self.summary(path))

    def _datamodule(self, trainer: pl.Trainer) -> object:
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "train_eval_dataloader"):
            raise RuntimeError(
                "SampleInformation needs a datamodule with train_eval_dataloader() (e.g. "
                f"lit_info.data.NoisyImageDataModule); got {type(dm).__name__}"
            )
        return dm

    def _fsi_dataset(self, dm: object) -> Dataset:
        if self.fsi_split == "val":
            loader = dm.val_dataloader()
            if isinstance(loader, list) or len(loader.dataset) == 0:
                raise ValueError(
                    "fsi_split='val' but the datamodule has no validation set (val_size=0); "
                    "use fsi_split='test' or a validation set"
                )
        else:
            loader = dm.test_dataloader()
        return loader.dataset

    def _network(self, pl_module: pl.LightningModule) -> nn.Module:
        net = pl_module.net
        if self.linearize_at == "initial":
            if self._initial_state is None:
                raise RuntimeError(
                    "linearize_at='initial' but no initial weights were recorded: the callback "
                    "records them in on_fit_start, so compute inside trainer.fit"
                )
            ref = copy.deepcopy(net)
            ref.load_state_dict(self._initial_state)
            return ref
        if self.reference_checkpoint is None:
            return net
        ref = copy.deepcopy(net)
        ref.load_state_dict(load_state_dict_from_checkpoint(self.reference_checkpoint))
        return ref

    def _feature_network(self, net: nn.Module, model_net: nn.Module) -> nn.Module:
        """The network whose outputs and derivatives give the kernel features.

        Args:
            net: The network to linearize (from :meth:`_network`).
            model_net: The training model's network, never modified: for
                ``feature_dtype="float64"`` it is copied, while a ``net`` that is already a copy
                (reference or initial weights) is converted in place.

        Returns:
            ``net`` for ``feature_dtype="network"`` or if it is float64 already, else a float64
            version of it (without gradients).
        """
        floating = [t for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()]
        if self.feature_dtype == "network" or all(t.dtype == torch.float64 for t in floating):
            return net
        if net is model_net:
            net = copy.deepcopy(net)
        for param in net.parameters():
            param.grad = None  # the copy needs no gradients (they would be converted too)
        return net.to(torch.float64)

    def _shard_data(
        self,
        trainer: pl.Trainer,
        net: nn.Module,
        dataset: Dataset,
        batch_size: int,
        device,
        jacobian: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per-sample rows, outputs ``(n, k)`` and labels ``(n,)`` of a dataset, on all ranks.

        The rows are the Jacobian ``(n, k, d)`` if ``jacobian``, else the inputs ``(n, ...)``;
        everything is gathered by sample index (the sampler's padding removed).
        """
        loader = rank_shard_loader(dataset, trainer.world_size, trainer.global_rank, batch_size)
        rows, outs, labels, indices = [], [], [], []
        was_training = net.training
        net.eval()
        try:
            for x, y, index in loader:
                x = _to_network(x, net, device)
                if jacobian:
                    jac = network_jacobian(
                        net,
                        x,
                        chunk_size=self.jacobian_chunk_size,
                        sketch_dim=self.sketch_dim,
                        sketch_seed=self.sketch_seed,
                        sketch_type=self.sketch_type,
                    )
                    rows.append(jac.reshape(jac.shape[0], -1))
                else:
                    rows.append(x)
                with torch.no_grad():
                    out = net(x)
                if out.ndim == 1:
                    out = out[:, None]
                outs.append(out.detach())
                labels.append(torch.as_tensor(y, device=device).long())
                indices.append(torch.as_tensor(index, device=device).long())
        finally:
            net.train(was_training)
        n = len(dataset)
        index = torch.cat(indices)
        out = gather_by_index(index, torch.cat(outs), n)
        k = out.shape[1]
        gathered = gather_by_index(index, torch.cat(rows), n)
        if jacobian:
            gathered = gathered.reshape(n, k, -1)
        label = gather_by_index(index, torch.cat(labels), n)
        return gathered, out, label

    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Tensor]:
        """Per-sample SI and F-SI of the training set (identical on every rank).

        Args:
            trainer: The trainer (datamodule, world size and rank).
            pl_module: The module with the network ``net``.

        Returns:
            ``index``, ``label``, ``given_label``, ``corrupted``, ``si``, ``fsi`` on the CPU.

        Raises:
            ValueError: If the training set exceeds ``max_train_samples`` or the targets do not
                fit the network.
        """
        dm = self._datamodule(trainer)
        train_set = dm.train_eval_dataloader().dataset
        n = len(train_set)
        if self.max_train_samples is not None and n > self.max_train_samples:
            raise ValueError(
                f"the training set has {n} samples, more than max_train_samples="
                f"{self.max_train_samples}: the leave-one-out eigendecomposes the (n k) x (n k) "
                "kernel; raise max_train_samples (or use train_subset) to go ahead"
            )
        if n < 2:
            raise ValueError(f"sample information needs at least 2 training samples, got {n}")
        fsi_set = self._fsi_dataset(dm)
        batch = getattr(dm, "eval_batch_size", 256)
        device = pl_module.device
        net = self._feature_network(self._network(pl_module).to(device), pl_module.net)
        use_jacobian = self.kernel_method == "jacobian"
        # structured: the inputs themselves (gathered by index) instead of Jacobians
        rows, f0, given = self._shard_data(trainer, net, train_set, batch, device, use_jacobian)
        rows_v, _, _ = self._shard_data(trainer, net, fsi_set, batch, device, use_jacobian)
        num_outputs = f0.shape[1]
        kernel_net = net
        if self.targets == "binary":
            if num_outputs != 2:
                raise ValueError(
                    f"targets='binary' needs a network with 2 outputs, got {num_outputs}"
                )
            if use_jacobian:
                rows, rows_v = rows[:, 1:] - rows[:, :1], rows_v[:, 1:] - rows_v[:, :1]
            else:
                kernel_net = _LogitDifference(net)
            f0 = f0[:, 1:] - f0[:, :1]
            y = (2.0 * given.to(torch.float64) - 1.0)[:, None]
        else:
            if int(given.max()) >= num_outputs:
                raise ValueError(
                    f"labels go up to {int(given.max())} but the network has {num_outputs} outputs"
                )
            y = F.one_hot(given, num_outputs).to(torch.float64)
        columns = 3 if self.detection_score == "loo_margin" else 2
        values = torch.zeros(n, columns, dtype=torch.float64, device=device)
        if trainer.is_global_zero:
            if use_jacobian:
                values = self.sample_information(rows, f0, y, rows_v)
            else:
                theta, theta_v = structured_ntk_pair(
                    kernel_net, rows, rows_v, chunk_size=self.jacobian_chunk_size
                )
                values = self.sample_information_from_kernels(theta, f0, y, theta_v)
            values = values.to(device)
        if world_size() > 1:
            if dist.get_backend() == "nccl" and values.device.type != "cuda":
                values = values.to(torch.device("cuda", torch.cuda.current_device()))
            dist.broadcast(values, src=0)
        values = values.cpu()
        given = given.cpu()
        clean = getattr(dm, "train_clean_labels", None)
        clean = given.clone() if clean is None else torch.as_tensor(clean).long().cpu()
        results = {
            "index": torch.arange(n),
            "label": clean,
            "given_label": given,
            "corrupted": clean != given,
            "si": values[:, 0],
            "fsi": values[:, 1],
        }
        if self.detection_score == "fsi_confidence":
            loss = self._given_label_loss(trainer, pl_module, train_set, batch, device)
            results["loss"] = loss
            results["detection"] = rank_mean(results["fsi"], loss)
        elif self.detection_score == "loo_margin":
            results["loo_margin"] = values[:, 2]
            results["detection"] = -values[:, 2]
        return results

    def _given_label_loss(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        train_set: Dataset,
        batch_size: int,
        device: torch.device,
    ) -> Tensor:
        """Cross-entropy of the given labels under the training model (eval mode).

        Returns:
            ``-log softmax(f(x_i))[given_i]`` per training sample, float64 on the CPU, the same
            on every rank (gathered by index).
        """
        _, logits, given = self._shard_data(
            trainer, pl_module.net, train_set, batch_size, device, jacobian=False
        )
        logits = logits.to(torch.float64)
        if logits.shape[1] < 2 or int(given.max()) >= logits.shape[1]:
            raise ValueError(
                "detection_score='fsi_confidence' needs class logits: the network has "
                f"{logits.shape[1]} outputs for labels up to {int(given.max())}"
            )
        return F.cross_entropy(logits, given, reduction="none").cpu()

    def sample_information(
        self, jacobian: Tensor, f0: Tensor, targets: Tensor, jacobian_fsi: Tensor
    ) -> Tensor:
        """The kernel algebra: ``(n, 2)`` float64 columns SI and F-SI.

        Args:
            jacobian: Train Jacobian ``(n, k, d)`` at the linearization point.
            f0: Train outputs ``(n, k)`` at the linearization point.
            targets: Regression targets ``(n, k)``.
            jacobian_fsi: Jacobian ``(v, k, d)`` of the F-SI inputs.

        Returns:
            float64 tensor ``(n, 2)``.
        """
        theta = empirical_ntk(jacobian, dtype=torch.float64)
        theta_v = empirical_ntk(jacobian_fsi, jacobian, dtype=torch.float64)
        return self.sample_information_from_kernels(theta, f0, targets, theta_v)

    def sample_information_from_kernels(
        self, theta: Tensor, f0: Tensor, targets: Tensor, theta_fsi: Tensor
    ) -> Tensor:
        """The kernel algebra from the kernels: ``(n, 2)`` float64 columns SI and F-SI.

        With ``detection_score="loo_margin"`` a third column: the leave-one-out margin of the
        given label (:func:`lit_info.callbacks.detection.leave_one_out_margin`).

        Args:
            theta: Train kernel ``(n k, n k)`` (float64) at the linearization point.
            f0: Train outputs ``(n, k)`` at the linearization point.
            targets: Regression targets ``(n, k)``.
            theta_fsi: Kernel ``(v k, n k)`` between the F-SI inputs and the training set.

        Returns:
            float64 tensor ``(n, 2)`` (``(n, 3)`` with ``detection_score="loo_margin"``).
        """
        residual = f0.to(torch.float64) - targets.to(torch.float64)
        if self.detection_score == "loo_margin":  # the same composition, keeping the solutions
            beta, delta = leave_one_out_differences(
                theta,
                residual,
                eta=self.eta,
                t=self.t,
                lam=self.lam,
                mode=self.mode,
                loo_normalization=self.loo_normalization,
            )
            si = weight_si(theta, delta, self.sigma2)
            fsi = functional_si(theta_fsi, delta, self.sigma2)
            margin = leave_one_out_margin(theta, f0, targets, beta, delta)
            return torch.stack([si, fsi, margin], dim=1)
        si, fsi = smooth_unique_information(
            theta,
            residual,
            theta_fsi,
            eta=self.eta,
            t=self.t,
            lam=self.lam,
            mode=self.mode,
            sigma2=self.sigma2,
            loo_normalization=self.loo_normalization,
        )
        return torch.stack([si, fsi], dim=1)

    # ---------------------------------------------------------------- outputs
    def _write_csv(self, trainer: pl.Trainer, epoch: int) -> Path | None:
        """Write :attr:`results` atomically; return the file (None: no CSV)."""
        log_dir = local_log_dir(trainer)
        if self.filename is None or log_dir is None:
            return None
        name = self.filename.format(epoch=epoch, step=trainer.global_step)
        path = log_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        r = self.results
        extra = [k for k in ("loss", "loo_margin", "detection") if k in r]  # detection_score
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "label", "given_label", "corrupted", "si", "fsi", *extra])
            for row in zip(
                r["index"].tolist(),
                r["label"].tolist(),
                r["given_label"].tolist(),
                r["corrupted"].int().tolist(),
                r["si"].tolist(),
                r["fsi"].tolist(),
                *(r[key].tolist() for key in extra),
                strict=True,
            ):
                writer.writerow([*row[:4], *(repr(value) for value in row[4:])])
        os.replace(tmp, path)
        return path

    def summary(self, path: Path | None = None) -> str:
        """One line about the last computation (printed by rank zero after each one).

        Args:
            path: The CSV written (None: none was).

        Returns:
            Rows and file, mean F-SI of corrupted vs clean samples and, if some samples are
            known to be corrupted (and some clean), the AUC-ROC of F-SI, SI and (with
            ``detection_score="fsi_confidence"``) the detection score for flagging them.
        """
        r = self.results
        n = len(r["fsi"])
        where = f"{n} rows written to {path}" if path is not None else f"{n} samples (no CSV)"
        text = f"SampleInformation epoch {r['epoch']} step {r['step']}: {where}"
        corrupted = r["corrupted"]
        n_bad = int(corrupted.sum())
        if n_bad == 0 or n_bad == n:
            return f"{text}; mean F-SI {float(r['fsi'].mean()):.4g}; {n_bad} known corrupted"
        text += (
            f"; mean F-SI corrupted {float(r['fsi'][corrupted].mean()):.4g} ({n_bad}) vs clean "
            f"{float(r['fsi'][~corrupted].mean()):.4g} ({n - n_bad})"
        )
        aucs = {name: auroc(r[key], corrupted) for name, key in self._auc_scores().items()}
        return text + "; AUC-ROC " + ", ".join(f"{k} {v:.4f}" for k, v in aucs.items())

    def _auc_scores(self) -> dict[str, str]:
        """Printed / logged name -> results key of the scores whose AUC-ROC is reported."""
        scores = {"F-SI": "fsi", "SI": "si"}
        if "detection" in self.results:
            scores[self.detection_score] = "detection"
        return scores

    def _log(self, trainer: pl.Trainer, epoch: int) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        writer = loggers[0].experiment
        r = self.results
        writer.add_histogram("sample_info/si", r["si"], epoch)
        writer.add_histogram("sample_info/fsi", r["fsi"], epoch)
        dm = trainer.datamodule
        if getattr(dm, "train_clean_labels", None) is not None:
            corrupted = r["corrupted"]
            if bool(corrupted.any()):
                writer.add_scalar(
                    "sample_info/mean_fsi_corrupted", float(r["fsi"][corrupted].mean()), epoch
                )
            if bool((~corrupted).any()):
                writer.add_scalar(
                    "sample_info/mean_fsi_clean", float(r["fsi"][~corrupted].mean()), epoch
                )
            if bool(corrupted.any()) and bool((~corrupted).any()):
                for key in self._auc_scores().values():
                    writer.add_scalar(f"sample_info/auc_{key}", auroc(r[key], corrupted), epoch)
        if self.log_images:
            self._log_images(writer, dm, epoch)

    def _log_images(self, writer: object, dm: object, epoch: int) -> None:
        from torchvision.utils import make_grid

        dataset = dm.train_eval_dataloader().dataset
        order = torch.argsort(self.results["fsi"], descending=True)
        count = min(8, len(order))
        chosen = torch.cat([order[:count], order[-count:]]).tolist()
        images = [torch.as_tensor(dataset[i][0]).float().cpu() for i in chosen]
        if images[0].ndim != 3:
            return  # not (C, H, W) images
        grid = make_grid(torch.stack(images), nrow=count, normalize=True, scale_each=True)
        writer.add_image("sample_info/most_least_informative", grid, epoch)
