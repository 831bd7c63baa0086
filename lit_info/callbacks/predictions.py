"""Per-sample predictions of ``predict`` written to one CSV, ordered by sample index."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from lit_info.dist import all_gather_variable, local_log_dir


class PredictionWriter(pl.Callback):
    """Write the predictions of a predict run to a CSV file in the run folder, one row per sample.

    ``predict_step`` must return a dict with an ``index`` tensor (the dataset index of each
    sample) and further per-sample tensors: a 1-D entry becomes one column, a 2-D entry
    ``probs`` of ``k`` columns becomes ``probs_0 ... probs_{k-1}``. Under DDP the rows of all
    ranks are gathered and the sampler's padding (a sample seen twice) is dropped, so the file
    holds each sample once, sorted by index. The file is written atomically (temp + rename).

    Args:
        filename: name of the CSV file, in the run folder (for the toolkit's models, columns
            index, label, predicted and probs_0, probs_1, ..., one per class).
    """

    def __init__(self, filename: str = "predictions.csv") -> None:
        self.filename = filename
        self.path: Path | None = None
        self.rows = 0
        self._outputs: list[dict[str, Tensor]] = []

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start collecting."""
        self._outputs = []

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Keep the batch's per-sample outputs on the CPU."""
        if not isinstance(outputs, dict) or "index" not in outputs:
            raise ValueError(
                f"{type(pl_module).__name__}.predict_step must return a dict with an 'index' "
                f"entry for PredictionWriter, got {type(outputs).__name__}"
            )
        self._outputs.append({k: v.detach() for k, v in outputs.items() if isinstance(v, Tensor)})

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Gather across ranks and write the CSV on rank 0."""
        if not self._outputs:
            return
        keys = list(self._outputs[0])
        columns = {
            k: all_gather_variable(torch.cat([o[k] for o in self._outputs]).to(pl_module.device))
            for k in keys
        }
        self._outputs = []
        index = columns.pop("index").long().cpu()
        order = torch.argsort(index, stable=True)
        index = index[order]
        keep = torch.ones_like(index, dtype=torch.bool)
        keep[1:] = index[1:] != index[:-1]  # drop the DistributedSampler's repeated samples
        index = index[keep]
        header = ["index"]
        values: list[Tensor] = [index.unsqueeze(1)]
        for key, tensor in columns.items():
            tensor = tensor.cpu()[order][keep]
            if tensor.dim() == 1:
                header.append(key)
                values.append(tensor.unsqueeze(1))
            else:
                tensor = tensor.reshape(tensor.shape[0], -1)
                header += [f"{key}_{j}" for j in range(tensor.shape[1])]
                values.append(tensor)
        self.rows = int(index.numel())
        log_dir = local_log_dir(trainer)
        if trainer.global_rank != 0 or log_dir is None:
            return
        self.path = log_dir / self.filename
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            table = [v.double() if v.is_floating_point() else v for v in values]
            for row in zip(*(t.tolist() for t in table), strict=True):
                writer.writerow([x for part in row for x in part])
        os.replace(tmp, self.path)
