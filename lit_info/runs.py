"""Run folders: where a run writes, and the rule that no run overwrites another's files.

A run owns one folder, the logger's log dir ``<save_dir>/<name>/version_<N>`` (``save_dir``
defaults to ``trainer.default_root_dir``, itself ``runs`` by default): the resolved
``config.yaml``, TensorBoard events, ``checkpoints/`` and the per-sample CSVs all go there.

- ``fit`` takes the next free ``version_<N>``; an explicitly named version that already holds
  files is refused.
- ``fit --ckpt_path`` continues in the folder of the run that wrote the checkpoint (recorded in
  the checkpoint by :class:`RunFolderRecorder`, else read from the ``<run>/checkpoints/`` layout)
  and saves its config as ``config_resume<k>.yaml``.
- ``validate`` / ``test`` / ``predict`` of a checkpoint write into a fresh sub-folder of the run
  they evaluate, ``<run>/<subcommand>_<checkpoint stem>/version_<N>``, with their own config and
  ``metrics.json`` / ``predictions.csv``; without a checkpoint, into ``<save_dir>/<name>/
  <subcommand>/version_<N>``.

The functions here only compute paths and read checkpoints; the CLI applies them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from lit_info.checkpoints import read_checkpoint
from lit_info.dist import local_log_dir

#: Environment variable through which the launching process hands its resolved run folder to
#: the processes Lightning starts for DDP (they re-run the command line).
RUN_DIR_ENV = "LIT_INFO_RUN_DIR"
_VERSION = re.compile(r"^version_(\d+)$")


def next_version(root: str | os.PathLike[str]) -> int:
    """The smallest ``N`` above every existing ``root/version_<N>`` folder (0 if none).

    Args:
        root: the folder holding the versions (``<save_dir>/<name>``).

    Returns:
        The version number for a new run.
    """
    root = Path(root)
    if not root.is_dir():
        return 0
    numbers = [int(m.group(1)) for p in root.iterdir() if (m := _VERSION.match(p.name))]
    return max(numbers, default=-1) + 1


def holds_run(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds files of an earlier run (config, events or checkpoints).

    Other files (e.g. an input list that a driver script wrote there first) do not count.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return False
    return (
        any(folder.glob("config*.yaml"))
        or any(folder.glob("events.out.tfevents.*"))
        or any(folder.glob("checkpoints/*"))
        or (folder / "metrics.csv").exists()
    )


def find_checkpoint(root: str | os.PathLike[str], which: str) -> Path | None:
    """The newest ``last`` or ``best`` checkpoint of any run under ``root``.

    Args:
        root: ``<save_dir>/<name>``, holding ``version_<N>/checkpoints/``.
        which: ``"last"`` (``last*.ckpt``, else the newest checkpoint of the run) or ``"best"``
            (``best*.ckpt``).

    Returns:
        The newest matching file by modification time, or None when no run has one.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    pattern = "last*.ckpt" if which == "last" else "best*.ckpt"
    found = list(root.glob(f"*/checkpoints/{pattern}"))
    if not found and which == "last":
        found = list(root.glob("*/checkpoints/*.ckpt"))
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def run_dir_of_checkpoint(path: str | os.PathLike[str], checkpoint: dict | None) -> Path | None:
    """The run folder that wrote a checkpoint, or None when it cannot be told.

    Args:
        path: the checkpoint file.
        checkpoint: its loaded content (for the folder recorded by :class:`RunFolderRecorder`).

    Returns:
        The recorded folder if it still exists, else ``<run>`` for a file in
        ``<run>/checkpoints/``, else None.
    """
    recorded = None
    if isinstance(checkpoint, dict):
        for key, state in (checkpoint.get("callbacks") or {}).items():
            if str(key).startswith("RunFolderRecorder") and isinstance(state, dict):
                recorded = state.get("run_dir")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    path = Path(path).resolve()
    if path.parent.name == "checkpoints":
        return path.parent.parent
    return None


def resume_config_name(run_dir: str | os.PathLike[str]) -> str:
    """``config.yaml`` if the run has none yet, else the first free ``config_resume<k>.yaml``."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        return "config.yaml"
    k = 1
    while (run_dir / f"config_resume{k}.yaml").exists():
        k += 1
    return f"config_resume{k}.yaml"


def inspect_checkpoint(path: str | os.PathLike[str], trusted: bool) -> dict:
    """Read a ``--ckpt_path`` file, with the clear errors of :func:`read_checkpoint`.

    Args:
        path: the checkpoint.
        trusted: load it in full (``--weights_only false``).

    Returns:
        The checkpoint's content.
    """
    ckpt = read_checkpoint(path, trusted=trusted, what="--ckpt_path")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(
            f"--ckpt_path {path} is not a Lightning checkpoint (no 'state_dict' entry); "
            "pass a .ckpt file written by a lit_info run"
        )
    return ckpt


class RunFolderRecorder(pl.Callback):
    """Records the run folder in every checkpoint, so a resume continues in the same folder.

    The CLI adds it to every run; it keeps no other state.
    """

    def __init__(self) -> None:
        self.run_dir: str | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remember the trainer's log dir."""
        log_dir = local_log_dir(trainer)
        self.run_dir = None if log_dir is None else str(log_dir.resolve())

    def state_dict(self) -> dict[str, Any]:
        """The run folder, saved in the checkpoint."""
        return {"run_dir": self.run_dir}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the CLI has already chosen the folder from the checkpoint."""
