"""DDP on CPU (gloo): 2 processes compute exactly what 1 process computes.

* ``gather_by_index`` / ``all_gather_variable`` in a real 2-rank gloo group: an odd-sized dataset
  under a padding ``DistributedSampler`` comes back with exactly one row per sample, in index
  order, equal to a 1-process computation.
* Training: the same run on 1 process (batch 64) and with ``strategy="ddp"`` on 2 processes
  (batch 32 each) gives the same weights, the same per-sample training predictions and history of
  the ``MemorizationMonitor``, and the same logged metrics. Why the two are the same computation
  is explained in ``tests/scripts/ddp_train.py``; the test also checks the batches coincide.

Both use helper scripts run as subprocesses (Lightning's ``ddp`` re-launches its script).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from subprocess_runs import run_together

SCRIPTS = Path(__file__).resolve().parent / "scripts"
TIMEOUT = 180


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------
# gather_by_index in a real process group
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gather_results(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("gather")
    init = f"file://{tmp / 'store'}"
    script = str(SCRIPTS / "ddp_gather.py")
    commands = [
        [
            sys.executable,
            script,
            "--rank",
            str(r),
            "--world-size",
            "2",
            "--init",
            init,
            "--out",
            str(tmp / f"rank{r}.pt"),
        ]
        for r in range(2)
    ]
    run_together(commands, tmp, timeout=TIMEOUT)
    return [_load(tmp / f"rank{r}.pt") for r in range(2)]


def _reference_problem() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)  # the same float64 draws as ddp_gather.make_problem
    f64 = torch.float64
    return torch.randn(11, 5, generator=g, dtype=f64), torch.randn(5, 3, generator=g, dtype=f64)


def test_gather_by_index_deduplicates_sampler_padding(gather_results):
    x, w = _reference_problem()
    expected = x @ w  # 1-process computation, rows in sample order
    local = [r["local_index"] for r in gather_results]
    # the sampler really padded: 12 rows for 11 samples, one sample on both ranks
    assert [r["world_size"] for r in gather_results] == [2, 2]
    assert sum(len(i) for i in local) == 12
    assert sorted(torch.cat(local).unique().tolist()) == list(range(11))
    assert len(set(local[0].tolist()) & set(local[1].tolist())) == 1
    for result in gather_results:  # every rank gets the full, ordered result
        assert result["gathered_values"].shape == (11, 3)
        # float64 products of 5 terms: equal up to a few ulps (float32 would leave ~1e-7)
        torch.testing.assert_close(result["gathered_values"], expected, rtol=1e-12, atol=1e-14)
        assert torch.equal(result["gathered_preds"], expected.argmax(dim=1))


def test_all_gather_variable_uneven_lengths_and_missing_samples(gather_results):
    expected = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1], [1, 2]])
    for result in gather_results:
        assert torch.equal(result["uneven"], expected)
        # sample 3 dropped on both ranks: every rank raises, naming the missing sample
        assert "1 of 11 samples were seen on no rank" in result["missing_error"]
        assert "[3]" in result["missing_error"]


# ------------------------------------------------------------------------------------------
# 1 process vs DDP on 2 processes: same training
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_results(tmp_path_factory) -> tuple[dict, dict]:
    tmp = tmp_path_factory.mktemp("ddp_train")
    script = str(SCRIPTS / "ddp_train.py")
    commands = [
        [sys.executable, script, "--devices", str(d), "--out", str(tmp / f"devices{d}.pt")]
        for d in (2, 1)  # concurrently: rank 0 imports while the 1-process run trains
    ]
    run_together(commands, tmp, timeout=TIMEOUT)
    return _load(tmp / "devices1.pt"), _load(tmp / "devices2.pt")


def test_ddp_batches_are_the_union_of_rank_batches(train_results):
    single, ddp = train_results
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    assert single["n_train"] == ddp["n_train"] == 512
    (steps_1,) = single["train_indices"]
    steps_r0, steps_r1 = ddp["train_indices"]
    assert len(steps_1) == len(steps_r0) == len(steps_r1) == 4 * 512 // 64
    epochs_seen = set()
    for (e, b, idx), (e0, b0, idx0), (e1, b1, idx1) in zip(
        steps_1, steps_r0, steps_r1, strict=True
    ):
        assert e == e0 == e1 and b == b0 == b1
        assert len(idx) == 64 and len(idx0) == len(idx1) == 32
        assert not set(idx0) & set(idx1)
        assert sorted(idx0 + idx1) == sorted(idx)
        epochs_seen.add(e)
    assert epochs_seen == {0, 1, 2, 3}
    # the order changes between epochs (set_epoch reaches the sampler)
    assert steps_1[0][2] != steps_1[8][2]


def test_ddp_weights_match_single_process(train_results):
    single, ddp = train_results
    assert single["state_dict"].keys() == ddp["state_dict"].keys()
    initial_differs = False
    for key, value in single["state_dict"].items():
        # float32 training, gradient sums in another order: 32 steps grow the rounding to ~2e-7
        torch.testing.assert_close(ddp["state_dict"][key], value, rtol=1e-5, atol=1e-5)
        initial_differs |= bool(value.abs().sum() > 0)
    assert initial_differs


def test_ddp_per_sample_predictions_and_history_match(train_results):
    single, ddp = train_results
    pred_1, pred_2 = single["last_predictions"], ddp["last_predictions"]
    assert pred_1.shape == pred_2.shape == (512,)
    assert torch.equal(pred_1, pred_2)
    assert len(single["history"]) == len(ddp["history"]) == 4
    assert single["history"] == ddp["history"]
    # the monitor learned something (not a constant prediction) and counted noise correctly
    assert len(pred_1.unique()) > 5
    assert 0.3 < single["history"][-1]["corrupted_fraction"] < 0.7


def test_ddp_logged_metrics_match(train_results):
    single, ddp = train_results
    assert single["metrics"].keys() == ddp["metrics"].keys()
    for key in ("val/acc", "val/loss", "train/acc", "train/loss_epoch", "memorization/train_acc"):
        assert key in single["metrics"]
        assert ddp["metrics"][key] == pytest.approx(single["metrics"][key], rel=1e-5, abs=1e-6)
