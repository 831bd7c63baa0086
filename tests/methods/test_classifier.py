import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from lit_info.checkpoints import load_state_dict_from_checkpoint
from lit_info.data import NoisyImageDataModule
from lit_info.losses import estimate_transition_matrix
from lit_info.methods import Classifier

KW = dict(num_classes=10, input_shape=(1, 8, 8), net="mlp", net_kwargs={"hidden": [32]})


def trainer(tmp_path, epochs=2, **kwargs):
    return pl.Trainer(
        max_epochs=epochs,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


@pytest.fixture(scope="module")
def ce_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ce")
    pl.seed_everything(0, verbose=False)
    dm = NoisyImageDataModule(
        dataset="digits", noise_type="uniform", noise_level=0.4, batch_size=128
    )
    model = Classifier(**KW)
    t = trainer(tmp, epochs=3, enable_checkpointing=False)
    t.fit(model, dm)
    path = tmp / "ce.ckpt"
    t.save_checkpoint(path)
    return path, model, dm


def test_fw_estimates_the_transition_matrix_from_the_ce_checkpoint(ce_checkpoint, tmp_path):
    path, ce_model, dm = ce_checkpoint
    # independent computation: softmax outputs of the CE model on the un-augmented training set
    ce_model.eval()
    with torch.no_grad():
        probs = torch.cat([torch.softmax(ce_model(x), 1) for x, _, _ in dm.train_eval_dataloader()])
    expected = estimate_transition_matrix(probs, 0.97)

    fw = Classifier(**KW, loss="fw", transition_from=str(path))
    torch.testing.assert_close(fw.transition, torch.eye(10))
    trainer(tmp_path, epochs=1, enable_checkpointing=False).fit(fw, dm)
    torch.testing.assert_close(fw.transition, expected)
    assert torch.allclose(fw.transition.sum(1), torch.ones(10))
    # the forward-corrected loss on a batch uses that matrix
    x, y, _ = next(iter(dm.train_eval_dataloader()))
    with torch.no_grad():
        logits = fw(x)
        manual = -torch.log((torch.softmax(logits, 1) @ expected).gather(1, y[:, None])).mean()
        torch.testing.assert_close(fw.loss_fn(logits, y), manual, rtol=1e-5, atol=1e-6)


def test_init_from_copies_the_classifier_weights(ce_checkpoint):
    path, ce_model, _ = ce_checkpoint
    dmi = Classifier(**KW, loss="dmi", init_from=str(path))
    for (name, a), b in zip(
        dmi.net.state_dict().items(), ce_model.net.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b.cpu(), msg=name)


def test_checkpoint_loader_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_state_dict_from_checkpoint(tmp_path / "missing.ckpt")
    bad = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(1)}}, bad)
    with pytest.raises(ValueError, match="other.ckpt.*net\\."):
        load_state_dict_from_checkpoint(bad)


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
def test_gradient_noise_reaches_the_weights_with_the_configured_scale(kind):
    torch.manual_seed(0)
    model = Classifier(**KW, grad_noise=kind, grad_noise_scale=0.5)
    x = torch.randn(64, 1, 8, 8)
    y = torch.randint(0, 10, (64,))
    # gradient at the last layer's bias equals the batch-sum of the logit gradients: compare the
    # noisy gradient with the clean one over repeated draws
    diffs = []
    for _ in range(50):
        model.zero_grad()
        model.training_step((x, y, torch.arange(64)), 0).backward()
        noisy = list(model.net.parameters())[-1].grad.clone()  # the output layer's bias
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        clean = list(model.net.parameters())[-1].grad.clone()
        diffs.append(noisy - clean)
    diffs = torch.stack(diffs)
    # each logit-gradient element gets noise of std scale/N; the bias gradient sums N of them
    expected_std = 0.5 / 64 * 64**0.5
    assert abs(diffs.std().item() - expected_std) / expected_std < 0.1


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="loss"):
        Classifier(**KW, loss="hinge")
    with pytest.raises(ValueError, match="transition"):
        Classifier(**KW, loss="fw")
    with pytest.raises(ValueError, match="transition_matrix must be 10 x 10"):
        Classifier(**KW, loss="fw", transition_matrix=[[1.0]])
    with pytest.raises(ValueError, match="grad_noise_scale"):
        Classifier(**KW, grad_noise="gaussian", grad_noise_scale=-1.0)
