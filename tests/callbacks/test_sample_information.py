"""SampleInformation callback: SI / F-SI of a trained tiny MLP against weight-space brute force.

The independent computation builds the Jacobian with a per-sample ``torch.autograd.grad`` loop
(no ``torch.func``), then retrains the linearized model without each sample in *weight space*
(ridge solve for infinite time, explicit gradient descent for finite ``t``), with no kernel
algebra at all. Both sides work in float64 (the callback's default ``feature_dtype="float64"``
runs a float64 copy of the network; the loop does too), so they agree to float64 rounding
amplified by the conditioning of the ridge problems (measured at most 2e-11 relative, with MKL's
AVX-512, AVX2 and COMPATIBLE kernels and 1 or 2 threads): hence ``rtol=1e-9``. Float32 features
would differ by about 1e-6, depending on the BLAS kernels.
"""

from __future__ import annotations

import copy
import csv
import math

import lightning.pytorch as pl
import pytest
import torch

from lit_info.callbacks.sample_information import SampleInformation
from lit_info.data import NoisyImageDataModule
from lit_info.info.linearized import linearized_gd
from lit_info.methods import Classifier


def _fit(tmp_path, callback: SampleInformation, epochs: int = 1, logger: bool = True):
    pl.seed_everything(0, verbose=False)
    dm = NoisyImageDataModule(
        dataset="digits",
        noise_type="uniform",
        noise_level=0.3,
        train_subset=50,
        val_size=10,
        batch_size=16,
    )
    model = Classifier(
        num_classes=10,
        input_shape=(1, 8, 8),
        net="mlp",
        net_kwargs={"hidden": [8], "batch_norm": True},
        lr=0.01,
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[callback],
        logger=pl.loggers.TensorBoardLogger(tmp_path, name="si") if logger else False,
    )
    trainer.fit(model, dm)
    return trainer, model, dm


def _quiet_trainer(tmp_path, callbacks: list, epochs: int = 1, **kwargs) -> pl.Trainer:
    """A Trainer without logger, progress bar, summary or checkpoints."""
    return pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=callbacks,
        default_root_dir=tmp_path,
        **kwargs,
    )


