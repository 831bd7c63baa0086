r"""MinSyn: synergy-minimizing representations (Ver Steeg et al., arXiv 1710.03839), and a beta-VAE.

:class:`MinSyn` learns ``n_factors`` factors ``Y_j = g_j(X) + N(0, 1)`` of images ``X`` (the
pixels, standardized) by maximizing the closed-form objective of
:func:`lit_info.info.minsyn.minsyn_objective`:

``sum_i [(1 - lam) I(X_i; Y) + lam I_CI(X_i; Y)] - sum_j I(Y_j; X)``,

where ``I(X_i; Y)`` is what the best linear decoder of pixel ``i`` keeps, ``I_CI`` the lower
bound kept by the *conditionally independent* decoder (the factors combined as if independent
given ``X_i``), and ``I(Y_j; X)`` the cost of each factor. ``lam = synergy_weight`` sets how much
of the synergy ``I - I_CI >= 0`` is penalized: ``lam = 1`` is MinSyn, which for a linear encoder
*is* linear CorEx with its non-synergistic constraint on (the paper's starting point: the same
bound as :class:`~lit_info.methods.corex_module.CorexModule`); ``lam = 0`` is the exact
objective ``TC(X) - TC(X | Y) - TC(Y)``, which rewards informative *independent* factors (the
"independence" comparison).

Why this objective for the nonlinear encoder (the paper publishes no nonlinear training code).
The issue offered two penalties, a KL between a decoder's prediction and the CI prediction, or
the whole-minus-sum synergy of Gaussianized factors. Whole-minus-sum synergy
``I(X_i; Y) - sum_j I(X_i; Y_j)`` is negative for redundant factors, so penalizing it pays the
encoder to duplicate factors; ``I - I_CI`` is the information only a synergistic decoder can
read, is never negative, and needs no decoder network: for Gaussian moments it is the
difference of two closed forms of the same batch statistics (``rho``, ``R_y``, ``u``), so one
formula serves the linear and nonlinear encoders, and ``lam = 1`` turns the nonlinear loss into
CorEx's bound on the network's factors. Each term is an estimate from the batch's second
moments: the decoder terms are lower bounds on the information for any encoder, and
``-1/2 log(1 - u_j)`` is the Gaussian-channel upper bound on ``I(Y_j; X)``, so the objective is
a lower bound on ``sum_i I_CI(X_i; Y) - sum_j I(Y_j; X)``. The penalty is annealed in:
``lam`` grows linearly from 0 to ``synergy_weight`` over ``synergy_warmup_epochs`` (the network
first learns informative factors, then is pushed to make them non-synergistic).

The linear encoder uses CorEx's free weights ``V`` (``W = V / sqrt(1 + v^T C v)``) and its
closed-form annealing noise (``anneal``, ``epochs_per_stage``: ``eps = 0.6^k``); the nonlinear
encoders (``mlp``, ``cnn``) take the raw images and train at ``eps = 0``.

Every batch is standardized by its own statistics
(:func:`~lit_info.info.minsyn.standardize_columns`: the bound needs ``|rho| < 1``); pixels
constant within a batch (the image background) drop out. Use large batches (the moments are
estimated from them); full batch when the training split fits.

Beyond one device: plain ``ddp`` splits the samples; each process computes the moments of its
own batch (a minibatch of the full-batch objective, as for ``CorexModule`` under ``ddp``) and
DDP averages the gradients; the disentanglement monitor encodes in shards and gathers, so its
scores equal those of one process (tested with 2 CPU processes). The images are small (28 x 84
pixels), so sharding the pixels, as ``CorexModule`` shards variables, is not offered.

Logged: ``train/objective`` (nats per pixel), ``train/synergy`` (mean ``I - I_CI`` per pixel),
``train/synergy_weight``, ``train/eps``, and the same objective and synergy of the validation
batches at ``lam = synergy_weight``, ``eps = 0`` (``val/objective``, ``val/synergy``). The
disentanglement scores come from
:class:`~lit_info.callbacks.disentanglement.DisentanglementMonitor`. ``predict`` returns each
sample's index and factors.

:class:`BetaVAE` (Higgins et al., ICLR 2017) is the generative baseline on the same data and
factor count: MLP encoder to a diagonal Gaussian posterior, MLP decoder with a Bernoulli
likelihood on pixels clipped to ``[0, 1]``, loss ``reconstruction + beta KL`` (summed over
pixels and factors, averaged over samples); its factors are the posterior means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_info.info.corex import corex_moments
from lit_info.info.minsyn import (
    ci_synergy,
    minsyn_objective,
    signal_moments,
    standardize_columns,
)
from lit_info.methods.corex_base import annealing_eps, check_integers, check_positive, require_hints
from lit_info.nets.mlp import MLP

__all__ = ["BetaVAE", "ConvEncoder", "MinSyn"]

Encoder = Literal["linear", "mlp", "cnn"]


class ConvEncoder(nn.Module):
    """Two strided convolutions and an MLP head: ``(N, C, H, W)`` images to ``(N, out)``.

    Args:
        input_shape: ``(C, H, W)``.
        out_features: outputs.
        hidden: widths of the fully connected layers after the convolutions.
        channels: output channels of the two 5x5, stride-2 convolutions.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        out_features: int,
        hidden: Sequence[int] = (256,),
        channels: tuple[int, int] = (16, 32),
    ) -> None:
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        self.convs = nn.Sequential(
            nn.Conv2d(c, channels[0], 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(channels[0], channels[1], 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            width = int(self.convs(torch.zeros(1, c, h, w)).shape[1])
        self.head = MLP(width, out_features, hidden=tuple(hidden))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, out_features)`` outputs of images ``x``."""
        return self.head(self.convs(x))


def _check_shape(owner: str, input_shape: Sequence[int] | None) -> tuple[int, int, int]:
    require_hints(owner, input_shape=input_shape)
    assert input_shape is not None
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{owner}: input_shape must be (channels, height, width), got {shape}")
    return shape  # type: ignore[return-value]


class _RepresentationSteps(pl.LightningModule):
    """Evaluation and prediction steps shared by the representation learners.

    A subclass defines ``encode(images)`` and ``_eval_step(batch, stage)``.
    """

    def encode(self, images: Tensor) -> Tensor:  # pragma: no cover - defined by subclasses
        """The factors ``(N, n_factors)`` of images ``(N, C, H, W)``."""
        raise NotImplementedError

    def _eval_step(self, batch: Any, stage: str) -> None:  # pragma: no cover - subclasses
        raise NotImplementedError

    def forward(self, images: Tensor) -> Tensor:
        """Alias of :meth:`encode`."""
        return self.encode(images)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """The model's held-out terms of a validation batch."""
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """The model's held-out terms of a test batch."""
        self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Per sample: its dataset index and factors."""
        return {"index": batch[-1], "factors": self.encode(batch[0])}


class MinSyn(_RepresentationSteps):
    """Synergy-minimizing factors of images: linear (= CorEx) or a network encoder.

    Args:
        input_shape: ``(C, H, W)`` of the images; filled in from the data, leave unset.
        n_factors: number of factors ``m``.
        encoder: linear (CorEx's weights), mlp or cnn.
        hidden: hidden widths of the mlp / of the cnn's head.
        synergy_weight: ``lam`` in ``[0, 1]``: 1 = MinSyn, 0 = the independence objective.
        synergy_warmup_epochs: ``lam`` grows linearly from 0 to ``synergy_weight`` over these
            epochs (0: ``synergy_weight`` from the start).
        anneal: linear encoder only: anneal the input noise ``eps`` through ``0.6^k``.
        epochs_per_stage: epochs per annealing stage.
        lr: Adam learning rate (the loss is the objective per pixel).
        weight_decay: Adam weight decay (network encoders).
        init_scale: linear encoder: initial signal share of each factor is about
            ``init_scale^2``.
    """

    def __init__(
        self,
        input_shape: Sequence[int] | None = None,
        n_factors: int = 12,
        encoder: Encoder = "linear",
        hidden: Sequence[int] = (256,),
        synergy_weight: float = 1.0,
        synergy_warmup_epochs: int = 0,
        anneal: bool = True,
        epochs_per_stage: int = 10,
        lr: float = 0.01,
        weight_decay: float = 0.0,
        init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        shape = _check_shape("MinSyn", input_shape)
        check_integers(
            ("n_factors", n_factors, 1),
            ("synergy_warmup_epochs", synergy_warmup_epochs, 0),
            ("epochs_per_stage", epochs_per_stage, 1),
        )
        if encoder not in ("linear", "mlp", "cnn"):
            raise ValueError(f"encoder must be 'linear', 'mlp' or 'cnn', got {encoder!r}")
        if not 0.0 <= synergy_weight <= 1.0:
            raise ValueError(f"synergy_weight must be in [0, 1], got {synergy_weight}")
        check_positive(lr=lr, init_scale=init_scale)
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.save_hyperparameters()
        self.input_shape = shape
        self.n_factors = int(n_factors)
        self.n_pixels = math.prod(shape)
        p, m = self.n_pixels, self.n_factors
        self.free_weights: nn.Parameter | None = None
        self.net: nn.Module | None = None
        if encoder == "linear":
            self.free_weights = nn.Parameter(torch.randn(m, p) * (init_scale / math.sqrt(p)))
        elif encoder == "mlp":
            self.net = MLP(p, m, hidden=tuple(hidden))
        else:
            self.net = ConvEncoder(shape, m, hidden=hidden)
        # the training split's pixel statistics, for encode(): set on the first fit
        self.register_buffer("mean", torch.zeros(p))
        self.register_buffer("scale", torch.ones(p))
        self.register_buffer("fitted_stats", torch.zeros((), dtype=torch.bool))

    # -- schedule ----------------------------------------------------------------------------------
    @property
    def eps(self) -> float:
        """The annealing noise of the current epoch (0 for network encoders)."""
        if self.free_weights is None:
            return 0.0
        hp = self.hparams
        return annealing_eps(self.current_epoch, hp.epochs_per_stage, hp.anneal)

    @property
    def current_synergy_weight(self) -> float:
        """``lam`` of the current epoch (the warm-up ramp, then ``synergy_weight``)."""
        hp = self.hparams
        if hp.synergy_warmup_epochs == 0:
            return float(hp.synergy_weight)
        ramp = min(1.0, self.current_epoch / hp.synergy_warmup_epochs)
        return float(hp.synergy_weight) * ramp

    # -- the model ---------------------------------------------------------------------------------
    def moments(self, images: Tensor, eps: float = 0.0) -> Any:
        """CorEx moments of the factors of a batch of images (standardized by themselves)."""
        if self.free_weights is not None:
            z = standardize_columns(images.flatten(1).to(self.free_weights.dtype))
            return corex_moments(z, self.free_weights, eps, free=True)
        assert self.net is not None
        signals = self.net(images)
        return signal_moments(standardize_columns(images.flatten(1).to(signals.dtype)), signals)

    def on_fit_start(self) -> None:
        """Record the training split's pixel mean and scale once (used by :meth:`encode`)."""
        if bool(self.fitted_stats) or self.free_weights is None:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if not hasattr(datamodule, "train_eval_dataloader"):
            raise ValueError(
                "MinSyn(encoder='linear') reads the training split's pixel statistics from a "
                "datamodule with train_eval_dataloader() (e.g. WordImageDataModule)"
            )
        loader = datamodule.train_eval_dataloader()  # type: ignore[union-attr]
        total = torch.zeros(self.n_pixels, dtype=torch.float64)
        squares = torch.zeros(self.n_pixels, dtype=torch.float64)
        n = 0
        for batch in loader:
            x = batch[0].flatten(1).double()
            total += x.sum(0)
            squares += (x * x).sum(0)
            n += x.shape[0]
        mean = total / n
        var = (squares / n - mean * mean).clamp_min(0.0)
        self.mean.copy_(mean.to(self.mean))
        # a pixel constant in training (background) is ignored: scale inf -> standardized 0
        scale = torch.where(var > 0, var.sqrt(), torch.full_like(var, math.inf))
        self.scale.copy_(scale.to(self.scale))
        self.fitted_stats.fill_(True)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """The factors (noise-free) of images ``(N, C, H, W)``: ``(N, n_factors)``.

        Linear: ``V (x - mean) / scale`` with the training split's pixel statistics (the
        factors up to a positive scale per factor, which no score depends on); network:
        ``g(x)``.
        """
        if self.free_weights is None:
            assert self.net is not None
            return self.net(images)
        v = self.free_weights
        return ((images.flatten(1).to(v.dtype) - self.mean) / self.scale) @ v.T

    # -- steps -------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """``-objective / pixels`` of the batch at the epoch's ``eps`` and ``lam``."""
        images = batch[0]
        n = int(images.shape[0])
        eps, lam = self.eps, self.current_synergy_weight
        moments = self.moments(images, eps)
        objective = minsyn_objective(moments, lam) / self.n_pixels
        synergy = ci_synergy(moments).mean()
        self.log("train/objective", objective, prog_bar=True, on_epoch=True, batch_size=n)
        self.log("train/synergy", synergy, on_epoch=True, batch_size=n)
        self.log("train/synergy_weight", lam, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/eps", eps, on_step=False, on_epoch=True, batch_size=n)
        return -objective

    def _eval_step(self, batch: Any, stage: str) -> None:
        images = batch[0]
        n = int(images.shape[0])
        if n < 2:
            return
        moments = self.moments(images, 0.0)
        objective = minsyn_objective(moments, float(self.hparams.synergy_weight))
        self.log(f"{stage}/objective", objective / self.n_pixels, batch_size=n, sync_dist=True)
        self.log(f"{stage}/synergy", ci_synergy(moments).mean(), batch_size=n, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam on the encoder's parameters."""
        hp = self.hparams
        return torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)


class BetaVAE(_RepresentationSteps):
    """beta-VAE with MLP encoder and decoder on images in ``[0, 1]`` (Bernoulli likelihood).

    Args:
        input_shape: ``(C, H, W)``; filled in from the data, leave unset.
        n_factors: latent dimensions.
        hidden: encoder widths (the decoder mirrors them).
        beta: weight of the KL term (1 = a plain VAE).
        lr: Adam learning rate.
    """

    def __init__(
        self,
        input_shape: Sequence[int] | None = None,
        n_factors: int = 12,
        hidden: Sequence[int] = (512, 256),
        beta: float = 4.0,
        lr: float = 1e-3,
    ) -> None:
        super().__init__()
        shape = _check_shape("BetaVAE", input_shape)
        check_integers(("n_factors", n_factors, 1))
        check_positive(beta=beta, lr=lr)
        self.save_hyperparameters()
        self.input_shape = shape
        self.n_factors = int(n_factors)
        p = math.prod(shape)
        self.encoder = MLP(p, 2 * self.n_factors, hidden=tuple(hidden))
        self.decoder = MLP(self.n_factors, p, hidden=tuple(reversed(tuple(hidden))))

    def posterior(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of ``q(z | x)`` (each ``N x n_factors``)."""
        mean, log_var = self.encoder(images).chunk(2, dim=1)
        return mean, log_var.clamp(-20.0, 20.0)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """The posterior means ``(N, n_factors)``."""
        return self.posterior(images)[0]

    def losses(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample mean reconstruction (Bernoulli NLL, nats) and KL of a batch."""
        mean, log_var = self.posterior(images)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        logits = self.decoder(z)
        target = images.flatten(1).clamp(0.0, 1.0)
        reconstruction = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum()
        n = images.shape[0]
        return reconstruction / n, kl / n

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """``reconstruction + beta KL`` of the batch."""
        images = batch[0]
        reconstruction, kl = self.losses(images)
        loss = reconstruction + self.hparams.beta * kl
        n = int(images.shape[0])
        self.log("train/loss", loss, prog_bar=True, on_epoch=True, batch_size=n)
        self.log("train/reconstruction", reconstruction, on_epoch=True, batch_size=n)
        self.log("train/kl", kl, on_epoch=True, batch_size=n)
        return loss

    def _eval_step(self, batch: Any, stage: str) -> None:
        images = batch[0]
        reconstruction, kl = self.losses(images)
        n = int(images.shape[0])
        self.log(
            f"{stage}/loss", reconstruction + self.hparams.beta * kl, batch_size=n, sync_dist=True
        )
        self.log(f"{stage}/reconstruction", reconstruction, batch_size=n, sync_dist=True)
        self.log(f"{stage}/kl", kl, batch_size=n, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam."""
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
