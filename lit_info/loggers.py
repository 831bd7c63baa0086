"""Loggers whose folder follows ``trainer.default_root_dir`` when the config names none."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger as _LightningTensorBoardLogger

#: Where runs go when neither the logger nor the trainer names a folder.
DEFAULT_ROOT_DIR = "runs"


class TensorBoardLogger(_LightningTensorBoardLogger):
    """TensorBoard logger whose folder follows trainer.default_root_dir unless save_dir is set.

    Configs name the experiment (``name: classifier/mnist_uniform0.8_ce``) and leave ``save_dir``
    out: the CLI sets it to ``trainer.default_root_dir`` (default ``runs``), so
    ``--trainer.default_root_dir DIR`` moves logs, config and checkpoints of a run together.
    ``version`` left unset means the next free ``version_<N>``.

    Args:
        save_dir: root folder of the runs; unset = trainer.default_root_dir (default: runs).
        name: sub-folder of the experiment, e.g. classifier/mnist_uniform0.8_ce.
        version: folder of this run inside it: a number N gives version_N, a text is used as
            is; unset = the next free version_N.
        **kwargs: further options of Lightning's TensorBoard logger.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str] | None = None,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(save_dir or DEFAULT_ROOT_DIR, name=name, version=version, **kwargs)
