"""Fully connected classifier that flattens its input."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
}


class MLP(nn.Module):
    """Multi-layer perceptron ``[Linear -> (BatchNorm1d) -> act -> (Dropout)]* -> Linear``.

    The input is flattened from dimension 1 on, so images can be fed directly.

    Args:
        input_dim: Number of input features after flattening.
        num_classes: Number of output logits.
        hidden: Widths of the hidden layers (empty for a linear model).
        activation: One of ``relu``, ``leaky_relu``, ``elu``, ``gelu``, ``tanh``, ``sigmoid``,
            ``softplus``.
        batch_norm: Insert ``BatchNorm1d`` after each hidden linear layer (before activation).
        dropout: Dropout probability after each hidden activation (0 disables it).

    Raises:
        ValueError: If an argument is invalid.
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden: Sequence[int] = (512, 512),
        activation: str = "relu",
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {input_dim}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden widths must be >= 1, got {hidden}")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_dim = input_dim
        layers: list[nn.Module] = [nn.Flatten()]
        width = input_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(_ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Compute logits.

        Args:
            x: Input of shape ``(N, ...)`` with ``input_dim`` elements per sample.

        Returns:
            Logits of shape ``(N, num_classes)``.

        Raises:
            ValueError: If a sample does not have ``input_dim`` elements.
        """
        if x.dim() < 2 or x.shape[1:].numel() != self.input_dim:
            raise ValueError(
                f"MLP expects {self.input_dim} features per sample, got input of shape "
                f"{tuple(x.shape)}"
            )
        return self.net(x)
