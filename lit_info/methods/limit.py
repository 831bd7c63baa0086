"""LIMIT: limiting label-noise information in the weights (Harutyunyan et al., ICML 2020).

The classifier never sees a label. An auxiliary network ``q`` of the same architecture sees the
input only and predicts the gradient of the loss w.r.t. the classifier's logits:

    g_hat = softmax(a).detach() - softmax(q(x))

The classifier is trained only through ``g_hat`` (injected at the logits; nothing from the true
labels reaches it). ``q`` is trained to match the true cross-entropy gradient
``g = softmax(a).detach() - onehot(y)`` with a Gaussian (squared error, LIMIT_G) or Laplace
(absolute error, LIMIT_L) likelihood, plus ``beta * mean ||g_hat||^2``, which limits how much
label information the predicted gradients (and hence the weights) can carry. Optionally the
injected gradient is sampled around ``g_hat`` (Gaussian std ``sqrt(1 / (2 lamb))`` or Laplace
scale ``1 / lamb``, as in the authors' release), and ``q`` can start from a trained CE model
("+init").

Implementation note: the injection uses the surrogate ``mean_i <a_i, g_used_i>``, whose gradient
w.r.t. the logits is exactly ``g_used / N``; the authors' release injects the per-sample sum
``g_used``, which differs by the constant ``N`` that Adam's normalization removes. One optimizer
updates both networks: the surrogate only reaches the classifier (``g_used`` is detached) and the
``q`` losses only reach ``q`` (``softmax(a)`` is detached).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from lit_info.checkpoints import load_state_dict_from_checkpoint
from lit_info.methods.base import Batch, ImageClassificationModule


def predicted_gradient(classifier_logits: Tensor, q_logits: Tensor) -> Tensor:
    """The LIMIT gradient prediction ``softmax(a).detach() - softmax(q)``.

    Args:
        classifier_logits: logits ``a`` of the classifier, ``(N, k)``.
        q_logits: logits of the gradient-predicting network ``q``, ``(N, k)``.

    Returns:
        ``(N, k)`` predicted gradient of the cross-entropy w.r.t. ``a``; differentiable only
        w.r.t. ``q_logits``.
    """
    return torch.softmax(classifier_logits.detach(), dim=1) - torch.softmax(q_logits, dim=1)


def true_gradient(classifier_logits: Tensor, targets: Tensor) -> Tensor:
    """The gradient of the per-sample cross-entropy w.r.t. the logits, ``softmax(a) - onehot(y)``.

    Args:
        classifier_logits: logits ``(N, k)``.
        targets: integer labels ``(N,)``.

    Returns:
        ``(N, k)`` tensor, detached from the graph.
    """
    probs = torch.softmax(classifier_logits.detach(), dim=1)
    return probs - F.one_hot(targets, probs.shape[1]).to(probs.dtype)


class LIMIT(ImageClassificationModule):
    """LIMIT: a classifier that never sees the labels, trained on predicted gradients.

    Args:
        num_classes: number of classes; filled in from the data, leave unset.
        input_shape: size of one input image as [channels, height, width]; filled in from the
            data, leave unset.
        net: architecture of both the classifier and the gradient predictor: mnist_cnn, mlp,
            resnet18, resnet34 or resnet18_imagenet ("python -m lit_info list" describes each
            and its net_kwargs).
        net_kwargs: extra settings of the network, e.g. {hidden: [512, 512]} for mlp (see
            "python -m lit_info list").
        q_dist: how the gradient predictor is fitted to the true gradients: gaussian (LIMIT_G,
            squared error) or laplace (LIMIT_L, absolute error).
        beta: weight of the penalty on the squared norm of the predicted gradients, which
            limits the label information the weights can take in; 0 = no penalty.
        sample_gradient: train the classifier on a random sample around the predicted
            gradient instead of the prediction itself.
        lamb: precision of that sampling, > 0; larger = less noise (gaussian: standard
            deviation sqrt(1 / (2 lamb)), laplace: scale 1 / lamb). Used only with
            sample_gradient.
        q_init_from: checkpoint (.ckpt path; a * in the path picks the newest match) of a ce
            classifier with the same net whose weights start the gradient predictor
            ("LIMIT+init"); unset = random initialization.
        warm_up_epochs: number of first epochs in which only the gradient predictor is trained,
            not the classifier; 0 = none.
        optimizer, lr, weight_decay, momentum, lr_milestones, lr_gamma: the optimizer settings
            shared by every method (their help comes from ImageClassificationModule).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        input_shape: tuple[int, int, int] | None = None,
        net: str = "mnist_cnn",
        net_kwargs: dict[str, Any] | None = None,
        q_dist: Literal["gaussian", "laplace"] = "gaussian",
        beta: float = 0.0,
        sample_gradient: bool = False,
        lamb: float = 1.0,
        q_init_from: str | None = None,
        warm_up_epochs: int = 0,
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
        if q_dist not in ("gaussian", "laplace"):
            raise ValueError(f"q_dist must be 'gaussian' or 'laplace', got {q_dist!r}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if sample_gradient and lamb <= 0:
            raise ValueError(f"lamb must be positive when sample_gradient is true, got {lamb}")
        if warm_up_epochs < 0:
            raise ValueError(f"warm_up_epochs must be >= 0, got {warm_up_epochs}")
        self.q_net = self.build_network(net, net_kwargs)
        # epoch means of the q losses: recorded per step (accumulate_mean), logged once per
        # epoch (a self.log call per step costs ~0.4 ms of CPU in Lightning 2.6)
        self.info_penalty_mean = MeanMetric()
        self.grad_norm_sq_mean = MeanMetric()
        if q_init_from is not None:
            self.q_net.load_state_dict(load_state_dict_from_checkpoint(q_init_from))

    def predicted_logit_gradient(self, x: Tensor, logits: Tensor | None = None) -> Tensor:
        """``g_hat`` for a batch of inputs (used by monitors).

        Args:
            x: the inputs.
            logits: the classifier's logits on ``x`` when the caller has them already (saves a
                second forward pass of the classifier).
        """
        if logits is None:
            logits = self.net(x)
        return predicted_gradient(logits, self.q_net(x))

    def sample_around(self, g_hat: Tensor) -> Tensor:
        """Sample the injected gradient around ``g_hat`` (detached)."""
        lamb = self.hparams.lamb
        if self.hparams.q_dist == "gaussian":
            return g_hat + torch.randn_like(g_hat) * math.sqrt(1.0 / (2.0 * lamb))
        laplace = torch.distributions.Laplace(torch.zeros_like(g_hat), 1.0 / lamb)
        return g_hat + laplace.sample()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Train ``q`` on the true gradient and the classifier on the predicted one."""
        x, y, _ = batch
        logits = self.net(x)
        q_logits = self.q_net(x)
        g_hat = predicted_gradient(logits, q_logits)
        g = true_gradient(logits, y)
        diff = g_hat - g
        if self.hparams.q_dist == "gaussian":
            info_penalty = diff.pow(2).sum(dim=1).mean()
        else:
            info_penalty = diff.abs().sum(dim=1).mean()
        norm_penalty = g_hat.pow(2).sum(dim=1).mean()
        g_used = g_hat.detach()
        if self.hparams.sample_gradient:
            g_used = self.sample_around(g_used)
        train_classifier = float(self.current_epoch >= self.hparams.warm_up_epochs)
        surrogate = (logits * g_used).sum(dim=1).mean() * train_classifier
        loss = surrogate + info_penalty + self.hparams.beta * norm_penalty

        ce = F.cross_entropy(logits.detach(), y)
        self.guard_finite(ce + info_penalty.detach() + norm_penalty.detach(), batch_idx)
        self.log_train_metrics(ce, logits, y)
        self.accumulate_mean(self.info_penalty_mean, info_penalty)
        self.accumulate_mean(self.grad_norm_sq_mean, norm_penalty)
        return loss

    def on_train_epoch_end(self) -> None:
        """Log the epoch means of the q network's losses (synchronized across ranks)."""
        super().on_train_epoch_end()  # checks the last steps, logs train/loss and train/acc
        self.log("train/info_penalty", self.info_penalty_mean)
        self.log("train/grad_norm_sq", self.grad_norm_sq_mean)
