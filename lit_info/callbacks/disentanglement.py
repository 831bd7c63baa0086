"""Disentanglement monitor: how well learned factors separate the characters of word images.

Every ``every_n_epochs``-th validation epoch (and the last one), and after ``test``, the
callback encodes the training split and the evaluated split (validation, or test: the held-out
combinations, non-words by default) with ``pl_module.encode`` and computes
:func:`lit_info.info.disentanglement.disentanglement_scores`: the k-NN information of each
factor about each character position on the held-out samples, the mutual information gap, the
held-out accuracy of a linear probe per position fitted on the training samples, and the tile
locality of each factor's component. A factor's *component* is the image of its correlation
with every pixel on the training samples (for a linear encoder, the pattern it reads; the same
definition for every model, so components compare across methods).

Logged (``<stage>`` = ``val`` or ``test``): ``<stage>/mig``, ``<stage>/probe``,
``<stage>/locality`` and per position ``<stage>/mig_<k>``, ``<stage>/probe_<k>``. TensorBoard
(rank zero): ``disentanglement/<stage>_information``, the ``factors x positions`` matrix of
``I / H(position)`` (factors ordered by the position they inform most about, black 0, white 1,
each cell 16 px), and ``disentanglement/components``, the components side by side in the same
order (red positive, blue negative correlation). After ``test`` the full result is written to
``<run>/disentanglement_test.json`` (atomically).

DDP: the samples are encoded in shards (each process its part, gathered by sample index), so
every process holds all factors and computes the same scores; nothing else is collective.

The datamodule must provide ``train_set`` and ``val_set`` / ``test_set`` datasets with
``images`` (``N x C x H x W``) and ``labels`` (``N x k``) tensors and items ending with the
sample index (:class:`~lit_info.data.words.WordImageDataModule`).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from lit_info.dist import gather_by_index, local_log_dir, rank_shard_loader
from lit_info.info.disentanglement import (
    DisentanglementScores,
    disentanglement_scores,
    factor_groups,
)
from lit_info.methods.corex_base import check_integers, red_blue, upscale

__all__ = ["DisentanglementMonitor", "factor_pixel_correlation"]


def factor_pixel_correlation(factors: Tensor, images: Tensor) -> Tensor:
    """Correlation of every factor with every pixel: ``(m, H, W)`` (first channel's shape).

    Constant pixels (and constant factors) have correlation 0.
    """
    x = images.flatten(1).double()
    f = factors.double()
    x = x - x.mean(0)
    f = f - f.mean(0)
    x = x / x.norm(dim=0).clamp_min(1e-300)
    f = f / f.norm(dim=0).clamp_min(1e-300)
    corr = f.T @ x
    return corr.reshape(f.shape[1], *images.shape[-2:]) if images.shape[1] == 1 else corr


class DisentanglementMonitor(pl.Callback):
    """Log disentanglement scores of ``pl_module.encode`` on the word-image splits.

    Args:
        every_n_epochs: evaluate every this many validation epochs (and at the last one);
            0 = only after ``test``.
        n_neighbors: neighbours of the k-NN information estimator.
        batch_size: encoding batch size.
        random_state: seed of the estimator's jitter (fixed: the same factors, the same scores).
    """

    def __init__(
        self,
        every_n_epochs: int = 10,
        n_neighbors: int = 3,
        batch_size: int = 1024,
        random_state: int = 0,
    ) -> None:
        super().__init__()
        check_integers(
            ("every_n_epochs", every_n_epochs, 0),
            ("n_neighbors", n_neighbors, 1),
            ("batch_size", batch_size, 1),
        )
        self.every_n_epochs = every_n_epochs
        self.n_neighbors = n_neighbors
        self.batch_size = batch_size
        self.random_state = random_state
        self.last_scores: dict[str, DisentanglementScores] = {}

    # -- encoding ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _encode(self, trainer: pl.Trainer, pl_module: pl.LightningModule, dataset: Any) -> Tensor:
        loader = rank_shard_loader(
            dataset, trainer.world_size, trainer.global_rank, self.batch_size
        )
        was_training = pl_module.training
        pl_module.eval()
        indices, values = [], []
        for batch in loader:
            indices.append(batch[-1].to(pl_module.device))
            images = batch[0].to(pl_module.device, pl_module.dtype)
            values.append(pl_module.encode(images).double())
        if was_training:
            pl_module.train()
        index = torch.cat(indices)
        factors = torch.cat(values)
        if trainer.world_size > 1:
            factors = gather_by_index(index, factors, len(dataset))
        else:
            factors = factors[torch.argsort(index)]
        return factors.cpu()

    def evaluate(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
    ) -> tuple[DisentanglementScores, Tensor]:
        """Scores on the ``stage`` split (``val`` or ``test``) and the components ``(m, H, W)``."""
        datamodule = trainer.datamodule  # type: ignore[attr-defined]
        train_set = datamodule.train_set
        held_out = datamodule.val_set if stage == "val" else datamodule.test_set
        train_factors = self._encode(trainer, pl_module, train_set)
        test_factors = self._encode(trainer, pl_module, held_out)
        components = factor_pixel_correlation(train_factors, train_set.images)
        scores = disentanglement_scores(
            train_factors.numpy(),
            train_set.labels.numpy(),
            test_factors.numpy(),
            held_out.labels.numpy(),
            components=components.numpy(),
            n_neighbors=self.n_neighbors,
            random_state=self.random_state,
        )
        self.last_scores[stage] = scores
        return scores, components

    # -- hooks -------------------------------------------------------------------------------------
    def _due(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking or self.every_n_epochs == 0:
            return False
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        return last or (epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Scores on the validation combinations, when due."""
        if self._due(trainer):
            self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Scores on the test combinations; writes ``disentanglement_test.json``."""
        scores = self._log(trainer, pl_module, "test")
        folder = local_log_dir(trainer)
        if trainer.is_global_zero and folder is not None:
            self._write_json(folder / "disentanglement_test.json", scores, trainer)

    def _log(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
    ) -> DisentanglementScores:
        scores, components = self.evaluate(trainer, pl_module, stage)
        for name, value in scores.summary().items():
            pl_module.log(f"{stage}/{name}", value, sync_dist=True)
        if trainer.is_global_zero:
            self._images(trainer, scores, components, stage)
        return scores

    def _images(
        self, trainer: pl.Trainer, scores: DisentanglementScores, components: Tensor, stage: str
    ) -> None:
        writer = None
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                writer = logger.experiment
        if writer is None:
            return
        order = np.lexsort((-scores.information.max(1), factor_groups(scores.information)))
        matrix = torch.from_numpy(np.clip(scores.normalized[order], 0.0, 1.0)).float()
        image = upscale(matrix, 16, 16).unsqueeze(0)
        step = trainer.current_epoch
        writer.add_image(f"disentanglement/{stage}_information", image, step)
        comps = components[torch.from_numpy(order)].float()
        comps = comps / comps.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        rows: list[Tensor] = []
        for component in comps:  # stacked top to bottom, 2 px apart
            rows += [component, torch.zeros(2, component.shape[1])]
        strip = torch.cat(rows[:-1], dim=0)
        writer.add_image("disentanglement/components", upscale(red_blue(strip), 2, 2), step)

    def _write_json(self, path: Any, scores: DisentanglementScores, trainer: pl.Trainer) -> None:
        datamodule = trainer.datamodule  # type: ignore[attr-defined]
        payload = {
            "alphabets": list(getattr(datamodule, "alphabets", [])),
            "summary": scores.summary(),
            "information": scores.information.tolist(),
            "normalized": scores.normalized.tolist(),
            "mig": scores.mig.tolist(),
            "probe": scores.probe.tolist(),
            "locality": None if scores.locality is None else scores.locality.tolist(),
        }
        os.makedirs(path.parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".disentanglement-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(payload, handle, indent=1)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
