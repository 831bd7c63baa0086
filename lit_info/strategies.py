"""Strategies beyond Lightning's own: variable sharding, ``--trainer.strategy ddp_variables``.

Lightning's ``ddp`` replicates the model on every process, splits the *samples* between them
(a ``DistributedSampler``) and averages the gradients (``DistributedDataParallel``). A model
whose size grows with the number of variables (linear CorEx: weights ``m x p``, data
``n x p`` with ``p`` up to 10^5 and more) is split the other way: every process owns a
contiguous slice of the *variables* (columns of the data and of the weights), sees every sample,
and the module itself all-reduces the sums over variables inside its objective (with gradient:
:func:`lit_info.dist.all_reduce_sum`). Nothing is replicated, so there is nothing for DDP to
average, and its wrapper would refuse parameters whose shapes differ between processes.

:class:`VariableShardingStrategy` is that: DDP's launcher, process group and collectives
(``reduce``, ``barrier``, ``broadcast``; ``self.log(..., sync_dist=True)`` works as usual), with

* no ``DistributedDataParallel`` wrapper and no broadcast of the module's state from rank 0
  (each process keeps its own shard);
* a sampler that gives every process every sample (``num_replicas=1``), in the same order (the
  shuffling is seeded identically on every process).

The module must shard itself (``CorexModule(shard_variables=True)`` checks that it runs under
this strategy, and refuses plain ``ddp``). Checkpoints are written by rank 0 as usual; the
module gathers its shards into them, so a checkpoint does not depend on the number of
processes.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.fabric.utilities.optimizer import _optimizers_to_device
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from lightning.pytorch.trainer.states import TrainerFn

__all__ = ["VariableShardingStrategy"]


class VariableShardingStrategy(DDPStrategy):
    """DDP processes without the DDP wrapper: for modules that shard their own variables.

    Every process sees every sample; the module splits the variables and all-reduces its sums
    over them (see the module docstring of :mod:`lit_info.strategies`). Accepts the arguments
    of Lightning's ``DDPStrategy`` (those of the wrapper itself, such as
    ``find_unused_parameters``, have no effect). On the command line:
    ``--trainer.strategy ddp_variables --trainer.devices N``.
    """

    strategy_name = "ddp_variables"

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any]:
        """One replica: Lightning's ``DistributedSampler`` gives every process every sample."""
        return {"num_replicas": 1, "rank": 0}

    def setup(self, trainer: pl.Trainer) -> None:
        """Move the module to its device and set up the optimizers; no wrapper, no broadcast."""
        assert self.accelerator is not None
        assert self.model is not None
        self.accelerator.setup(trainer)
        self.precision_plugin.convert_module(self.model)
        self.model_to_device()
        fitting = trainer.state.fn == TrainerFn.FITTING
        if fitting:
            self.setup_optimizers(trainer)
        self.setup_precision_plugin()
        if fitting:
            _optimizers_to_device(self.optimizers, self.root_device)

    def configure_ddp(self) -> None:
        """Nothing to wrap: the parameters are shards, not replicas."""

    @classmethod
    def register_strategies(cls, strategy_registry: Any) -> None:
        """Register ``ddp_variables`` (subprocess launcher, like ``ddp``)."""
        if cls.strategy_name not in strategy_registry:
            strategy_registry.register(
                cls.strategy_name,
                cls,
                description="DDP processes that shard the variables (no wrapper, every sample)",
                start_method="popen",
            )


VariableShardingStrategy.register_strategies(StrategyRegistry)
