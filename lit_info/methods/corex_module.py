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
refused (``LinearCorex(missing_values=nan)`` imputes them).

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
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from lit_info.dist import all_gather_columns, all_reduce_sum
from lit_info.info.corex import (
    ANNEAL_SCHEDULE,
    CorexMoments,
    corex_moments,
    factor_information,
    moments_covariance,
    variable_factor_mis,
)
from lit_info.info.low_rank import LowRankPlusDiagonal
from lit_info.methods.base import check_finite_loss
from lit_info.strategies import VariableShardingStrategy

__all__ = ["CorexModule", "annealing_eps", "sharded_nll"]

Batch = tuple[Tensor, Tensor, Tensor]
Reduce = Callable[[Tensor], Tensor] | None

_LOG_2PI = math.log(2.0 * math.pi)

# on_before_batch_transfer slices the batch to this process's variables before it reaches the
# device; Lightning warns whenever a module overrides it next to a datamodule
warnings.filterwarnings(
    "ignore", message=r"You have overridden `on_before_batch_transfer` in `LightningModule` but"
)
#: Per-variable tensors (last dim = the variables): sliced under sharding, gathered in checkpoints.
_PER_VARIABLE = ("free_weights", "mean", "scale")


def annealing_eps(epoch: int, epochs_per_stage: int, anneal: bool = True) -> float:
    """The annealing noise of ``epoch``: ``ANNEAL_SCHEDULE[epoch // epochs_per_stage]``, then 0.

    Args:
        epoch: the (0-based) training epoch.
        epochs_per_stage: epochs spent at each noise level.
        anneal: false = always 0.

    Returns:
        ``eps`` in ``[0, 1)``.
    """
    if not anneal:
        return 0.0
    stage = epoch // epochs_per_stage
    return ANNEAL_SCHEDULE[stage] if stage < len(ANNEAL_SCHEDULE) else 0.0


def sharded_nll(cov: LowRankPlusDiagonal, z: Tensor, reduce: Reduce = None) -> Tensor:
    """``cov.nll(z)`` when the variables (rows of ``cov``, columns of ``z``) are sharded.

    The Woodbury / determinant-lemma formulas of :class:`LowRankPlusDiagonal` with every sum
    over variables passed through ``reduce`` (an all-reduce): the capacitance
    ``I + F^T D^-1 F``, ``sum log D``, ``sum z^2 / D`` and ``z D^-1 F``. With ``reduce=None``
    it is ``cov.nll(z)``.

    Args:
        cov: this process's rows of the covariance (``p_local``).
        z: ``(n, p_local)`` samples (this process's columns).
        reduce: the sum over processes (None: not sharded).

    Returns:
        The mean negative log-likelihood per sample (nats).
    """
    if reduce is None:
        return cov.nll(z)
    d, f = cov.diagonal, cov.factor
    d_inv_f = f / d[:, None]
    capacitance = reduce(f.T @ d_inv_f)
    capacitance = capacitance + torch.eye(f.shape[1], dtype=f.dtype, device=f.device)
    chol = torch.linalg.cholesky(capacitance)
    log_d = reduce(d.log().sum())
    quad = reduce((z * z / d).sum(1))
    proj = reduce(z @ d_inv_f)
    half = torch.linalg.solve_triangular(chol, proj.T, upper=False)
    p = reduce(torch.tensor(float(d.shape[0]), dtype=d.dtype, device=d.device))
    logdet = log_d + 2.0 * chol.diagonal().log().sum()
    log_prob = -0.5 * (p * _LOG_2PI + logdet + quad - (half * half).sum(0))
    return -log_prob.mean()


def _red_blue(c: Tensor) -> Tensor:
    """``(3, H, W)`` image of values in ``[-1, 1]``: red positive, blue negative, white 0."""
    c = c.clamp(-1.0, 1.0)
    pos, neg = c.clamp_min(0.0), (-c).clamp_min(0.0)
    return torch.stack([1.0 - neg, 1.0 - pos - neg, 1.0 - pos])


