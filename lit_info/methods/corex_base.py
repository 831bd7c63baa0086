r"""What the CorEx LightningModules share: sharded variables, full checkpoints, logging, Adam.

:class:`CorexModuleBase` is the base of :class:`~lit_info.methods.corex_module.CorexModule`
(linear CorEx) and :class:`~lit_info.methods.tcorex_module.TCorexModule` (T-CorEx): both train
free weights ``V`` (``m x p``, or ``T x m x p``; the variables on the last axis) with
standardization buffers ``mean`` and ``scale`` (the variables on the last axis too) on the
whole training split, read once and kept on the device. What is the same for both lives here:

* sharding the variables (``shard_variables: true`` with ``--trainer.strategy ddp_variables``,
  :class:`~lit_info.strategies.VariableShardingStrategy`): the strategy checks, the contiguous
  column slice of every process (:attr:`CorexModuleBase.columns`), the slicing of the weights,
  the statistics and every batch (``on_before_batch_transfer``), the sums over shards
  (:attr:`CorexModuleBase.reduce`, an all-reduce with gradient) and the gathers;
* checkpoints that hold the full weights, statistics and optimizer state whatever the number
  of processes (gathered when saved, sliced when loaded), loaded losslessly in float64;
* reading the training split, the annealing noise ``eps`` (:func:`annealing_eps`), the cached
  moments of the current weights, the per-factor TC summed over shards;
* logging: the ``train/*`` scalars, a histogram every epoch and images when due, on rank zero
  to the TensorBoard logger's ``experiment`` (the image helpers :func:`upscale`,
  :func:`red_blue`, :func:`bar_image`);
* the optimizer (Adam, or SGD where the subclass offers it) and gradient clipping by the norm
  over all shards;
* :func:`sharded_nll`: the Gaussian NLL of a low-rank-plus-diagonal covariance whose variables
  are sharded.

A subclass defines ``__init__`` (calling :meth:`CorexModuleBase._init_shards`),
``prepare_training_set`` (which fills ``_train``), ``train_moments`` (through
:meth:`CorexModuleBase._cached_moments`), the steps, ``_epoch_histogram`` and ``_log_images``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from lit_info.dist import all_gather_columns, all_reduce_sum
from lit_info.info.corex import (
    ANNEAL_SCHEDULE,
    CorexMoments,
    factor_information,
    variable_factor_mis,
)
from lit_info.info.low_rank import LowRankPlusDiagonal
from lit_info.methods.base import check_finite_loss
from lit_info.strategies import VariableShardingStrategy

__all__ = [
    "Batch",
    "CorexModuleBase",
    "Reduce",
    "annealing_eps",
    "bar_image",
    "check_integers",
    "check_positive",
    "red_blue",
    "require_hints",
    "sharded_nll",
    "split_batch",
    "upscale",
]

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


def split_batch(batch: Any) -> tuple[Tensor, Tensor]:
    """``(x, period)`` of a ``(x, period, index)`` batch; a bare ``x`` is all period 0."""
    if isinstance(batch, (tuple, list)):
        x = batch[0]
        if len(batch) > 1:
            return x, torch.as_tensor(batch[1], device=x.device).long()
    else:
        x = batch
    return x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device)


# -- argument checks ----------------------------------------------------------------------------
def require_hints(owner: str, **hints: object) -> None:
    """Refuse an unset value that the CLI fills from the datamodule (``model_hints``).

    Raises:
        ValueError: naming the first unset hint.
    """
    for name, value in hints.items():
        if value is None:
            raise ValueError(
                f"{owner} needs {name}; the CLI fills it from the datamodule "
                f"(model_hints); in Python pass it explicitly, e.g. {name}=dm.{name}"
            )


def check_integers(*specs: tuple[str, object, int]) -> None:
    """Every ``(name, value, low)``: ``value`` is an integer (not a bool) ``>= low``.

    Raises:
        ValueError: naming the first that is not.
    """
    for name, value, low in specs:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_positive(**values: float) -> None:
    """Every value is ``> 0``.

    Raises:
        ValueError: naming the first that is not.
    """
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")


# -- images ---------------------------------------------------------------------------------------
def red_blue(c: Tensor) -> Tensor:
    """``(3, H, W)`` image of values in ``[-1, 1]``: red positive, blue negative, white 0."""
    c = c.clamp(-1.0, 1.0)
    pos, neg = c.clamp_min(0.0), (-c).clamp_min(0.0)
    return torch.stack([1.0 - neg, 1.0 - pos - neg, 1.0 - pos])


def upscale(image: Tensor, rows: int, cols: int) -> Tensor:
    """Nearest-neighbour upscaling of ``(..., H, W)`` by integer factors."""
    return image.repeat_interleave(rows, dim=-2).repeat_interleave(cols, dim=-1)


def bar_image(values: Tensor, height: int = 64, bar: int = 12, gap: int = 4) -> Tensor:
    """``(3, height, W)`` bar chart of nonnegative ``values``, bars scaled to the largest.

    Dark blue bars on white, left to right, ``bar`` pixels wide with ``gap`` pixels between
    them (and at the edges); a bar of zero height is drawn as a one-pixel line.

    Args:
        values: ``(k,)`` nonnegative numbers (NaN is drawn as zero).
        height: image height in pixels.
        bar: bar width in pixels.
        gap: gap width in pixels.
    """
    values = torch.nan_to_num(values.detach().double().cpu().clamp_min(0.0), nan=0.0)
    k = int(values.shape[0])
    top = float(values.max()) if k else 0.0
    heights = (values / top * height).round().long() if top > 0 else torch.zeros(k).long()
    heights = heights.clamp(1, height)
    width = gap + k * (bar + gap)
    image = torch.ones(3, height, width)
    color = torch.tensor([0.12, 0.3, 0.6])
    for j in range(k):
        left = gap + j * (bar + gap)
        image[:, height - int(heights[j]) :, left : left + bar] = color[:, None, None]
    return image


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


class CorexModuleBase(pl.LightningModule):
    """The plumbing of the CorEx LightningModules (see :mod:`lit_info.methods.corex_base`).

    A subclass sets ``n_variables``, ``n_hidden``, the parameter ``free_weights`` (variables on
    the last axis), the buffers ``mean`` and ``scale`` (variables on the last axis) and calls
    :meth:`_init_shards`; its hyperparameters include ``shard_variables``, ``optimizer``,
    ``lr``, ``anneal``, ``epochs_per_stage`` and ``image_every_n_epochs`` (``momentum`` with
    ``optimizer: sgd``).
    """

    n_variables: int
    n_hidden: int
    free_weights: nn.Parameter
    mean: Tensor
    scale: Tensor

    def _init_shards(self) -> None:
        """Not sharded (until ``setup``), no training split read, no moments cached."""
        self._columns: tuple[int, int] | None = None  # this process's variables when sharded
        self._bounds: list[tuple[int, int]] = [(0, self.n_variables)]
        self._train: Any = None  # the training split, as prepare_training_set keeps it
        self._cache: tuple[Any, CorexMoments] | None = None

    # -- what a subclass defines ----------------------------------------------------------------
    def prepare_training_set(self) -> None:
        """Read the training split once (statistics on the first fit) into ``_train``."""
        raise NotImplementedError

    def train_moments(self) -> CorexMoments:
        """The moments of the current weights on the whole training split at ``eps = 0``."""
        raise NotImplementedError

    def _epoch_histogram(self, moments: CorexMoments) -> tuple[str, Tensor]:
        """The tag and values of the histogram logged every epoch (a collective if sharded)."""
        raise NotImplementedError

    def _log_images(self, writer: Any, moments: CorexMoments, epoch: int) -> None:
        """Write the images of ``epoch`` on rank zero (a collective when sharded)."""
        raise NotImplementedError

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

    def _agree(self, flag: bool) -> bool:
        """``flag`` on any process (a collective when sharded, so all raise together)."""
        if self.num_shards == 1:
            return flag
        value = torch.tensor(float(flag), device=self.device)
        return bool(self._sum(value) > 0)

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
                f"{type(self).__name__}(shard_variables=True) on several processes needs "
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
        self.free_weights = nn.Parameter(full[..., lo:hi].to(self.free_weights.device).clone())
        self.mean = self.mean[..., lo:hi].clone()
        self.scale = self.scale[..., lo:hi].clone()

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
        full = (*self.free_weights.shape[:-1], p)
        _map_optimizer_states(
            checkpoint, lambda t: t[..., lo:hi].clone() if tuple(t.shape) == full else t
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
            f"{type(self).__name__} needs the training split (standardization and the "
            "covariance estimates come from it): give the trainer a datamodule with "
            "train_dataloader()"
        )

    def _read_training_set(self) -> tuple[Tensor, Tensor]:
        """The whole training split (this process's columns, float64) and its periods, CPU."""
        lo, hi = self.columns
        xs, periods = [], []
        for batch in self._training_loader():
            x, period = split_batch(batch)
            xs.append(x[:, lo:hi].to(torch.float64).cpu())
            periods.append(period.cpu())
        if not xs:
            raise ValueError(f"{type(self).__name__}: the training split is empty")
        return torch.cat(xs), torch.cat(periods)

    # -- the model ------------------------------------------------------------------------------
    @property
    def eps(self) -> float:
        """The annealing noise of the current epoch."""
        epoch = self.trainer.current_epoch if self._trainer is not None else 0
        return annealing_eps(epoch, self.hparams.epochs_per_stage, self.hparams.anneal)

    def _cached_moments(self, compute: Callable[[], CorexMoments]) -> CorexMoments:
        """``compute()`` without gradient, once per weight update (the parameter's version)."""
        key = (self.free_weights._version, self.free_weights.data_ptr())
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, compute())
        return self._cache[1]

    def factor_tcs(self, moments: CorexMoments) -> Tensor:
        """Each factor's TC (per period for T-CorEx), summed over all shards.

        :func:`~lit_info.info.corex.factor_tcs` with the sum over variables all-reduced.
        """
        return self._sum(variable_factor_mis(moments).sum(-1)) - factor_information(moments)

    # -- steps ----------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """Statistics (and any start fitted to them) and the training split, before sanity."""
        self._cache = None
        self._train = None  # read again (the statistics are kept once computed)
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

    def _training_loss(
        self, loss: Tensor, batch_idx: int, n: int, tc: Tensor, eps: float, **terms: Tensor
    ) -> Tensor:
        """Check and log ``loss`` (``train/tc``, ``train/<terms>``, ``train/loss``, ``train/eps``).

        Returns:
            ``loss`` divided by the number of shards: every process backpropagates the same
            loss through the all-reduces, i.e. ``N`` times the gradient of its slice.
        """
        check_finite_loss(loss, self, batch_idx)
        logged = {"on_step": False, "on_epoch": True, "batch_size": n, "sync_dist": True}
        self.log("train/tc", tc, prog_bar=True, **logged)
        for name, value in terms.items():
            self.log(f"train/{name}", value, **logged)
        self.log("train/loss", loss, **logged)
        self.log("train/eps", eps, **logged)
        return loss / self.num_shards

    def on_train_epoch_end(self) -> None:
        """The epoch's histogram; the images when due (rank zero, TensorBoard logger only)."""
        writer = self._tensorboard()
        if writer is None:
            return
        moments = self.train_moments()
        tag, values = self._epoch_histogram(moments)
        epoch = self.current_epoch
        if self.trainer.is_global_zero:
            writer.add_histogram(tag, values.detach().float().cpu(), epoch)
        every = self.hparams.image_every_n_epochs
        last = self.trainer.max_epochs is not None and epoch + 1 >= self.trainer.max_epochs
        if every > 0 and ((epoch + 1) % every == 0 or last):
            self._log_images(writer, moments, epoch)

    def _tensorboard(self) -> Any:
        if self._trainer is None:
            return None
        loggers = [lg for lg in self.trainer.loggers if isinstance(lg, TensorBoardLogger)]
        return loggers[0].experiment if loggers else None

    # -- optimization ---------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam (or SGD, where the module offers it) on the free weights."""
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
