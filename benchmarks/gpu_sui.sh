#!/usr/bin/env bash
# The GPU checks of the SUI benchmarks in one run (device machine, repository root).
# Needs the MNIST test files in $LIT_INFO_DATASETS/MNIST/raw (default: ./.devdata, a copy of
# ../shared/datasets/MNIST/raw/t10k-*.gz). Writes logs to $OUT (default /tmp/sui_gpu).
set -u
here=$(pwd)
export PYTHONPATH=$here:$here/benchmarks PYTHONUNBUFFERED=1
export LIT_INFO_DATASETS=${LIT_INFO_DATASETS:-$here/.devdata}
out=${OUT:-/tmp/sui_gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$out/gpu.txt"
timeout 150 python3 benchmarks/sui_ground_truth.py --n 1000 --hidden 1024 --steps 2000 \
  --removed 100 --device cuda 2>&1 | tee "$out/ground_truth.txt"
timeout 150 python3 benchmarks/sui_speed.py --sizes 9500 --digits all --device cuda --reference-samples 2 \
  2>&1 | tee "$out/speed_9500.txt"
timeout 100 python3 benchmarks/sui_speed.py --sizes 1000 --device cuda 2>&1 | tee "$out/speed_1000.txt"