def _upscale(image: Tensor, rows: int, cols: int) -> Tensor:
    """Nearest-neighbour upscaling of ``(C, H, W)`` by integer factors."""
    return image.repeat_interleave(rows, dim=1).repeat_interleave(cols, dim=2)


def _map_optimizer_states(checkpoint: dict[str, Any], fn: Callable[[Tensor], Tensor]) -> None:
    """Apply ``fn`` to every tensor of the optimizer states, in new dicts.

    ``optimizer.state_dict()`` shares its per-parameter dicts with the live optimizer, so they
    are replaced, not modified.
    """
    for opt_state in checkpoint.get("optimizer_states", []):
        opt_state["state"] = {
            index: {k: fn(v) if isinstance(v, Tensor) else v for k, v in param_state.items()}
            for index, param_state in opt_state.get("state", {}).items()
        }


class CorexModule(pl.LightningModule):
    """Linear CorEx (Ver Steeg et al., NeurIPS 2019) trained by an optimizer, full or minibatch.

    Learns ``n_hidden`` linear factors of the ``n_variables`` variables of a
    ``TimeSeriesDataModule`` (the periods are pooled) by maximizing the closed-form lower bound
    on ``TC(X; Y)`` of ``LinearCorex``; logs ``train/tc``, ``val/nll``, ``val/tc``,
    ``test/nll``, ``test/tc``, per-factor TC histograms and images of the weights and of the
    estimated correlation matrix (see :mod:`lit_info.methods.corex_module`).

    Args:
        n_variables: number of variables p; filled in from the data, leave unset.
        n_hidden: number of latent factors m.
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
    ) -> None:
        super().__init__()
        if n_variables is None:
            raise ValueError(
                "CorexModule needs n_variables; the CLI fills it from the datamodule "
                "(model_hints); in Python pass it explicitly, e.g. n_variables=dm.n_variables"
            )
        for name, value, low in (
            ("n_variables", n_variables, 1),
            ("n_hidden", n_hidden, 1),
            ("epochs_per_stage", epochs_per_stage, 1),
            ("image_every_n_epochs", image_every_n_epochs, 0),
            ("max_image_variables", max_image_variables, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        self.save_hyperparameters()
        p, m = int(n_variables), int(n_hidden)
        self.n_variables = p
        self.n_hidden = m
        # |v_j|^2 ~ init_scale^2 and tr Cov(x) = p: the signal share u_j starts near init_scale^2
        self.free_weights = nn.Parameter(torch.randn(m, p) * (init_scale / math.sqrt(p)))
        self.register_buffer("mean", torch.zeros(p))
        self.register_buffer("scale", torch.ones(p))
        self.register_buffer("n_fit_samples", torch.zeros((), dtype=torch.long))
        self._columns: tuple[int, int] | None = None  # this process's variables when sharded
        self._bounds: list[tuple[int, int]] = [(0, p)]
        self._train_z: Tensor | None = None  # standardized training split (local columns)
        self._cache: tuple[Any, CorexMoments] | None = None

    # -- sharding -----------------------------------------------------------------------------
    @property
    def num_shards(self) -> int:
        """Number of processes the variables are split over (1 when not sharded)."""
        return len(self._bounds)

    @property
    def columns(self) -> tuple[int, int]:
        """``(first, end)``: the variables this process owns (all of them when not sharded)."""
        return self._columns or (0, self.n_variables)

    @property
    def reduce(self) -> Reduce:
        """The sum over variable shards (an all-reduce with gradient), None when not sharded."""
        return all_reduce_sum if self.num_shards > 1 else None

    def _sum(self, t: Tensor) -> Tensor:
        return t if self.num_shards == 1 else all_reduce_sum(t)

    def _gather(self, t: Tensor) -> Tensor:
        """All variables of a per-variable tensor (last dim), on every process (a collective)."""
        return t if self.num_shards == 1 else all_gather_columns(t, dim=-1)

    def setup(self, stage: str) -> None:
        """Check the strategy and, when sharding, keep only this process's variables.

        Raises:
            ValueError: when ``shard_variables`` and the strategy disagree on several processes.
        """
        trainer = self.trainer
        world = trainer.world_size
        shard = bool(self.hparams.shard_variables)
        by_variables = isinstance(trainer.strategy, VariableShardingStrategy)
        if world > 1 and shard and not by_variables:
            raise ValueError(
                "CorexModule(shard_variables=True) on several processes needs "
                "--trainer.strategy ddp_variables (every process sees every sample and owns a "
                f"slice of the variables); got {type(trainer.strategy).__name__}"
            )
        if world > 1 and by_variables and not shard:
            raise ValueError(
                "--trainer.strategy ddp_variables splits the variables: set "
                "--model.init_args.shard_variables true (or use strategy ddp to split samples)"
            )
        if not shard or world == 1 or self._columns is not None:
            return
        p = self.n_variables
        if p < world:
            raise ValueError(f"cannot shard {p} variables over {world} processes")
        edges = [round(k * p / world) for k in range(world + 1)]
        self._bounds = list(zip(edges[:-1], edges[1:], strict=True))
        self._columns = self._bounds[trainer.global_rank]
        # every process starts from rank 0's weights (the same seed gives the same ones anyway)
        full = self.free_weights.data.to(trainer.strategy.root_device)
        dist.broadcast(full, src=0)
        lo, hi = self._columns
        self.free_weights = nn.Parameter(full[:, lo:hi].to(self.free_weights.device).clone())
        self.mean = self.mean[lo:hi].clone()
        self.scale = self.scale[lo:hi].clone()

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Keep this process's columns of ``x`` (before the batch reaches the device)."""
        if self._columns is None:
            return batch
        x, *rest = batch
        lo, hi = self._columns
        return (x[:, lo:hi], *rest)

    # -- checkpoints: full tensors, whatever the number of processes ---------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Gather the sharded weights, statistics and optimizer state into the checkpoint."""
        if self._columns is None:
            return
        state = checkpoint["state_dict"]
        for name in _PER_VARIABLE:
            state[name] = self._gather(state[name])
        local = tuple(self.free_weights.shape)
        _map_optimizer_states(
            checkpoint, lambda t: self._gather(t) if tuple(t.shape) == local else t
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Load float64 weights losslessly; slice a (full) checkpoint when sharded.

        Lightning restores a checkpoint before the precision plugin converts the module, so
        under ``precision: 64-true`` a module built in float32 (as the CLI builds it) would
        round the weights to float32 first; it is converted to float64 here instead.
        """
        trainer = self._trainer
        if trainer is not None and str(trainer.precision).startswith("64"):
            self.double()
        if self._columns is None:
            return
        lo, hi = self._columns
        p = self.n_variables
        state = checkpoint["state_dict"]
        for name in _PER_VARIABLE:
            if name in state and state[name].shape[-1] == p:
                state[name] = state[name][..., lo:hi].clone()
        full = (self.n_hidden, p)
        _map_optimizer_states(
            checkpoint, lambda t: t[:, lo:hi].clone() if tuple(t.shape) == full else t
        )

    # -- data -----------------------------------------------------------------------------------
    def _training_loader(self) -> Any:
        trainer = self.trainer
        datamodule = trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "train_dataloader"):
            return datamodule.train_dataloader()
        source = getattr(trainer.fit_loop, "_data_source", None)
        if source is not None and source.is_defined():
            return source.dataloader()
        raise ValueError(
            "CorexModule needs the training split (standardization and the covariance "
            "estimate come from it): give the trainer a datamodule with train_dataloader()"
        )

    def _read_training_set(self) -> Tensor:
        """The whole training split (this process's columns), float64 on the CPU."""
        lo, hi = self.columns
        parts = []
        for batch in self._training_loader():
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            parts.append(x[:, lo:hi].to(torch.float64).cpu())
        if not parts:
            raise ValueError("CorexModule: the training split is empty")
        return torch.cat(parts)

    def _agree(self, flag: bool) -> bool:
        """``flag`` on any process (a collective when sharded, so all raise together)."""
        if self.num_shards == 1:
            return flag
        value = torch.tensor(float(flag), device=self.device)
        return bool(self._sum(value) > 0)

    def prepare_training_set(self) -> None:
        """Read the training split once: statistics (first fit only) and the cached samples.

        Raises:
            ValueError: on missing values, fewer than 2 samples or a constant variable.
        """
        if self._train_z is not None:
            return
        x = self._read_training_set()
        n = x.shape[0]
        if self._agree(bool(torch.isnan(x).any())):
            raise ValueError(
                "CorexModule: the training data contain NaN; impute them first or use "
                "LinearCorex(missing_values=float('nan'))"
            )
        if self._agree(n < 2):
            raise ValueError(f"CorexModule: {n} training sample(s); at least 2 are needed")
        if int(self.n_fit_samples) == 0:
            mean = x.mean(0)
            std = (x - mean).pow(2).mean(0).sqrt()  # population, as LinearCorex
            constant = torch.nonzero(std == 0).flatten()
            if self._agree(constant.numel() > 0):
                raise ValueError(
                    "CorexModule: variable(s) with zero variance in the training data "
                    f"(local columns {constant[:5].tolist()}); drop them"
                )
            self.mean.copy_(mean.to(self.mean))
            self.scale.copy_(std.to(self.scale))
            self.n_fit_samples.fill_(n)
        self._train_z = self.standardize(x.to(self.device))

    def standardize_own(self, x: Tensor) -> Tensor:
        """``x`` standardized with its own mean and (population) standard deviation.

        The objective is computed on each set (a training batch, a held-out split) standardized
        by itself, so that ``|Corr(y_j, x_i)| < 1`` holds and the bound is defined; with the
        training statistics a minibatch or held-out samples can break it (NaN). On the whole
        training split the two standardizations coincide. A column constant within ``x``
        becomes 0 and contributes nothing.
        """
        x = x.to(self.free_weights.dtype)
        x = x - x.mean(0)
        return x / x.pow(2).mean(0).sqrt().clamp_min(torch.finfo(x.dtype).tiny)

    def standardize(self, x: Tensor) -> Tensor:
        """``(x - mean) / scale`` with the training statistics, in the weights' dtype."""
        dtype = self.free_weights.dtype
        return (x.to(dtype) - self.mean.to(dtype)) / self.scale.to(dtype)

    # -- the model ------------------------------------------------------------------------------
    @property
    def eps(self) -> float:
        """The annealing noise of the current epoch."""
        epoch = self.trainer.current_epoch if self._trainer is not None else 0
        return annealing_eps(epoch, self.hparams.epochs_per_stage, self.hparams.anneal)

    def moments(self, z: Tensor, eps: float = 0.0) -> CorexMoments:
        """:func:`~lit_info.info.corex.corex_moments` of the free weights on standardized ``z``.

        Args:
            z: ``(n, p_local)`` standardized samples (this process's columns).
            eps: annealing noise.
        """
        return corex_moments(z, self.free_weights, eps, free=True, reduce=self.reduce)

    def factor_tcs(self, moments: CorexMoments) -> Tensor:
        """Each factor's TC, :func:`~lit_info.info.corex.factor_tcs` summed over all shards."""
        return self._sum(variable_factor_mis(moments).sum(-1)) - factor_information(moments)

    def train_moments(self) -> CorexMoments:
        """The moments of the current weights on the whole training split at ``eps = 0``.

        What the covariance estimate, the factors and the logged per-factor TC come from;
        computed once per weight update (cached on the parameter's version counter).
        """
        self.prepare_training_set()
        assert self._train_z is not None
        key = (self.free_weights._version, self.free_weights.data_ptr())
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self.moments(self._train_z, 0.0))
        return self._cache[1]

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
    def on_fit_start(self) -> None:
        """Standardization statistics and the training split, before the sanity check."""
        self._cache = None
        self._train_z = None  # read again (the statistics are kept once computed)
        self.prepare_training_set()

    def on_validation_start(self) -> None:
        """Read the training split if not yet done (``validate`` without ``fit``)."""
        self.prepare_training_set()

    def on_test_start(self) -> None:
        """Read the training split if not yet done (the covariance estimate needs it)."""
        self.prepare_training_set()

    def on_predict_start(self) -> None:
        """Read the training split if not yet done (the factors' normalization needs it)."""
        self.prepare_training_set()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """``-TC / p`` of the batch at the epoch's annealing noise (divided by the shards)."""
        x = batch[0]
        eps = self.eps
        moments = self.moments(self.standardize_own(x), eps)
        tc = moments.tc
        loss = -tc / self.n_variables
        check_finite_loss(loss, self, batch_idx)
        n = int(x.shape[0])
        logged = {"on_step": False, "on_epoch": True, "batch_size": n, "sync_dist": True}
        self.log("train/tc", tc, prog_bar=True, **logged)
        self.log("train/loss", loss, **logged)
        self.log("train/eps", eps, **logged)
        # every process backpropagates the same loss through the all-reduces: N times the
        # gradient of its slice (see the module docstring)
        return loss / self.num_shards

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

    def on_train_epoch_end(self) -> None:
        """Per-factor TC histogram; weight and correlation images when due (rank zero)."""
        writer = self._tensorboard()
        if writer is None:
            return
        moments = self.train_moments()
        tcs = self.factor_tcs(moments)
        epoch = self.current_epoch
        if self.trainer.is_global_zero:
            writer.add_histogram("corex/factor_tc", tcs.detach().float().cpu(), epoch)
        every = self.hparams.image_every_n_epochs
        last = self.trainer.max_epochs is not None and epoch + 1 >= self.trainer.max_epochs
        due = every > 0 and ((epoch + 1) % every == 0 or last)
        if due and self.n_variables <= self.hparams.max_image_variables:
            self._log_images(writer, moments, tcs, epoch)

    def _tensorboard(self) -> Any:
        if self._trainer is None:
            return None
        loggers = [lg for lg in self.trainer.loggers if isinstance(lg, TensorBoardLogger)]
        return loggers[0].experiment if loggers else None

    @torch.no_grad()
    def _log_images(self, writer: Any, moments: CorexMoments, tcs: Tensor, epoch: int) -> None:
        """``|W|`` and the correlation matrices, variables grouped by cluster (a collective)."""
        assert moments.weights is not None and self._train_z is not None
        weights = self._gather(moments.weights).float().cpu()  # m x p
        mis = self._gather(variable_factor_mis(moments)).float().cpu()
        full = dataclasses.replace(
            moments, weights=None, rho=self._gather(moments.rho), s=self._gather(moments.s)
        )
        estimated = moments_covariance(full).correlation().dense().float().cpu()
        z = self._gather(self._train_z).float().cpu()
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
        writer.add_image("corex/weights", _upscale(w, rows, cols), epoch, dataformats="CHW")
        zc = z - z.mean(0)
        sample = (zc.T @ zc) / (zc.norm(dim=0)[:, None] * zc.norm(dim=0)[None, :]).clamp_min(1e-12)
        ordered = [c[order][:, order] for c in (estimated, sample)]
        gap = torch.ones(3, p, max(1, p // 32))
        image = torch.cat([_red_blue(ordered[0]), gap, _red_blue(ordered[1])], dim=2)
        writer.add_image("corex/correlation", _upscale(image, cols, cols), epoch)

    # -- optimization ---------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam or SGD on the free weights."""
        hp = self.hparams
        if hp.optimizer == "adam":
            return torch.optim.Adam([self.free_weights], lr=hp.lr)
        return torch.optim.SGD([self.free_weights], lr=hp.lr, momentum=hp.momentum)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Lightning's clipping; by norm, the norm over all shards when sharded."""
        if self.num_shards == 1 or not gradient_clip_val or gradient_clip_algorithm == "value":
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        grad = self.free_weights.grad
        if grad is None:
            return
        norm = self._sum(grad.pow(2).sum()).sqrt()
        grad.mul_((gradient_clip_val / (norm + 1e-6)).clamp(max=1.0))
