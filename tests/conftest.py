"""Shared test set-up."""

import os

import torch

# The test models are tiny: on the 2-core CI machine one intra-op thread is several times faster
# than two (thread start-up and contention dominate). Override with LIT_INFO_TEST_THREADS.
torch.set_num_threads(int(os.environ.get("LIT_INFO_TEST_THREADS", "1")))
