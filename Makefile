# lit_info: one-command set-up, tests, demo and benchmarks.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export LIT_INFO_DATASETS ?= $(abspath ../shared/datasets)
PYTEST_ARGS ?=

.PHONY: setup test test-slow test-all demo bench bench-sui bench-corex bench-mixhop bench-mimic3 bench-minsyn bench-detection lint tensorboard notebooks clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

demo: setup
	$(PY) -m lit_info.demo

bench: setup
	$(PY) benchmarks/throughput.py
	$(MAKE) bench-sui
	$(MAKE) bench-corex
	$(MAKE) bench-mixhop
	$(MAKE) bench-mimic3
	$(MAKE) bench-minsyn

# MIMIC-III: the build on the demo and on 20x / 100x replicas (about 4 min; the x100 input alone
# is 8.6 GB of scratch disk), then every baseline config through the CLI on the demo (~10 min)
# MinSyn vs PCA / FastICA / independence / beta-VAE on word images, 3 seeds (~45 min on 2 cores)
bench-minsyn: setup
	$(PY) benchmarks/minsyn_words.py --seeds 0 1 2 --sources font mnist

bench-mimic3: setup
	$(PY) benchmarks/mimic3_pipeline.py --scales 1 20 100 --memory-limit 2000
	$(PY) benchmarks/mimic3_baselines.py --epochs 2 --train-batches 50

# MixHop / GCN: accuracy over 10 seeds on Cora and CiteSeer against GCN and PyG's example (about
# 20 min on 2 cores), the synthetic homophily table (about 5 min per seed), the architecture
# search on Cora (about 3 min), epochs per second against a plain MixHopConv model (1 min)
bench-mixhop: setup
	$(PY) benchmarks/mixhop_accuracy.py --seeds 10
	$(PY) benchmarks/mixhop_homophily.py --seeds 3
	$(PY) benchmarks/mixhop_search.py --seeds 3
	$(PY) benchmarks/mixhop_speed.py

# Linear CorEx / T-CorEx: fit time and NLL against linearcorex (about 1 min), growth in p up to
# p = 100,000 (about 15 s), covariance quality against LW / OAS / GLASSO / FA / linearcorex (a
# few min, GLASSO dominates), T-CorEx on the sudden-change data (a few min)
bench-corex: setup
	$(PY) benchmarks/corex_speed.py --scale
	$(PY) benchmarks/corex_quality.py
	$(PY) benchmarks/corex_temporal.py

# SUI: speed vs the per-sample reference (about 12 min on 2 cores, mostly the reference at
# n = 1000), ground truth vs retraining (a few min), mislabeled detection with the logistic-
# regression cleanlab baseline (a few min).
bench-sui: setup
	$(PY) benchmarks/sui_speed.py
	$(PY) benchmarks/sui_ground_truth.py
	$(PY) benchmarks/sui_detection.py --baselines logreg

# Mislabeled detection, SUI variants vs cleanlab on cross-validated MLP and logistic-regression
# probabilities (the README table; about 50 min on 2 cores, mostly the 5-fold MLP trainings)
bench-detection: setup
	$(PY) benchmarks/sui_detection.py --threads 1

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# re-execute the notebooks and store their outputs (plots) in the repository
notebooks: setup
	$(PY) scripts/execute_notebooks.py

tensorboard: setup
	$(VENV)/bin/tensorboard --logdir runs

clean:
	rm -rf runs logs lightning_logs .pytest_cache
