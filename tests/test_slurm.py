"""The SLURM template: trainer size follows the allocation, resume logic, input checks."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm" / "train.sbatch"
CONFIG = "configs/limit/cifar10_uniform0.4_g.yaml"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash not available")


def run_sbatch(tmp_path, env_extra, *args):
    """Run the batch script with a fake `srun` that records its command line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    srun = bin_dir / "srun"
    srun.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$SRUN_LOG"\n')
    srun.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SRUN_LOG": str(tmp_path / "srun.log"),
        "SLURM_SUBMIT_DIR": str(ROOT),
        "RUN_DIR": str(tmp_path / "run"),
        "CONFIG": CONFIG,
        **env_extra,
    }
    out = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60
    )
    log = tmp_path / "srun.log"
    argv = log.read_text().splitlines() if log.exists() else None
    return out, argv


def value_after(argv, flag):
    return argv[argv.index(flag) + 1]


def test_trainer_matches_the_allocation_and_resumes_from_last(tmp_path):
    env = {
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NTASKS_PER_NODE": "4",
        "SLURM_GPUS_PER_NODE": "a100:4",
    }
    out, argv = run_sbatch(tmp_path, env, "--data.data_dir", "/scratch/data")
    assert out.returncode == 0, out.stderr
    assert argv[:4] == [".venv/bin/python", "-m", "lit_info.cli", "fit"]
    assert value_after(argv, "--config") == CONFIG
    assert value_after(argv, "--trainer.num_nodes") == "2"
    assert value_after(argv, "--trainer.devices") == "4"
    assert value_after(argv, "--trainer.accelerator") == "gpu"
    assert value_after(argv, "--trainer.strategy") == "ddp"
    assert value_after(argv, "--ckpt_path") == "last"
    assert argv[-2:] == ["--data.data_dir", "/scratch/data"]


def test_requeued_job_lets_lightning_resume_from_the_hpc_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "hpc_ckpt_1.ckpt").write_bytes(b"")
    out, argv = run_sbatch(tmp_path, {"SLURM_NTASKS_PER_NODE": "1", "SLURM_GPUS_PER_NODE": "1"})
    assert out.returncode == 0, out.stderr
    assert "--ckpt_path" not in argv
    assert value_after(argv, "--trainer.default_root_dir") == str(run_dir)


def test_bad_allocations_and_configs_are_refused(tmp_path):
    out, argv = run_sbatch(tmp_path, {"SLURM_NTASKS_PER_NODE": "2", "SLURM_GPUS_PER_NODE": "4"})
    assert out.returncode == 2 and argv is None
    assert "--ntasks-per-node (2) must equal GPUs per node (4)" in out.stderr
    out, argv = run_sbatch(tmp_path, {"CONFIG": "configs/nope.yaml"})
    assert out.returncode == 2 and argv is None
    assert "config file not found: configs/nope.yaml" in out.stderr
    out, argv = run_sbatch(tmp_path, {})  # no GPUs: CPU DDP
    assert value_after(argv, "--trainer.accelerator") == "cpu"
