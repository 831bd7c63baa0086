r"""Linear CorEx as a LightningModule: the closed-form objective trained by gradient steps.

The same math as the scikit-learn estimator :class:`~lit_info.methods.corex.LinearCorex`
(:func:`lit_info.info.corex.corex_moments` and friends; one implementation, two faces), trained
the Lightning way: an optimizer (Adam by default) on the free weights ``V`` (``m x p``, ``W =
V / sqrt(1 + v^T C v)``, so every ``V`` is valid), full batch or minibatch over samples, logged
to TensorBoard, checkpointed, on any accelerator, and with the *variables* split across
processes when ``p`` outgrows one device (``shard_variables``).

What one step does. ``loss = -TC_bound / p`` where ``TC_bound`` is the closed-form lower bound
on ``TC(X; Y)`` of the batch (the moments of the batch: the whole training split with the
datamodule's default full batch, a minibatch otherwise, then biased by the small sample) at the
annealing noise ``eps`` of the epoch; dividing by ``p`` makes the learning rate independent of
the number of variables (the bound grows like ``p``).

Standardization. The per-variable mean and standard deviation (population, as
``LinearCorex(gaussianize="standard")``) are computed once, at the start of the first fit, in
one full pass over the training loader, and kept as buffers (``mean``, ``scale``): checkpoints
carry them, a resumed fit does not recompute them, and they define the model's units: the
covariance estimate, the NLL and the factors use them. The objective itself is computed on
every set standardized by its own statistics (a batch, a held-out split;
:meth:`CorexModule.standardize_own`): the bound needs ``|Corr(y_j, x_i)| < 1``, which a
minibatch or new samples standardized with the training statistics can break (NaN); on the
whole training split, i.e. in full-batch training, the two coincide. Missing values (NaN) are
refused unless ``missing_values: true``: then, as ``LinearCorex(missing_values=nan)``, a
missing entry is imputed with its column mean and every column is standardized with its
*observed* count (mean and standard deviation over the observed entries; the moments average
over all rows, so a column's variance is its observed share), on the training split and on
every batch alike, which in full-batch training gives ``LinearCorex``'s objective exactly
(tested). Held-out NLL and factors of samples with missing entries use the imputed values
(the NLL is then that of the imputed sample, not the marginal likelihood of its observed
entries).

Annealing. ``eps`` follows :data:`~lit_info.info.corex.ANNEAL_SCHEDULE` (``0.6^k``, ``k =
1..6``, then 0), one stage every ``epochs_per_stage`` epochs, and stays 0 afterwards; set
``max_epochs`` to at least ``6 * epochs_per_stage`` plus the epochs wanted at ``eps = 0``.
``anneal: false`` trains at ``eps = 0`` throughout.

Evaluation. The model's covariance estimate is the one of ``LinearCorex``: the moments of the
current weights on the whole (standardized) training split at ``eps = 0``
(:func:`~lit_info.info.corex.moments_covariance`, low rank plus diagonal). The standardized
training split is therefore kept on the module's device once it has been read (``n x p``
numbers, the size of the data). Logged per epoch:

* ``train/tc`` (mean over the epoch's batches), ``train/loss``, ``train/eps``;
* ``val/nll``, ``test/nll``: held-out Gaussian negative log-likelihood, nats per sample, in the
  data's own units: the samples are centered with the *training* mean and the covariance is
  rescaled by the training standard deviations, i.e. ``-LinearCorex.score`` on the same
  weights (mean over batches weighted by their size);
* ``val/tc``, ``test/tc``: the objective of the current weights on the held-out split at
  ``eps = 0`` (the split standardized with its own statistics, see above);
* TensorBoard (rank zero, TensorBoard logger only): ``corex/factor_tc``, a histogram of the
  per-factor TC (:func:`~lit_info.info.corex.factor_tcs`) every epoch; every
  ``image_every_n_epochs`` epochs and at the last one, when ``p <= max_image_variables``:
  ``corex/weights`` (``|W|``, factors by decreasing TC, variables grouped by the factor that
  informs most about them, grayscale) and ``corex/correlation`` (the estimated correlation
  matrix, left, and the training split's sample correlation, right, in the same order; red
  positive, blue negative, white zero).

``predict`` returns the factors ``y = W x`` (noise-free mean) of every sample.

Sharding the variables (``shard_variables: true`` with ``--trainer.strategy ddp_variables
--trainer.devices N``, :class:`~lit_info.strategies.VariableShardingStrategy`). Process ``r``
owns a contiguous slice of the ``p`` columns: of the data (a batch is sliced in
``on_before_batch_transfer``, so only those columns reach the device), of ``V`` and of the
statistics. Every sum over variables in the objective, the NLL and the per-factor TC is an
all-reduce with gradient (:func:`lit_info.dist.all_reduce_sum`, passed to ``corex_moments`` as
``reduce``), so every process computes the same objective. Backpropagating the replicated loss
through those all-reduces gives every process ``N`` times its slice of the gradient (autograd
differentiates the sum of the ``N`` identical losses), so the loss is divided by ``N`` before
``backward``; Adam acts elementwise, so ``N`` processes take exactly the steps of one.
Gradient clipping by norm uses the norm over all shards. Checkpoints hold the full weights,
statistics and optimizer state (gathered when saved, sliced when loaded), so they load on any
number of processes. Under plain ``ddp`` (samples split, weights replicated) each process's
batch is a minibatch of the moments and DDP averages the gradients.

The sharding, checkpoint, logging and optimizer plumbing is that of
:class:`~lit_info.methods.corex_base.CorexModuleBase`, shared with
:class:`~lit_info.methods.tcorex_module.TCorexModule`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lit_info.info.corex import (
    CorexMoments,
    corex_moments,
    moments_covariance,
    variable_factor_mis,
)
from lit_info.info.low_rank import LowRankPlusDiagonal
from lit_info.methods.corex_base import (
    Batch,
    CorexModuleBase,
    annealing_eps,
    check_integers,
    check_positive,
    red_blue,
    require_hints,
    sharded_nll,
    upscale,
)

__all__ = ["CorexModule", "annealing_eps", "sharded_nll"]


def _observed_mean_std(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-column mean and population standard deviation over the entries that are not NaN."""
    observed = ~torch.isnan(x)
    count = observed.sum(0).clamp_min(1)
    centred = torch.where(observed, x, 0.0).sum(0) / count
    deviation = torch.where(observed, x - centred, 0.0)
    return centred, (deviation.pow(2).sum(0) / count).sqrt()