def _loop_jacobian(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-output autograd Jacobian ``(n, k, p)`` and outputs, in float64 (eval mode).

    Computed by a float64 copy of ``net`` on float64 inputs (``net`` itself is left as it is).
    """
    net = copy.deepcopy(net).double().eval()
    x = x.double()
    params = [p for p in net.parameters() if p.requires_grad]
    rows, outs = [], []
    for i in range(x.shape[0]):
        out = net(x[i : i + 1])[0]
        grads = [
            torch.cat([g.flatten() for g in torch.autograd.grad(out[c], params, retain_graph=True)])
            for c in range(out.shape[0])
        ]
        rows.append(torch.stack(grads))
        outs.append(out.detach())
    return torch.stack(rows), torch.stack(outs)


def _inputs(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items])


def _ridge(jac: torch.Tensor, r: torch.Tensor, lam: float) -> torch.Tensor:
    """Weight change of the infinite-time linearized training: argmin of the ridge loss."""
    a = jac.reshape(-1, jac.shape[-1])
    m = jac.shape[0]
    lhs = a.T @ a / m + lam * torch.eye(a.shape[1], dtype=a.dtype)
    return -torch.linalg.solve(lhs, a.T @ r.reshape(-1) / m)


def _brute_force(net, dm, split: str, lam: float, sigma2: float, steps=None, eta=None):
    torch.set_grad_enabled(True)
    x, given = _inputs(dm.train_eval_dataloader().dataset)
    xv, _ = _inputs(dm.val_dataloader().dataset if split == "val" else dm.test_dataset)
    jac, f0 = _loop_jacobian(net, x)
    jac_v, _ = _loop_jacobian(net, xv)
    n, k, _ = jac.shape
    r = f0 - torch.nn.functional.one_hot(given, k).double()

    def train(jm: torch.Tensor, rm: torch.Tensor) -> torch.Tensor:
        if steps is None:
            return _ridge(jm, rm, lam)
        return linearized_gd(jm, rm, eta=eta, steps=steps, lam=lam)

    w = train(jac, r)
    si, fsi = [], []
    for i in range(n):
        keep = torch.arange(n) != i
        dw = w - train(jac[keep], r[keep])
        si.append(float(dw @ dw) / (2 * sigma2))
        df = jac_v @ dw  # (v, k)
        fsi.append(float((df * df).sum(dim=1).mean()) / (2 * sigma2))
    return torch.tensor(si, dtype=torch.float64), torch.tensor(fsi, dtype=torch.float64), given


def test_infinite_time_matches_weight_space_ridge_and_writes_outputs(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cb = SampleInformation(on_fit_end=True, t=None, lam=0.05, sigma2=0.5)
    trainer, model, dm = _fit(tmp_path, cb, epochs=2)
    si, fsi, given = _brute_force(model.net, dm, "val", lam=0.05, sigma2=0.5)
    res = cb.results
    assert res["epoch"] == 1
    torch.testing.assert_close(res["si"], si, rtol=1e-9, atol=0.0)
    torch.testing.assert_close(res["fsi"], fsi, rtol=1e-9, atol=0.0)
    assert (res["fsi"] > 0).all()
    torch.testing.assert_close(res["given_label"], given)
    torch.testing.assert_close(res["label"], dm.train_clean_labels)
    assert bool(res["corrupted"].any()) and bool((~res["corrupted"]).any())

    path = tmp_path / "si" / "version_0" / "sample_information_epoch1.csv"
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["index", "label", "given_label", "corrupted", "si", "fsi"]
    assert [int(r["index"]) for r in rows] == list(range(len(si)))
    assert [int(r["given_label"]) for r in rows] == given.tolist()
    assert [int(r["label"]) for r in rows] == dm.train_clean_labels.tolist()
    assert [r["corrupted"] == "1" for r in rows] == dm.train_is_corrupted.tolist()
    assert [float(r["fsi"]) for r in rows] == res["fsi"].tolist()  # repr round-trips exactly
    assert [float(r["si"]) for r in rows] == res["si"].tolist()

    events = EventAccumulator(
        str(tmp_path / "si" / "version_0"), size_guidance={"histograms": 0, "images": 0}
    )
    events.Reload()
    tags = events.Tags()
    assert {"sample_info/si", "sample_info/fsi"} <= set(tags["histograms"])
    assert "sample_info/most_least_informative" in tags["images"]
    corrupted = res["corrupted"]
    for name, mask in (("corrupted", corrupted), ("clean", ~corrupted)):
        (event,) = events.Scalars(f"sample_info/mean_fsi_{name}")
        # TensorBoard stores scalars in float32 (relative rounding 6e-8)
        assert event.value == pytest.approx(float(res["fsi"][mask].mean()), rel=1e-6)


def test_finite_steps_every_epoch_on_test_split_matches_explicit_gd(tmp_path):
    cb = SampleInformation(
        every_n_epochs=1,
        on_fit_end=True,
        eta=0.02,
        t=15,
        mode="discrete",
        lam=0.01,
        fsi_split="test",
        log_images=False,
    )
    calls = []
    original = cb.run
    cb.run = lambda trainer, module, epoch: (calls.append(epoch), original(trainer, module, epoch))
    trainer, model, dm = _fit(tmp_path, cb, epochs=1, logger=False)
    assert calls == [0]  # on_fit_end does not recompute the last epoch's results
    si, fsi, _ = _brute_force(model.net, dm, "test", lam=0.01, sigma2=1.0, steps=15, eta=0.02)
    torch.testing.assert_close(cb.results["si"], si, rtol=1e-9, atol=0.0)
    torch.testing.assert_close(cb.results["fsi"], fsi, rtol=1e-9, atol=0.0)
    assert si.min() > 1e-8 and si.max() < 1e3  # far from zero and GD did not diverge
    assert not list(tmp_path.rglob("*.csv"))  # no logger: no CSV


def test_reference_checkpoint_linearizes_the_saved_weights(tmp_path):
    pl.seed_everything(1, verbose=False)
    ref = Classifier(num_classes=10, input_shape=(1, 8, 8), net="mlp", net_kwargs={"hidden": [8]})
    ckpt = tmp_path / "ref.ckpt"
    torch.save({"state_dict": ref.state_dict()}, ckpt)
    cb = SampleInformation(reference_checkpoint=str(ckpt), t=math.inf, lam=0.1, log_images=False)
    pl.seed_everything(0, verbose=False)
    dm = NoisyImageDataModule(
        dataset="digits", noise_type="uniform", noise_level=0.3, train_subset=40, val_size=8
    )
    model = Classifier(num_classes=10, input_shape=(1, 8, 8), net="mlp", net_kwargs={"hidden": [8]})
    _quiet_trainer(tmp_path, [cb]).fit(model, dm)
    si, fsi, _ = _brute_force(ref.net, dm, "val", lam=0.1, sigma2=1.0)
    torch.testing.assert_close(cb.results["si"], si, rtol=1e-9, atol=0.0)
    torch.testing.assert_close(cb.results["fsi"], fsi, rtol=1e-9, atol=0.0)


def test_linearize_at_initial_uses_the_weights_before_training(tmp_path):
    cb = SampleInformation(linearize_at="initial", t=30, eta=0.05, lam=0.01, log_images=False)
    pl.seed_everything(0, verbose=False)
    dm = NoisyImageDataModule(
        dataset="digits", noise_type="uniform", noise_level=0.3, train_subset=40, val_size=8
    )
    model = Classifier(num_classes=10, input_shape=(1, 8, 8), net="mlp", net_kwargs={"hidden": [8]})
    initial = copy.deepcopy(model.net)
    _quiet_trainer(tmp_path, [cb], epochs=2).fit(model, dm)
    moved = sum(
        float((a - b).abs().sum())
        for a, b in zip(initial.parameters(), model.net.parameters(), strict=True)
    )
    assert moved > 1e-3  # training changed the weights, so the linearization point matters
    si, fsi, _ = _brute_force(initial, dm, "val", lam=0.01, sigma2=1.0, steps=30, eta=0.05)
    torch.testing.assert_close(cb.results["si"], si, rtol=1e-9, atol=0.0)
    torch.testing.assert_close(cb.results["fsi"], fsi, rtol=1e-9, atol=0.0)
    # the initial weights travel in the checkpoint state and win over a later on_fit_start
    restored = SampleInformation(linearize_at="initial")
    restored.load_state_dict(cb.state_dict())
    restored.on_fit_start(None, model)
    for name, value in initial.state_dict().items():
        torch.testing.assert_close(restored._initial_state[name], value, rtol=0, atol=0)


def test_every_n_train_steps_writes_one_csv_per_step(tmp_path):
    cb = SampleInformation(
        every_n_train_steps=2,
        on_fit_end=True,
        t=math.inf,
        lam=0.1,
        log_images=False,
        filename="si_step{step}_epoch{epoch}.csv",
    )
    seen = []
    original = cb.run

    def spy(trainer, module, epoch, log_step=None):
        original(trainer, module, epoch, log_step)
        seen.append((trainer.global_step, cb.results["fsi"].clone()))

    cb.run = spy
    trainer, model, dm = _fit(tmp_path, cb, epochs=1)  # 40 train samples, batch 16: 3 steps
    assert [step for step, _ in seen] == [2, 3]  # step 2, then fit end at step 3
    assert not torch.equal(seen[0][1], seen[1][1])  # the weights moved between the two
    names = sorted(p.name for p in tmp_path.rglob("si_step*.csv"))
    assert names == ["si_step2_epoch0.csv", "si_step3_epoch0.csv"]
    assert cb.results["step"] == 3


def test_every_n_train_steps_needs_a_step_field_in_filename():
    with pytest.raises(ValueError, match="'{step}' field"):
        SampleInformation(every_n_train_steps=5)


def test_linearize_at_initial_excludes_reference_checkpoint(tmp_path):
    ckpt = tmp_path / "ref.ckpt"
    ckpt.write_bytes(b"")
    with pytest.raises(ValueError, match="not both"):
        SampleInformation(linearize_at="initial", reference_checkpoint=str(ckpt))


def test_max_train_samples_is_enforced(tmp_path):
    cb = SampleInformation(max_train_samples=30)
    with pytest.raises(ValueError, match="max_train_samples=30"):
        _fit(tmp_path, cb, logger=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every_n_epochs": 0}, "every_n_epochs"),
        ({"every_n_epochs": None, "on_fit_end": False}, "nothing to do"),
        ({"every_n_train_steps": 0}, "every_n_train_steps"),
        ({"mode": "sgd"}, "mode"),
        ({"t": 10, "eta": -1.0}, "eta"),
        ({"t": 2.5, "mode": "discrete"}, "t must be an integer"),
        ({"lam": -1.0}, "lam"),
        ({"sigma2": 0.0}, "sigma2"),
        ({"sketch_dim": 0}, "sketch_dim"),
        ({"max_train_samples": 0}, "max_train_samples"),
        ({"fsi_split": "train"}, "fsi_split"),
        ({"targets": "soft"}, "targets"),
        ({"loo_normalization": "x"}, "loo_normalization"),
        ({"filename": "si.csv"}, "filename"),
        ({"kernel": "fast"}, "kernel must be one of"),
        ({"kernel": None}, "kernel must be one of"),
        ({"kernel": "structured", "sketch_dim": 10}, "cannot use sketch_dim"),
        ({"linearize_at": "final"}, "linearize_at must be one of"),
        ({"sketch_type": "sparse"}, "sketch_type must be one of"),
        ({"sketch_type": None}, "sketch_type must be one of"),
        ({"feature_dtype": "float32"}, "feature_dtype must be one of"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SampleInformation(**kwargs)


def test_missing_reference_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="reference_checkpoint"):
        SampleInformation(reference_checkpoint=str(tmp_path / "nope.ckpt"))


def test_sketched_jacobian_matches_projected_brute_force(tmp_path):
    from lit_info.info import sketch_matrix

    cb = SampleInformation(sketch_dim=40, sketch_seed=3, t=None, lam=0.05, log_images=False)
    _, model, dm = _fit(tmp_path, cb, logger=False)
    proj = sketch_matrix(model.net, 40, sketch_seed=3, dtype=torch.float64)  # the callback's
    torch.set_grad_enabled(True)
    x, given = _inputs(dm.train_eval_dataloader().dataset)
    xv, _ = _inputs(dm.val_dataloader().dataset)
    jac, f0 = _loop_jacobian(model.net, x)
    jac, jac_v = jac @ proj, _loop_jacobian(model.net, xv)[0] @ proj
    r = f0 - torch.nn.functional.one_hot(given, 10).double()
    w = _ridge(jac, r, 0.05)
    n = len(given)
    for i in (0, 7, n - 1):
        keep = torch.arange(n) != i
        dw = w - _ridge(jac[keep], r[keep], 0.05)
        assert float(cb.results["si"][i]) == pytest.approx(float(dw @ dw) / 2, rel=1e-9)
        df = jac_v @ dw
        fsi = float((df * df).sum(dim=1).mean()) / 2
        assert float(cb.results["fsi"][i]) == pytest.approx(fsi, rel=1e-9)


def test_countsketch_jacobian_matches_projected_brute_force(tmp_path):
    from lit_info.info.jacobian import countsketch_hashes

    cb = SampleInformation(
        sketch_dim=40,
        sketch_seed=3,
        sketch_type="countsketch",
        t=None,
        lam=0.05,
        log_images=False,
    )
    assert cb.kernel_method == "jacobian"
    _, model, dm = _fit(tmp_path, cb, logger=False)
    # the explicit p x d CountSketch matrix: row j is signs[j] * e_{buckets[j]}
    buckets, signs = countsketch_hashes(model.net, 40, sketch_seed=3, dtype=torch.float64)
    proj = torch.zeros(buckets.shape[0], 40, dtype=torch.float64)
    proj[torch.arange(buckets.shape[0]), buckets] = signs
    torch.set_grad_enabled(True)
    x, given = _inputs(dm.train_eval_dataloader().dataset)
    xv, _ = _inputs(dm.val_dataloader().dataset)
    jac, f0 = _loop_jacobian(model.net, x)
    jac, jac_v = jac @ proj, _loop_jacobian(model.net, xv)[0] @ proj
    r = f0 - torch.nn.functional.one_hot(given, 10).double()
    w = _ridge(jac, r, 0.05)
    n = len(given)
    for i in (0, 7, n - 1):
        keep = torch.arange(n) != i
        dw = w - _ridge(jac[keep], r[keep], 0.05)
        assert float(cb.results["si"][i]) == pytest.approx(float(dw @ dw) / 2, rel=1e-9)
        df = jac_v @ dw
        fsi = float((df * df).sum(dim=1).mean()) / 2
        assert float(cb.results["fsi"][i]) == pytest.approx(fsi, rel=1e-9)


def test_feature_dtype_float64_copies_the_network_and_network_keeps_its_dtype(tmp_path):
    common = {"t": None, "lam": 0.05, "log_images": False, "filename": None}
    exact = SampleInformation(**common)
    cheap = SampleInformation(feature_dtype="network", **common)
    pl.seed_everything(0, verbose=False)
    dm = NoisyImageDataModule(
        dataset="digits", noise_type="uniform", noise_level=0.3, train_subset=40, val_size=8
    )
    model = Classifier(num_classes=10, input_shape=(1, 8, 8), net="mlp", net_kwargs={"hidden": [8]})
    _quiet_trainer(tmp_path, [exact, cheap]).fit(model, dm)
    assert {p.dtype for p in model.net.parameters()} == {torch.float32}  # the model is untouched
    si, fsi, _ = _brute_force(model.net, dm, "val", lam=0.05, sigma2=1.0)
    torch.testing.assert_close(exact.results["si"], si, rtol=1e-9, atol=0.0)
    torch.testing.assert_close(exact.results["fsi"], fsi, rtol=1e-9, atol=0.0)
    # float32 features: float32 rounding (6e-8) amplified by the ridge problems (measured 1e-6)
    torch.testing.assert_close(cheap.results["si"], si, rtol=1e-4, atol=0.0)
    torch.testing.assert_close(cheap.results["fsi"], fsi, rtol=1e-4, atol=0.0)
    assert not torch.equal(cheap.results["fsi"], exact.results["fsi"])  # really another path


def test_sketch_type_in_state_key_only_when_not_default():
    gaussian = SampleInformation(sketch_dim=40)
    assert "sketch_type" not in gaussian.state_key  # keys of existing checkpoints unchanged
    assert gaussian.state_key == SampleInformation(sketch_dim=40, sketch_type="gaussian").state_key
    count = SampleInformation(sketch_dim=40, sketch_type="countsketch")
    assert "countsketch" in count.state_key and count.state_key != gaussian.state_key


class _TwoClassData(pl.LightningDataModule):
    """Digits 0 vs 1 as a 2-class problem without noise information (items ``(x, y, index)``)."""

    def __init__(self) -> None:
        super().__init__()
        from torch.utils.data import DataLoader

        from lit_info.data.images import IndexedTensorDataset

        base = NoisyImageDataModule(dataset="digits", train_subset=200, val_size=20)
        base.setup()
        x, y = _inputs(base.train_eval_dataset)
        xv, yv = _inputs(base.val_dataset)
        keep, keep_v = y < 2, yv < 2
        self.train_eval_dataset = IndexedTensorDataset(x[keep][:30], y[keep][:30])
        self.val_dataset = IndexedTensorDataset(xv[keep_v], yv[keep_v])
        self._loader = DataLoader

    def train_dataloader(self):
        return self._loader(self.train_eval_dataset, batch_size=8)

    def train_eval_dataloader(self):
        return self._loader(self.train_eval_dataset, batch_size=8)

    def val_dataloader(self):
        return self._loader(self.val_dataset, batch_size=8)


def test_binary_targets_use_the_logit_difference(tmp_path):
    pl.seed_everything(0, verbose=False)
    dm = _TwoClassData()
    model = Classifier(num_classes=2, input_shape=(1, 8, 8), net="mlp", net_kwargs={"hidden": [8]})
    cb = SampleInformation(targets="binary", t=None, lam=0.02, sigma2=2.0, log_images=False)
    _quiet_trainer(tmp_path, [cb]).fit(model, dm)
    torch.set_grad_enabled(True)
    x, y = _inputs(dm.train_eval_dataset)
    xv, _ = _inputs(dm.val_dataset)
    jac, f0 = _loop_jacobian(model.net, x)
    jac_v = _loop_jacobian(model.net, xv)[0]
    jac, jac_v = jac[:, 1:] - jac[:, :1], jac_v[:, 1:] - jac_v[:, :1]  # one output: f_1 - f_0
    r = (f0[:, 1] - f0[:, 0] - (2.0 * y - 1.0))[:, None]
    w = _ridge(jac, r, 0.02)
    n = len(y)
    si, fsi = [], []
    for i in range(n):
        keep = torch.arange(n) != i
        dw = w - _ridge(jac[keep], r[keep], 0.02)
        si.append(float(dw @ dw) / 4)
        fsi.append(float((jac_v @ dw).square().mean()) / 4)
    si, fsi = torch.tensor(si, dtype=torch.float64), torch.tensor(fsi, dtype=torch.float64)
    torch.testing.assert_close(cb.results["si"], si, rtol=1e-9, atol=0.0)
    torch.testing.assert_close(cb.results["fsi"], fsi, rtol=1e-9, atol=0.0)
    assert not cb.results["corrupted"].any()  # no clean labels known: nothing flagged
    # the 10-class digits network has 10 outputs: binary targets are refused
    with pytest.raises(ValueError, match="targets='binary' needs a network with 2 outputs"):
        _fit(tmp_path / "ten", SampleInformation(targets="binary", log_images=False), logger=False)


@pytest.mark.slow  # about 20 s: three Python processes start Lightning
def test_ddp_two_processes_match_one_process(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    foreign = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK")
    env = {k: v for k, v in os.environ.items() if k not in foreign and not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    pl.seed_everything(5, verbose=False)
    ref = Classifier(num_classes=10, input_shape=(1, 8, 8), net="mlp", net_kwargs={"hidden": [8]})
    ckpt = tmp_path / "ref.ckpt"
    torch.save({"state_dict": ref.state_dict()}, ckpt)
    script = Path(__file__).resolve().parents[1] / "scripts" / "ddp_sample_information.py"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                "--devices",
                str(d),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(tmp_path / f"d{d}"),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for d in (2, 1)
    ]
    for proc in procs:
        out = proc.communicate(timeout=180)[0]
        assert proc.returncode == 0, out[-4000:]
    single = torch.load(tmp_path / "d1.rank0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"d2.rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert single["world_size"] == 1 and [r["world_size"] for r in ranks] == [2, 2]
    assert single["n_train"] == 37  # odd: the 2-rank sampler padded one sample
    for result in ranks:
        for key in ("index", "label", "given_label", "corrupted"):
            assert torch.equal(result["results"][key], single["results"][key])
        for key in ("si", "fsi"):  # float64 features: measured <= 2e-14 (float32 ones: 1e-7)
            torch.testing.assert_close(
                result["results"][key], single["results"][key], rtol=1e-9, atol=0.0
            )
    # both ranks hold the broadcast values of rank zero, bit for bit
    assert torch.equal(ranks[0]["results"]["si"], ranks[1]["results"]["si"])
    assert (single["results"]["fsi"] > 0).all()


@pytest.mark.parametrize("targets", ["onehot", "binary"])
def test_structured_and_jacobian_kernels_agree(tmp_path, targets):
    """Both kernels on the same float64 weights: the same SI and F-SI."""
    common = {"t": 15, "eta": 0.05, "lam": 0.01, "log_images": False, "targets": targets}
    auto = SampleInformation(**common)
    structured = SampleInformation(kernel="structured", filename=None, **common)
    jacobian = SampleInformation(kernel="jacobian", filename=None, **common)
    assert auto.kernel_method == structured.kernel_method == "structured"
    assert jacobian.kernel_method == "jacobian"
    assert SampleInformation(sketch_dim=5).kernel_method == "jacobian"
    pl.seed_everything(0, verbose=False)
    if targets == "binary":
        dm, num_classes = _TwoClassData(), 2
    else:
        dm = NoisyImageDataModule(
            dataset="digits", noise_type="uniform", noise_level=0.3, train_subset=40, val_size=8
        )
        num_classes = 10
    # BatchNorm: its affine parameters go through the Jacobian part of the structured kernel
    model = Classifier(
        num_classes=num_classes,
        input_shape=(1, 8, 8),
        net="mlp",
        net_kwargs={"hidden": [8, 6], "batch_norm": True},
    )
    # float64 weights: the two kernels agree to rounding
    _quiet_trainer(tmp_path, [auto, structured, jacobian], precision="64-true").fit(model, dm)
    assert next(model.net.parameters()).dtype == torch.float64
    for key in ("si", "fsi"):
        assert (jacobian.results[key] > 0).all()
        torch.testing.assert_close(
            structured.results[key], jacobian.results[key], rtol=1e-8, atol=0.0
        )
        assert torch.equal(auto.results[key], structured.results[key])
