"""Standard classifier with the noisy-label baselines of Harutyunyan et al. (ICML 2020).

One LightningModule, the loss chosen by name:

- ``ce``: cross-entropy (the standard baseline, which memorizes noisy labels);
- ``mae``, ``mse``: mean absolute / squared error between softmax and one-hot;
- ``gce``: generalized cross-entropy (Zhang & Sabuncu 2018), parameter ``gce_q``;
- ``fw``: forward correction (Patrini et al. 2017) with a transition matrix either given or
  estimated at the start of training from a cross-entropy checkpoint (``transition_from``);
- ``dmi``: the determinant-based mutual information loss (Xu et al. 2019), usually started
  from a cross-entropy checkpoint (``init_from``);

and, for any loss, Gaussian or Laplace noise added to the gradient w.r.t. the logits
(``grad_noise``, ``grad_noise_scale``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from lit_info.checkpoints import load_state_dict_from_checkpoint
from lit_info.losses import (
    LOSS_NAMES,
    add_logit_gradient_noise,
    estimate_transition_matrix,
    make_loss,
)
from lit_info.methods.base import Batch, ImageClassificationModule


class Classifier(ImageClassificationModule):
    """Image classifier trained on noisy labels with cross-entropy or a noise-robust loss.

    Args:
        num_classes: number of classes; filled in from the data, leave unset.
        input_shape: size of one input image as [channels, height, width]; filled in from the
            data, leave unset.
        net: network architecture: mnist_cnn, mlp, resnet18, resnet34 or resnet18_imagenet
            ("python -m lit_info list" describes each and its net_kwargs).
        net_kwargs: extra settings of the network, e.g. {hidden: [512, 512]} for mlp (see
            "python -m lit_info list").
        loss: training loss, one of ce (cross-entropy), mae (mean absolute error), mse (mean
            squared error), gce (generalized cross-entropy), fw (forward correction; needs
            transition_matrix or transition_from), dmi (determinant-based mutual information;
            usually started from a ce model with init_from).
        gce_q: the q of the gce loss, in (0, 1]: near 0 it behaves like ce, 1 like mae.
        transition_matrix: for loss fw: the k x k noise matrix, row i giving the probabilities
            that a sample of true class i carries each given label (rows sum to 1); unset =
            estimate it with transition_from.
        transition_from: for loss fw: checkpoint (.ckpt path; a * in the path picks the newest
            match) of a ce classifier with the same net trained on the same noisy data; the
            transition matrix is estimated from its predictions when training starts.
        transition_quantile: quantile, in [0, 1], of the predicted probabilities used to pick
            each class's reference sample when estimating the transition matrix (0.97 as in
            Patrini et al.; 1 = the most confident sample).
        init_from: checkpoint (.ckpt path; a * in the path picks the newest match) of a
            classifier with the same net whose weights start this network, e.g. a ce run before
            dmi; unset = random initialization.
        grad_noise: add gaussian or laplace noise to the training gradient at the logits; unset
            = no noise.
        grad_noise_scale: standard deviation of that noise, relative to the per-sample
            gradient, whose entries lie in [-1, 1]; 0 = no noise.
        optimizer, lr, weight_decay, momentum, lr_milestones, lr_gamma: the optimizer settings
            shared by every method (their help comes from ImageClassificationModule).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        input_shape: tuple[int, int, int] | None = None,
        net: str = "mnist_cnn",
        net_kwargs: dict[str, Any] | None = None,
        loss: Literal["ce", "mae", "mse", "gce", "fw", "dmi"] = "ce",
        gce_q: float = 0.7,
        transition_matrix: list[list[float]] | None = None,
        transition_from: str | None = None,
        transition_quantile: float = 0.97,
        init_from: str | None = None,
        grad_noise: Literal["gaussian", "laplace"] | None = None,
        grad_noise_scale: float = 0.0,
        optimizer: Literal["adam", "sgd"] = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        lr_milestones: list[int] | None = None,
        lr_gamma: float = 0.1,
    ) -> None:
        super().__init__(
            num_classes,
            input_shape,
            net,
            net_kwargs,
            optimizer,
            lr,
            weight_decay,
            momentum,
            lr_milestones,
            lr_gamma,
        )
        self.save_hyperparameters()
        if loss not in LOSS_NAMES:
            raise ValueError(f"loss must be one of {LOSS_NAMES}, got {loss!r}")
        if loss == "fw" and transition_matrix is None and transition_from is None:
            raise ValueError(
                "loss='fw' needs a transition matrix: give transition_matrix (k x k) or "
                "transition_from (a checkpoint of a CE model trained on the same noisy data)"
            )
        if grad_noise is not None and grad_noise not in ("gaussian", "laplace"):
            raise ValueError(
                f"grad_noise must be 'gaussian', 'laplace' or null, got {grad_noise!r}"
            )
        if grad_noise_scale < 0:
            raise ValueError(f"grad_noise_scale must be >= 0, got {grad_noise_scale}")
        transition = None
        if transition_matrix is not None:
            transition = torch.as_tensor(transition_matrix, dtype=torch.float32)
            if transition.shape != (self.num_classes, self.num_classes):
                raise ValueError(
                    f"transition_matrix must be {self.num_classes} x {self.num_classes}, "
                    f"got shape {tuple(transition.shape)}"
                )
        # a buffer, so a checkpoint of an FW model carries its matrix
        self.register_buffer(
            "transition", transition if transition is not None else torch.eye(self.num_classes)
        )
        if init_from is not None:
            self.net.load_state_dict(load_state_dict_from_checkpoint(init_from))
        make_loss(loss, self.num_classes, gce_q=gce_q, transition=self.transition)  # validates

    def loss_fn(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The configured training loss (built per call so the FW matrix follows the device)."""
        hp = self.hparams
        transition = self.transition if hp.loss == "fw" else None
        return make_loss(hp.loss, self.num_classes, gce_q=hp.gce_q, transition=transition)(
            logits, targets
        )

    def on_fit_start(self) -> None:
        """Estimate the forward-correction matrix from ``transition_from`` when asked."""
        hp = self.hparams
        if hp.loss != "fw" or hp.transition_from is None or hp.transition_matrix is not None:
            return
        self.transition.copy_(self.estimate_transition(hp.transition_from))

    @torch.no_grad()
    def estimate_transition(self, checkpoint: str) -> Tensor:
        """Estimate ``T`` from a CE checkpoint's softmax outputs on the training set.

        Args:
            checkpoint: path of a CE classifier checkpoint with the same architecture.

        Returns:
            The ``k x k`` transition matrix estimate (rows sum to one).
        """
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is None or not hasattr(dm, "train_eval_dataloader"):
            raise RuntimeError(
                "estimating the transition matrix needs a datamodule with train_eval_dataloader()"
            )
        reference = self.build_network(self.hparams.net, self.hparams.net_kwargs).to(self.device)
        reference.load_state_dict(load_state_dict_from_checkpoint(checkpoint))
        reference.eval()
        probs = [
            torch.softmax(reference(x.to(self.device)), dim=1)
            for x, _, _ in dm.train_eval_dataloader()
        ]
        return estimate_transition_matrix(torch.cat(probs), self.hparams.transition_quantile)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """One step of the configured loss on the given (noisy) labels."""
        x, y, _ = batch
        logits = self(x)
        if self.hparams.grad_noise is not None and self.hparams.grad_noise_scale > 0:
            logits = add_logit_gradient_noise(
                logits, self.hparams.grad_noise, self.hparams.grad_noise_scale
            )
        loss = self.loss_fn(logits, y)
        self.guard_finite(loss, batch_idx)
        self.log_train_metrics(loss, logits, y)
        return loss
