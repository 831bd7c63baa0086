"""Reading checkpoint files safely: one place for nets, methods, callbacks and the CLI.

A checkpoint is a pickle, and unpickling a file runs whatever code the file names. Everything
here loads with ``torch.load(..., weights_only=True)``: only tensors, containers and the few
plain classes on :data:`SAFE_GLOBALS` (what Lightning checkpoints of lit_info modules hold:
``collections.Counter`` for ``MultiStepLR`` milestones, paths, NumPy scalars) can be restored.
A file that needs more is refused with a message naming the class; ``trusted=True`` (the CLI's
``--weights_only false``) loads it in full, for files from a source you trust.

This module depends on torch only (no Lightning), so plain ``nn.Module`` architectures can read
pretrained weights without importing the LightningModules.
"""

from __future__ import annotations

import collections
import pathlib
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

SAFE_GLOBALS: list[Any] = [
    collections.Counter,
    collections.OrderedDict,
    collections.defaultdict,
    pathlib.Path,
    pathlib.PosixPath,
    pathlib.WindowsPath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
    np.dtype,
    np.bool_,
    np.int64,
    np.int32,
    np.float64,
    np.float32,
    type(np.dtype(np.float64)),
    type(np.dtype(np.float32)),
    type(np.dtype(np.int64)),
    type(np.dtype(np.int32)),
]
try:  # NumPy scalars are pickled through this reconstructor (its module moved in NumPy 2)
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # pragma: no cover - NumPy < 2
    from numpy.core.multiarray import scalar as _np_scalar  # type: ignore[no-redef]
SAFE_GLOBALS.append(_np_scalar)

# Registered once at import: Lightning's own ``torch.load(weights_only=True)`` of a lit_info
# checkpoint (resuming with --ckpt_path) accepts the same classes.
torch.serialization.add_safe_globals(SAFE_GLOBALS)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: damaged, not a checkpoint, or unsafe to load."""


_UNSAFE = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def read_checkpoint(path: str | Path, trusted: bool = False, what: str = "checkpoint") -> dict:
    """Load a checkpoint file onto the CPU, with a clear error for every way it can fail.

    Args:
        path: the ``.ckpt`` / ``.pt`` / ``.pth`` file.
        trusted: unpickle in full (runs code named in the file; only for files
            from a source you trust).
        what: how the error messages name the file (e.g. ``"--ckpt_path"``).

    Returns:
        The unpickled object (a dict for Lightning checkpoints and state dicts).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        CheckpointError: when the file is damaged or not a checkpoint, or (``trusted=False``)
            names a class outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as err:
        text = str(err)
        match = _UNSAFE.search(text)
        if match:
            name = match.group(1)
            raise CheckpointError(
                f"{what} {path} holds {name}, which lit_info does not load from files by default "
                "(unpickling it could run code from the file); if you trust the file, load it "
                "with --weights_only false (Python: trusted=True)"
            ) from None
        raise CheckpointError(_damaged(path, what, err)) from None
    except Exception as err:  # noqa: BLE001 - damaged files raise OSError, KeyError, EOFError...
        raise CheckpointError(_damaged(path, what, err)) from None
    return obj


def _damaged(path: Path, what: str, err: BaseException) -> str:
    text = str(err).strip()
    if "WeightsUnpickler error:" in text:  # torch's long weights_only advice: keep the cause
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    detail = text.split(". ")[0].splitlines()[0].rstrip(".:") if text else type(err).__name__
    size = path.stat().st_size
    return (
        f"{what} {path} is damaged or not a PyTorch checkpoint ({size} bytes; torch.load: "
        f"{detail[:120]}); an interrupted save leaves a truncated file: use another checkpoint"
    )


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint path, where a ``*`` pattern picks the newest matching file.

    Configs that start from another run's checkpoint (FW, DMI and LIMIT+init start from the CE
    run) name it as ``runs/classifier/<experiment>_ce/version_*/checkpoints/best.ckpt``: every
    run has its own ``version_<N>`` folder, and the newest one is meant.

    Args:
        path: a file path, or a glob pattern.

    Returns:
        The path itself, or the newest (by modification time) file that matches the pattern.

    Raises:
        FileNotFoundError: when a pattern matches no file.
    """
    text = str(path)
    if not any(ch in text for ch in "*?["):
        return Path(path)
    pattern = Path(text).expanduser()
    anchor = Path(pattern.anchor) if pattern.is_absolute() else Path()
    relative = str(pattern.relative_to(anchor)) if pattern.is_absolute() else text
    matches = [p for p in anchor.glob(relative) if p.is_file()]
    if not matches:
        raise FileNotFoundError(
            f"no checkpoint matches {text} (train the run it comes from first, e.g. the CE "
            "config of the same experiment)"
        )
    return max(matches, key=lambda p: p.stat().st_mtime)


def load_state_dict_from_checkpoint(
    path: str | Path, prefix: str = "net.", trusted: bool = False
) -> dict[str, Tensor]:
    """Read the parameters of a sub-network from a Lightning checkpoint.

    Args:
        path: a ``.ckpt`` file written by Lightning for a lit_info module (a ``*`` pattern
            picks the newest match, see :func:`resolve_checkpoint_path`).
        prefix: the attribute prefix of the sub-network inside the module's ``state_dict``
            (``"net."`` for the classifier of both the classifier and LIMIT modules).
        trusted: unpickle in full (see :func:`read_checkpoint`).

    Returns:
        The sub-network's state dict with the prefix removed.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        CheckpointError: when the file is damaged, unsafe, or holds no parameters under
            ``prefix`` (a ``ValueError``).
    """
    path = resolve_checkpoint_path(path)
    ckpt = read_checkpoint(path, trusted=trusted)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds no state dict ({type(ckpt).__name__})")
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not sub:
        raise CheckpointError(
            f"checkpoint {path} has no parameters under '{prefix}' (keys start with: "
            f"{sorted({k.split('.')[0] for k in state})})"
        )
    return sub
