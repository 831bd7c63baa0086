r"""T-CorEx as a LightningModule: the batched closed-form objective trained by gradient steps.

The same math as the scikit-learn estimator :class:`~lit_info.methods.tcorex.TCorex`
(:func:`lit_info.info.corex.corex_moments` with a period axis and the penalties of
:mod:`lit_info.info.tcorex`; one implementation, two faces), trained the Lightning way, as
:class:`~lit_info.methods.corex_module.CorexModule` trains linear CorEx: Adam on the free
weights ``V`` (``T x m x p``, one ``m x p`` matrix per period, ``W_t = V_t / sqrt(1 + v^T C_t
v)``, so every ``V`` is valid), full batch or minibatch over samples, logged to TensorBoard,
checkpointed, on any accelerator, and with the *variables* split across processes when ``p``
outgrows one device (``shard_variables``).

What one step does. The batch's samples carry their periods (``TimeSeriesDataModule`` items
``(x, period, index)``); period ``t`` weighs a sample of period ``t'`` by ``gamma^|t - t'|``
(:func:`~lit_info.info.tcorex.batch_sample_weights`; ``gamma`` unset: its own samples only),
and one batched ``corex_moments`` call gives every period's closed-form lower bound
``TC_t`` on ``TC(X; Y)`` at the annealing noise of the epoch. The objective is

``sum_t TC_t - l1 sum_t |M_{t+1} - M_t|_1 - l2 sum_t ||M_{t+1} - M_t||_F^2``

(``M_t``: ``V_t``, ``I(X_i; Y_j)`` or the implied covariance, ``reg_type``;
:func:`~lit_info.info.tcorex.temporal_penalty`) and ``loss = -objective / T``, the loss of
``TCorex(optimizer="adam")`` (``CorexModule`` divides by ``p`` instead, for SGD; Adam's steps
do not depend on the scale of the loss): with the datamodule's default full batch,
``init_from_pooled`` off and the same start, ``epochs_per_stage = k`` epochs take the Adam
steps of ``TCorex(init=False, max_iter=k)`` (``k < 100``, below its convergence window), equal
up to rounding. ``smoothing``
replaces ``|d|`` by ``sqrt(d^2 + delta^2) - delta`` (default 0: the exact ``|.|``, as
``TCorex``'s Adam).

Minibatches (``batch_size`` set) estimate the moments from the batch: every period's TC is
then the biased small-sample bound of the batch's (weighted) samples, as ``CorexModule``'s
minibatch TC; with ``gamma`` unset a period with no sample in a batch contributes no TC to
that step (its moments are placeholders, so its ``MI`` / ``covariance`` penalty terms are
biased in that step too; ``reg_type: W`` penalizes the weights themselves and is not), and a
period with a single sample in a batch contributes about none (its centered sample is 0).

Standardization. Each period's weighted mean and (population) standard deviation, those of
``TCorex`` (:func:`~lit_info.info.tcorex.weighted_standardization`, weighted by
``gamma^|t - t'|`` when ``gamma`` is set), are computed once, at the start of the first fit,
in one full pass over the training loader, and kept as buffers (``mean``, ``scale``:
``T x p``; ``mixing``: ``T x T``, the weight of one sample of period ``t'`` in period ``t``;
``n_fit_samples``: ``(T,)``): checkpoints carry them, a resumed fit does not recompute them,
and they define the model's units (the covariance estimates, the NLL, the factors). As in
``CorexModule``, the objective is computed on every batch standardized by its own weighted
statistics (:func:`~lit_info.info.tcorex.weighted_batch_standardization`): on the whole
training split the two coincide. Missing values (NaN) are refused, as by ``TCorex``.

``init_from_pooled: true`` starts every period from a linear CorEx
(:class:`~lit_info.methods.corex.LinearCorex`, L-BFGS, its defaults) fitted at the start of
the first fit on all training samples pooled, each standardized by its period's statistics:
``TCorex(init=True)``'s start (kept in :attr:`TCorexModule.pooled_corex`; its seed is drawn
from torch's global generator with the random start, i.e. decided by ``seed_everything``).
Otherwise every period starts from the same random weights, each factor of norm
``init_scale`` (``TCorex(init=False)``'s start for ``init_scale = 0.1``).

Annealing. ``eps`` follows :data:`~lit_info.info.corex.ANNEAL_SCHEDULE`, one stage every
``epochs_per_stage`` epochs, then 0 (:func:`~lit_info.methods.corex_module.annealing_eps`).

Evaluation. Period ``t``'s covariance estimate is ``TCorex``'s: the moments of the current
weights on the whole training split (weighted, standardized by the buffers) at ``eps = 0``,
low rank plus diagonal (:func:`~lit_info.info.tcorex.period_covariances`); the training split
is therefore kept on the module's device once read. Logged per epoch:

* ``train/tc`` (the sum over periods; mean over the epoch's batches), ``train/penalty``,
  ``train/loss``, ``train/eps``;
* ``val/nll``, ``test/nll``: the mean over periods of each period's held-out Gaussian negative
  log-likelihood (nats per sample, mean over the period's samples) in the data's own units,
  the samples of period ``t`` centered with period ``t``'s *training* (weighted) mean and the
  covariance rescaled by its training standard deviations, as ``CorexModule``'s NLL: that is
  ``-TCorex.score`` (= ``TCorex.nll(center=True)``) on the same weights. (``TCorex.nll``'s
  default ``center=False``, the authors' metric for zero-mean data, evaluates ``N(0,
  Sigma_t)`` instead.) The per-period sums are accumulated over the batches and, under plain
  ``ddp``, summed over the processes (the sampler's padding counts twice);
* TensorBoard (rank zero, TensorBoard logger only): ``tcorex/period_tc``, a histogram of the
  ``T`` per-period TCs every epoch; every ``image_every_n_epochs`` epochs and at the last one:
  ``tcorex/change_points``, a bar chart of the change-point scores of the ``T - 1`` period
  boundaries (:meth:`TCorexModule.change_point_scores`, Frobenius norms, bars scaled to the
  largest; the T-CorEx paper's score), and, when ``p <= max_image_variables``,
  ``tcorex/weights``: ``|W_t|`` of every period, one band per period from top to bottom
  (factors ordered by their mean TC over the periods, variables in their order, grayscale,
  bands separated by gray lines).

``predict`` returns the factors ``y = W_t x`` (noise-free mean, ``t`` the sample's period).

Sharding the variables (``shard_variables: true`` with ``--trainer.strategy ddp_variables
--trainer.devices N``), as ``CorexModule``: process ``r`` owns a contiguous slice of the ``p``
columns of the data, of ``V`` and of the statistics; every sum over variables in the
objective, the penalty, the NLL and the factor TCs is an all-reduce with gradient
(:func:`lit_info.dist.all_reduce_sum`); the replicated loss is divided by ``N`` before
``backward``, so ``N`` processes take exactly the Adam steps of one; checkpoints hold the full
weights, statistics and optimizer state (gathered when saved, sliced when loaded). Two
steps gather all columns on every process: ``init_from_pooled`` (every process fits the same
``LinearCorex`` on the whole ``N x p`` training split, once) and the change-point scores
(``p x m`` factors per period, when images are due). Under plain ``ddp`` (samples split,
weights replicated) each process's batch is a minibatch and DDP averages the gradients.

The sharding, checkpoint, logging and optimizer plumbing is ``CorexModule``'s, in their base
:class:`~lit_info.methods.corex_base.CorexModuleBase`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from lit_info.dist import all_gather_columns
from lit_info.info.corex import CorexMoments, corex_moments
from lit_info.info.low_rank import LowRankPlusDiagonal
from lit_info.info.tcorex import (
    REG_TYPES,
    batch_sample_weights,
    change_point_norms,
    period_covariances,
    period_mixing,
    temporal_penalty,
    weighted_batch_standardization,
    weighted_standardization,
)
from lit_info.methods.corex import LinearCorex
from lit_info.methods.corex_base import (
    Batch,
    CorexModuleBase,
    bar_image,
    check_integers,
    check_positive,
    require_hints,
    sharded_nll,
    split_batch,
    upscale,
)

__all__ = ["TCorexModule", "bar_image"]


class TCorexModule(CorexModuleBase):
    """T-CorEx (Harutyunyan et al., arXiv 1905.13276) trained by Adam, full or minibatch.

    Learns ``n_hidden`` linear factors per period of the ``n_variables`` variables of a
    ``TimeSeriesDataModule`` with ``n_periods`` periods by maximizing the sum of the periods'
    closed-form TC bounds minus the temporal penalty of ``TCorex``; logs ``train/tc``,
    ``train/penalty``, ``val/nll``, ``test/nll``, a per-period TC histogram and images of the
    change-point scores and of the weights (see :mod:`lit_info.methods.tcorex_module`).

    Args:
        n_variables: number of variables p; filled in from the data, leave unset.
        n_periods: number of periods T; filled in from the data, leave unset.
        n_hidden: number of latent factors m (per period).
        l1: weight of sum_t |M_{t+1} - M_t|_1 (0: none).
        l2: weight of sum_t ||M_{t+1} - M_t||_F^2 (0: none).
        reg_type: M_t: W (the free weights V, as the authors penalize them), MI (the matrix
            I(X_i; Y_j)) or covariance (the standardized implied covariance; l2 only).
        gamma: decay of the weight gamma^|t - t'| of the samples of period t' in period t, in
            (0, 1]; unset: every period uses its own samples only.
        smoothing: delta of the smoothed |d| ~ sqrt(d^2 + delta^2) - delta of the l1 term;
            0 = the exact |.| (as TCorex's Adam).
        optimizer: adam (the authors' choice for T-CorEx).
        lr: Adam's learning rate (the loss is -objective / T, that of TCorex).
        anneal: anneal the noise eps through 0.6^k, k = 1..6, then 0; false = eps 0 throughout.
        epochs_per_stage: epochs per annealing stage (eps = 0 from epoch 6 * epochs_per_stage).
        init_scale: norm of each factor's random initial weights, the same in every period
            (0.1: TCorex(init=False)'s start); not used with init_from_pooled.
        init_from_pooled: start every period from a LinearCorex fitted on the pooled training
            samples at the start of the first fit (TCorex(init=True)'s start).
        shard_variables: split the variables across the processes; needs --trainer.strategy
            ddp_variables (see lit_info.strategies.VariableShardingStrategy). No effect on one
            process.
        image_every_n_epochs: log the change-point and weight images every this many epochs
            (and at the last epoch); 0 = never.
        max_image_variables: no weight image when p exceeds this.
    """

    def __init__(
        self,
        n_variables: int | None = None,
        n_periods: int | None = None,
        n_hidden: int = 8,
        l1: float = 0.0,
        l2: float = 0.0,
        reg_type: Literal["W", "MI", "covariance"] = "W",
        gamma: float | None = None,
        smoothing: float = 0.0,
        optimizer: Literal["adam"] = "adam",
        lr: float = 0.01,
        anneal: bool = True,
        epochs_per_stage: int = 50,
        init_scale: float = 0.1,
        init_from_pooled: bool = False,
        shard_variables: bool = False,
        image_every_n_epochs: int = 50,
        max_image_variables: int = 512,
    ) -> None:
        super().__init__()
        require_hints("TCorexModule", n_variables=n_variables, n_periods=n_periods)
        check_integers(
            ("n_variables", n_variables, 1),
            ("n_periods", n_periods, 1),
            ("n_hidden", n_hidden, 1),
            ("epochs_per_stage", epochs_per_stage, 1),
            ("image_every_n_epochs", image_every_n_epochs, 0),
            ("max_image_variables", max_image_variables, 0),
        )
        for name, value in (("l1", l1), ("l2", l2), ("smoothing", smoothing)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
            if not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if reg_type not in REG_TYPES:
            raise ValueError(f"reg_type must be one of {list(REG_TYPES)}, got {reg_type!r}")
        if reg_type == "covariance" and l1 > 0:
            raise ValueError(
                f"l1={l1!r} with reg_type='covariance' would need the p x p differences of the "
                "covariances; use l2 (computed from m x m Gram products)"
            )
        if gamma is not None and (
            isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0 < gamma <= 1
        ):
            raise ValueError(f"gamma must lie in (0, 1] (or be unset), got {gamma!r}")
        if optimizer != "adam":
            raise ValueError(f"optimizer must be 'adam', got {optimizer!r}")
        check_positive(lr=lr, init_scale=init_scale)
        self.save_hyperparameters()
        assert n_variables is not None and n_periods is not None
        t, m, p = int(n_periods), int(n_hidden), int(n_variables)
        self.n_variables = p
        self.n_periods = t
        self.n_hidden = m
        # the same start in every period, each factor of norm init_scale (TCorex's random start)
        g = torch.randn(m, p, dtype=torch.float64)
        start = init_scale * g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
        start = start.to(torch.get_default_dtype()).expand(t, m, p).clone()
        self.free_weights = nn.Parameter(start)
        # the pooled start's seed, drawn with the random start (seed_everything decides both)
        self._pooled_seed = int(torch.randint(2**31 - 1, (1,)))
        self.register_buffer("mean", torch.zeros(t, p))
        self.register_buffer("scale", torch.ones(t, p))
        self.register_buffer("mixing", torch.zeros(t, t))
        self.register_buffer("n_fit_samples", torch.zeros(t, dtype=torch.long))
        self.pooled_corex: LinearCorex | None = None
        self._init_shards()  # _train: x, period, sample weights of the training split
        self._nll: dict[str, Tensor] = {}

    # -- data -----------------------------------------------------------------------------------
    def prepare_training_set(self) -> None:
        """Read the training split once: statistics (first fit only) and the cached samples.

        Raises:
            ValueError: on missing values, periods outside ``[0, n_periods)``, a period with
                fewer than 2 samples or a variable constant in a period's (weighted) data.
        """
        if self._train is not None:
            return
        x, period = self._read_training_set()
        t_count = self.n_periods
        if self._agree(bool(torch.isnan(x).any())):
            raise ValueError(
                "TCorexModule: the training data contain NaN; T-CorEx has no missing-value "
                "support: impute or drop the missing entries first"
            )
        if period.numel() and (int(period.min()) < 0 or int(period.max()) >= t_count):
            raise ValueError(
                f"TCorexModule: training periods span [{int(period.min())}, "
                f"{int(period.max())}], but n_periods={t_count}"
            )
        counts = torch.bincount(period, minlength=t_count)
        if bool((counts < 2).any()):
            t = int(torch.nonzero(counts < 2)[0])
            raise ValueError(
                f"TCorexModule: period {t} has {int(counts[t])} training sample(s); every "
                "period needs at least 2"
            )
        if int(self.n_fit_samples.sum()) == 0:
            mixing = period_mixing(counts.numpy(), self.hparams.gamma)
            arrays = [x[period == t].numpy() for t in range(t_count)]
            mean, scale = weighted_standardization(arrays, mixing)
            constant = np.argwhere(scale == 0)
            if self._agree(constant.size > 0):
                where = constant[0].tolist() if constant.size else []
                raise ValueError(
                    "TCorexModule: variable(s) constant in the (weighted) training data of a "
                    f"period (first [period, local column]: {where}); drop them or set gamma"
                )
            self.mean.copy_(torch.from_numpy(mean).to(self.mean))
            self.scale.copy_(torch.from_numpy(scale).to(self.scale))
            self.mixing.copy_(torch.from_numpy(mixing).to(self.mixing))
            self.n_fit_samples.copy_(counts.to(self.n_fit_samples))
            if self.hparams.init_from_pooled:
                self._init_from_pooled(x, period)
        dtype = self.free_weights.dtype
        omega = self.mixing[:, period.to(self.mixing.device)].to(dtype)
        self._train = (x.to(self.device, dtype), period.to(self.device), omega)

    @torch.no_grad()
    def _init_from_pooled(self, x: Tensor, period: Tensor) -> None:
        """Every period's free weights from a LinearCorex of the pooled standardized samples."""
        z = (x - self.mean.cpu().double()[period]) / self.scale.cpu().double()[period]
        seed = torch.tensor([self._pooled_seed], dtype=torch.long)
        if self.num_shards > 1:  # every process fits the same model on all the columns
            z = all_gather_columns(z.to(self.device)).cpu()
            seed = seed.to(self.device)
            dist.broadcast(seed, src=0)
        corex = LinearCorex(
            n_hidden=self.n_hidden,
            anneal=bool(self.hparams.anneal),
            device=self.device.type,
            dtype="float64",
            random_state=int(seed),
        ).fit(z.numpy())
        self.pooled_corex = corex
        # W = V / sqrt(1 + u_V) and 1 - u = 1 / (1 + u_V); fold the pooled standardization
        u = corex.moments_.u.detach().cpu().numpy()
        free = corex.components_ / np.sqrt(1.0 - u)[:, None] / corex.scale_[None, :]
        lo, hi = self.columns
        free_t = torch.from_numpy(np.ascontiguousarray(free[:, lo:hi]))
        self.free_weights.copy_(free_t.to(self.free_weights).expand_as(self.free_weights))

    # -- the model ------------------------------------------------------------------------------
    def penalty(self, moments: CorexMoments) -> Tensor:
        """The temporal penalty of the free weights with these moments (summed over shards)."""
        hp = self.hparams
        return temporal_penalty(
            moments,
            self.free_weights,
            hp.reg_type,
            float(hp.l1),
            float(hp.l2),
            float(hp.smoothing),
            reduce=self.reduce,
        )

    def objective(self, x: Tensor, period: Tensor, eps: float = 0.0) -> tuple[Tensor, Tensor]:
        """Every period's TC bound on raw samples ``x`` and the penalty, at noise ``eps``.

        ``x`` is standardized by its own weighted statistics (see the module docstring); a
        column constant in a period's weighted samples (a period with a single sample in a
        minibatch) is 0 after centering and contributes nothing to that period.

        Args:
            x: ``(N, p_local)`` raw samples (this process's columns).
            period: ``(N,)`` their periods.
            eps: annealing noise.

        Returns:
            ``(tc, penalty)``: ``(T,)`` TC per period (0 for a period without weight in the
            batch) and the scalar penalty; the objective is ``tc.sum() - penalty``.
        """
        x = x.to(self.free_weights.dtype)
        omega = batch_sample_weights(period, self.n_periods, self.hparams.gamma).to(x.dtype)
        mean, scale = weighted_batch_standardization(x, period, omega)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        moments = corex_moments(
            x,
            self.free_weights,
            eps,
            free=True,
            sample_weights=omega,
            mean=mean,
            scale=scale,
            reduce=self.reduce,
        )
        present = omega.sum(1) > 0
        tc = torch.where(present, moments.tc, torch.zeros_like(moments.tc))
        return tc, self.penalty(moments)

    def train_moments(self) -> CorexMoments:
        """The batched moments of the current weights on the whole training split, ``eps = 0``.

        Weighted by ``mixing`` and standardized by the buffers (``TCorex``'s final moments);
        what the covariance estimates, the factors and the logged per-period TC come from;
        computed once per weight update (cached on the parameter's version counter).
        """
        self.prepare_training_set()
        assert self._train is not None
        x, _, omega = self._train
        dtype = self.free_weights.dtype
        return self._cached_moments(
            lambda: corex_moments(
                x,
                self.free_weights,
                0.0,
                free=True,
                sample_weights=omega,
                mean=self.mean.to(dtype),
                scale=self.scale.to(dtype),
                reduce=self.reduce,
            )
        )

    def covariances(self) -> list[LowRankPlusDiagonal]:
        """Every period's covariance estimate of the standardized variables (local rows)."""
        return period_covariances(self.train_moments(), None)

    def covariance_low_rank(self) -> list[LowRankPlusDiagonal]:
        """Every period's covariance estimate in the data's units (``TCorex``'s; local rows)."""
        return period_covariances(self.train_moments(), self.scale.to(self.free_weights.dtype))

    def change_point_scores(self) -> dict[str, np.ndarray]:
        """Norms of the differences of neighbouring inverse correlation matrices (``T - 1``).

        As ``TCorex.change_point_scores``
        (:func:`~lit_info.info.low_rank.inverse_difference_norms`); a collective when sharded.

        Returns:
            ``{"frobenius": ..., "spectral": ...}``: entry ``t`` compares periods ``t`` and
            ``t + 1``.
        """
        covs = [
            LowRankPlusDiagonal(self._gather(c.diagonal), self._gather(c.factor.T).T)
            for c in self.covariances()
        ]
        return change_point_norms(covs)

    def standardize(self, x: Tensor, period: Tensor) -> Tensor:
        """``(x - mean_t) / scale_t`` with each sample's period's training statistics."""
        dtype = self.free_weights.dtype
        return (x.to(dtype) - self.mean.to(dtype)[period]) / self.scale.to(dtype)[period]

    def period_nll(self, x: Tensor, period: Tensor) -> tuple[Tensor, Tensor]:
        """Per period: the summed Gaussian NLL (nats) of raw samples ``x`` and their count.

        Period ``t``'s samples are centered with its training mean and scored under its
        covariance estimate in the data's units (``-TCorex.score``'s terms).

        Returns:
            ``(sums, counts)``, two ``(T,)`` tensors.
        """
        covs = self.covariances()  # first: the statistics may be read with the training split
        z = self.standardize(x, period)
        sums = z.new_zeros(self.n_periods)
        counts = z.new_zeros(self.n_periods)
        for t in torch.unique(period).tolist():
            rows = period == t
            log_scale = self._sum(self.scale[t].to(z.dtype).log().sum())
            nll = sharded_nll(covs[t], z[rows], self.reduce) + log_scale
            n = rows.sum().to(z.dtype)
            sums[t] = nll * n
            counts[t] = n
        return sums, counts

    def forward(self, x: Tensor, period: Tensor) -> Tensor:
        """The factors ``y = W_t x`` (``n x m``, noise-free mean) of raw samples ``x``."""
        weights = self.train_moments().weights  # first: it may read the statistics
        assert weights is not None
        z = self.standardize(x, period)
        y = z.new_zeros(z.shape[0], self.n_hidden)
        for t in torch.unique(period).tolist():
            rows = period == t
            y[rows] = z[rows] @ weights[t].T
        return self._sum(y)

    # -- steps ----------------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """``-(sum_t TC_t - penalty) / T`` of the batch at the epoch's noise (/ the shards)."""
        x, period = split_batch(batch)
        eps = self.eps
        tcs, penalty = self.objective(x, period, eps)
        tc = tcs.sum()
        loss = -(tc - penalty) / self.n_periods
        # divided by the shards, as CorexModule's
        return self._training_loss(loss, batch_idx, int(x.shape[0]), tc, eps, penalty=penalty)

    def _eval_start(self, stage: str) -> None:
        self._nll[stage] = torch.zeros(2, self.n_periods, dtype=torch.float64, device=self.device)

    def _eval_step(self, batch: Batch, stage: str) -> None:
        x, period = split_batch(batch)
        sums, counts = self.period_nll(x, period)
        if stage not in self._nll:
            self._eval_start(stage)
        self._nll[stage] += torch.stack([sums, counts]).detach().to(self._nll[stage])

    def _eval_end(self, stage: str) -> None:
        acc = self._nll.pop(stage, None)
        if acc is None:
            return
        if self.trainer.world_size > 1 and self.num_shards == 1:  # samples split between ranks
            acc = self.trainer.strategy.reduce(acc, reduce_op="sum")
        sums, counts = acc
        seen = counts > 0
        if not bool(seen.any()):
            return
        nll = (sums[seen] / counts[seen]).mean()
        self.log(f"{stage}/nll", nll, prog_bar=stage == "val", sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        """Reset the per-period NLL sums."""
        self._eval_start("val")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Accumulate the per-period held-out NLL of the validation samples."""
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        """Log ``val/nll``, the mean over periods of the per-period NLL."""
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        """Reset the per-period NLL sums."""
        self._eval_start("test")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """Accumulate the per-period held-out NLL of the test samples."""
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        """Log ``test/nll``, the mean over periods of the per-period NLL."""
        self._eval_end("test")

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Per sample: dataset index, period and the factors (``factors_0 ...``)."""
        x, period = split_batch(batch)
        out = {"period": period, "factors": self(x, period)}
        if isinstance(batch, (tuple, list)) and len(batch) > 2:
            out = {"index": batch[2], **out}
        return out

    def _epoch_histogram(self, moments: CorexMoments) -> tuple[str, Tensor]:
        """``tcorex/period_tc``: the ``T`` per-period TCs."""
        return "tcorex/period_tc", moments.tc

    @torch.no_grad()
    def _log_images(self, writer: Any, moments: CorexMoments, epoch: int) -> None:
        """Change-point bars and ``|W_t|`` of every period (a collective when sharded)."""
        scores = self.change_point_scores()["frobenius"] if self.n_periods > 1 else None
        small = self.n_variables <= self.hparams.max_image_variables
        weights = tcs = None
        if small:
            assert moments.weights is not None
            tcs = self.factor_tcs(moments).float().cpu()
            weights = self._gather(moments.weights).float().cpu()  # T x m x p
        if not self.trainer.is_global_zero:
            return
        if scores is not None:
            writer.add_image("tcorex/change_points", bar_image(torch.from_numpy(scores)), epoch)
        if weights is None or tcs is None:
            return
        t_count, m, p = weights.shape
        order = torch.argsort(tcs.mean(0), descending=True)
        w = weights[:, order].abs()
        w = w / w.max().clamp_min(1e-12)
        cols = max(1, 256 // p)
        rows = max(cols, 48 // m)
        bands = []
        for t in range(t_count):
            bands.append(upscale(w[t], rows, cols))
            if t + 1 < t_count:
                bands.append(torch.full((1, p * cols), 0.5))
        image = torch.cat(bands).unsqueeze(0)
        writer.add_image("tcorex/weights", image, epoch, dataformats="CHW")
