"""Run helper scripts as subprocesses in a clean environment (the DDP tests share this).

Lightning's ``ddp`` strategies re-launch their script, so multi-process tests run a script under
``tests/scripts/`` as a subprocess, with the launcher and cluster variables of the calling
environment removed (they would make it join another job) and one thread per process.
Importable from every test folder: pytest puts ``tests/`` (the folder of ``conftest.py``) on
``sys.path``.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

#: launcher / cluster variables that would make Lightning or torch.distributed join another job
FOREIGN_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "LOCAL_WORLD_SIZE",
    "TORCHELASTIC_RUN_ID",
    "PL_GLOBAL_SEED",
)


def clean_env() -> dict[str, str]:
    """The environment without launcher variables, one OpenMP thread, warnings off."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in FOREIGN_ENV and not k.startswith(("SLURM_", "PMI_", "OMPI_"))
    }
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    return env


def run_together(commands: list[list[str]], cwd: Path, timeout: int = 240) -> None:
    """Start all commands at once and wait; fail with their output if one fails."""
    procs = [
        subprocess.Popen(
            cmd, cwd=cwd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for cmd in commands
    ]
    outputs = []
    try:
        outputs = [proc.communicate(timeout=timeout)[0].decode() for proc in procs]
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        pytest.fail(f"distributed helper timed out after {timeout} s: {commands}")
    for cmd, proc, out in zip(commands, procs, outputs, strict=True):
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}:\n{out[-4000:]}")


SCRIPTS = Path(__file__).resolve().parent / "scripts"


def import_script(name: str) -> ModuleType:
    """Import the helper script ``tests/scripts/<name>.py`` (to reuse its ``build``, say).

    The scripts import their siblings by name, so the folder is on ``sys.path`` during the
    import only.
    """
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(SCRIPTS))