class CorexModule(CorexModuleBase):
    """Linear CorEx (Ver Steeg et al., NeurIPS 2019) trained by an optimizer, full or minibatch.

    Learns ``n_hidden`` linear factors of the ``n_variables`` variables of a
    ``TimeSeriesDataModule`` (the periods are pooled) by maximizing the closed-form lower bound
    on ``TC(X; Y)`` of ``LinearCorex``; logs ``train/tc``, ``val/nll``, ``val/tc``,
    ``test/nll``, ``test/tc``, per-factor TC histograms and images of the weights and of the
    estimated correlation matrix (see :mod:`lit_info.methods.corex_module`).

    Args:
        n_variables: number of variables p; filled in from the data, leave unset.
        n_hidden: number of latent factors m.
        missing_values: impute missing entries (NaN) with the column mean, standardizing with
            the observed count (as LinearCorex(missing_values=nan)); false = NaN is an error.
        optimizer: adam or sgd.
        lr: learning rate (the loss is -TC / p, so it does not depend on p).
        momentum: SGD momentum; not used with adam.
        anneal: anneal the noise eps through 0.6^k, k = 1..6, then 0; false = eps 0 throughout.
        epochs_per_stage: epochs per annealing stage (eps = 0 from epoch 6 * epochs_per_stage).
        init_scale: size of the random initial weights: each factor starts with a signal share
            of about init_scale^2 (0.1: u = 0.01, the authors' start).
        shard_variables: split the variables (columns of the data and of the weights) across
            the processes; needs --trainer.strategy ddp_variables (see
            lit_info.strategies.VariableShardingStrategy). No effect on one process.
        image_every_n_epochs: log the weight and correlation images every this many epochs
            (and at the last epoch); 0 = never.
        max_image_variables: no images when p exceeds this (a p x p image).
    """

    def __init__(
        self,
        n_variables: int | None = None,
        n_hidden: int = 8,
        optimizer: Literal["adam", "sgd"] = "adam",
        lr: float = 0.01,
        momentum: float = 0.9,
        anneal: bool = True,
        epochs_per_stage: int = 50,
        init_scale: float = 0.1,
        shard_variables: bool = False,
        image_every_n_epochs: int = 50,
        max_image_variables: int = 512,
        missing_values: bool = False,
    ) -> None:
        super().__init__()
        require_hints("CorexModule", n_variables=n_variables)
        check_integers(
            ("n_variables", n_variables, 1),
            ("n_hidden", n_hidden, 1),
            ("epochs_per_stage", epochs_per_stage, 1),
            ("image_every_n_epochs", image_every_n_epochs, 0),
            ("max_image_variables", max_image_variables, 0),
        )
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        check_positive(lr=lr, init_scale=init_scale)
        self.save_hyperparameters()
        assert n_variables is not None
        p, m = int(n_variables), int(n_hidden)
        self.n_variables = p
        self.n_hidden = m
        # |v_j|^2 ~ init_scale^2 and tr Cov(x) = p: the signal share u_j starts near init_scale^2
        self.free_weights = nn.Parameter(torch.randn(m, p) * (init_scale / math.sqrt(p)))
        self.register_buffer("mean", torch.zeros(p))
        self.register_buffer("scale", torch.ones(p))
        self.register_buffer("n_fit_samples", torch.zeros((), dtype=torch.long))
        self._init_shards()  # _train: the standardized training split (local columns)

    # -- data -----------------------------------------------------------------------------------
    def prepare_training_set(self) -> None:
        """Read the training split once: statistics (first fit only) and the cached samples.

        Raises:
            ValueError: on missing values, fewer than 2 samples or a constant variable.
        """
        if self._train is not None:
            return
        x, _ = self._read_training_set()
        n = x.shape[0]
        if self._agree(bool(torch.isnan(x).any())) and not self.hparams.missing_values:
            raise ValueError(
                "CorexModule: the training data contain NaN; set missing_values: true to impute "
                "them with the column means (or impute them first)"
            )
        if self._agree(n < 2):
            raise ValueError(f"CorexModule: {n} training sample(s); at least 2 are needed")
        if int(self.n_fit_samples) == 0:
            # population statistics over the observed entries, as LinearCorex
            mean, std = _observed_mean_std(x)
            constant = torch.nonzero(std == 0).flatten()
            if self._agree(constant.numel() > 0):
                raise ValueError(
                    "CorexModule: variable(s) with zero variance in the training data "
                    f"(local columns {constant[:5].tolist()}); drop them"
                )
            self.mean.copy_(mean.to(self.mean))
            self.scale.copy_(std.to(self.scale))
            self.n_fit_samples.fill_(n)
        self._train = self.standardize(x.to(self.device))

    def standardize_own(self, x: Tensor) -> Tensor:
        """``x`` standardized with its own mean and (population) standard deviation.

        The objective is computed on each set (a training batch, a held-out split) standardized
        by itself, so that ``|Corr(y_j, x_i)| < 1`` holds and the bound is defined; with the
        training statistics a minibatch or held-out samples can break it (NaN). On the whole
        training split the two standardizations coincide. A column constant within ``x``
        becomes 0 and contributes nothing.
        """
        x = x.to(self.free_weights.dtype)
        if self.hparams.missing_values and bool(torch.isnan(x).any()):
            mean, std = _observed_mean_std(x)
            z = torch.nan_to_num((x - mean) / std.clamp_min(torch.finfo(x.dtype).tiny), nan=0.0)
            return z
        x = x - x.mean(0)
        return x / x.pow(2).mean(0).sqrt().clamp_min(torch.finfo(x.dtype).tiny)

    def standardize(self, x: Tensor) -> Tensor:
        """``(x - mean) / scale`` with the training statistics, in the weights' dtype.

        With ``missing_values`` a missing entry becomes 0 (imputed with the training mean).
        """
        dtype = self.free_weights.dtype
        z = (x.to(dtype) - self.mean.to(dtype)) / self.scale.to(dtype)
        return torch.nan_to_num(z, nan=0.0) if self.hparams.missing_values else z

    # -- the model ------------------------------------------------------------------------------
    def moments(self, z: Tensor, eps: float = 0.0) -> CorexMoments:
        """:func:`~lit_info.info.corex.corex_moments` of the free weights on standardized ``z``.

        Args:
            z: ``(n, p_local)`` standardized samples (this process's columns).
            eps: annealing noise.
        """
        return corex_moments(z, self.free_weights, eps, free=True, reduce=self.reduce)

    def train_moments(self) -> CorexMoments:
        """The moments of the current weights on the whole training split at ``eps = 0``.

        What the covariance estimate, the factors and the logged per-factor TC come from;
        computed once per weight update (cached on the parameter's version counter).
        """
        self.prepare_training_set()
        z = self._train
        assert z is not None
        return self._cached_moments(lambda: self.moments(z, 0.0))

    def covariance(self) -> LowRankPlusDiagonal:
        """The estimated covariance of the standardized variables (this process's rows)."""
        return moments_covariance(self.train_moments())

    def nll(self, x: Tensor) -> Tensor:
        """Mean Gaussian NLL (nats per sample) of raw samples ``x`` in the data's units.

        Centered with the training mean; the covariance is the estimate rescaled by the
        training standard deviations (``-LinearCorex.score`` on the same weights).
        """
        cov = self.covariance()  # first: the statistics may be read with the training split
        z = self.standardize(x)
        log_scale = self._sum(self.scale.to(z.dtype).log().sum())
        return sharded_nll(cov, z, self.reduce) + log_scale

    def forward(self, x: Tensor) -> Tensor:
        """The factors ``y = W x`` (``n x m``, noise-free mean) of raw samples ``x``."""
        weights = self.train_moments().weights  # first: it may read the statistics
        assert weights is not None
        return self._sum(self.standardize(x) @ weights.T)

    # -- steps ----------------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """``-TC / p`` of the batch at the epoch's annealing noise (divided by the shards)."""
        x = batch[0]
        eps = self.eps
        moments = self.moments(self.standardize_own(x), eps)
        tc = moments.tc
        loss = -tc / self.n_variables
        # divided by the shards: see the module docstring
        return self._training_loss(loss, batch_idx, int(x.shape[0]), tc, eps)

    def _eval_step(self, batch: Batch, stage: str) -> None:
        x = batch[0]
        n = int(x.shape[0])
        nll = self.nll(x)
        tc = self.moments(self.standardize_own(x), 0.0).tc
        self.log(f"{stage}/nll", nll, prog_bar=stage == "val", batch_size=n, sync_dist=True)
        self.log(f"{stage}/tc", tc, batch_size=n, sync_dist=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Held-out NLL and TC of the validation samples."""
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """Held-out NLL and TC of the test samples."""
        self._eval_step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Per sample: dataset index and the factors ``y`` (``factors_0 ... factors_{m-1}``)."""
        x, _, index = batch
        return {"index": index, "factors": self(x)}

    def _epoch_histogram(self, moments: CorexMoments) -> tuple[str, Tensor]:
        """``corex/factor_tc``: the per-factor TC (a collective when sharded)."""
        return "corex/factor_tc", self.factor_tcs(moments)

    @torch.no_grad()
    def _log_images(self, writer: Any, moments: CorexMoments, epoch: int) -> None:
        """``|W|`` and the correlation matrices, variables grouped by cluster (a collective).

        None when ``p`` exceeds ``max_image_variables`` (``p x p`` images).
        """
        if self.n_variables > self.hparams.max_image_variables:
            return
        assert moments.weights is not None and self._train is not None
        tcs = self.factor_tcs(moments)
        weights = self._gather(moments.weights).float().cpu()  # m x p
        mis = self._gather(variable_factor_mis(moments)).float().cpu()
        full = dataclasses.replace(
            moments, weights=None, rho=self._gather(moments.rho), s=self._gather(moments.s)
        )
        estimated = moments_covariance(full).correlation().dense().float().cpu()
        z = self._gather(self._train).float().cpu()
        if not self.trainer.is_global_zero:
            return
        m, p = weights.shape
        factor_order = torch.argsort(tcs.float().cpu(), descending=True)
        rank_of = torch.empty_like(factor_order)
        rank_of[factor_order] = torch.arange(m)
        best, cluster = mis.max(0)
        order = torch.argsort(-best, stable=True)
        order = order[torch.argsort(rank_of[cluster[order]], stable=True)]
        w = weights[factor_order][:, order].abs()
        w = (w / w.max().clamp_min(1e-12)).unsqueeze(0)
        cols = max(1, 256 // p)
        rows = max(cols, (p * cols) // (4 * m))
        writer.add_image("corex/weights", upscale(w, rows, cols), epoch, dataformats="CHW")
        zc = z - z.mean(0)
        sample = (zc.T @ zc) / (zc.norm(dim=0)[:, None] * zc.norm(dim=0)[None, :]).clamp_min(1e-12)
        ordered = [c[order][:, order] for c in (estimated, sample)]
        gap = torch.ones(3, p, max(1, p // 32))
        image = torch.cat([red_blue(ordered[0]), gap, red_blue(ordered[1])], dim=2)
        writer.add_image("corex/correlation", upscale(image, cols, cols), epoch)
