"""The recurrent baselines of the MIMIC-III benchmark (Harutyunyan et al., Scientific Data 2019).

* :class:`StandardLSTM`: ``depth - 1`` bidirectional LSTM layers of ``hidden / 2`` units per
  direction, then an LSTM of ``hidden`` units, dropout, a linear output (the authors' Keras
  ``lstm.py``; with ``sequence_output`` (deep supervision) every layer is unidirectional and
  the output is given at every bin).
* :class:`ChannelWiseLSTM`: each of the 17 clinical variables (its value columns and its mask)
  through its own ``depth`` bidirectional LSTM layers of ``hidden / 2`` units per direction,
  the outputs concatenated, then ``depth - 1`` bidirectional layers and a final LSTM of
  ``size_coef * hidden`` units (``channel_wise_lstms.py``).
* :class:`MultitaskLSTM`: ``depth`` unidirectional LSTM layers of ``hidden`` units shared by
  four per-bin heads (in-hospital mortality, decompensation, length of stay, phenotyping).

Dropout is applied to each LSTM layer's input and to the last layer's output (Keras'
``dropout``; no recurrent dropout, the authors' default). Padded steps are excluded with
packed sequences (Keras' ``Masking`` of all-zero steps), so the sequence output is the state
at each sample's last valid bin.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = [
    "ChannelWiseLSTM",
    "GroupedLSTM",
    "MultitaskLSTM",
    "StandardLSTM",
    "channel_groups",
    "last_valid",
    "run_packed",
]


def last_valid(sequence: Tensor, lengths: Tensor) -> Tensor:
    """``sequence[b, lengths[b] - 1]`` for every sample ``b`` of a (B, T, F) tensor."""
    index = (lengths - 1).clamp(min=0).to(sequence.device)
    return sequence[torch.arange(sequence.shape[0], device=sequence.device), index]


def run_packed(lstm: nn.LSTM, x: Tensor, lengths: Tensor) -> Tensor:
    """``lstm`` on the valid steps of padded ``x`` (B, T, F); zero outputs at padded steps."""
    packed = pack_padded_sequence(
        x, lengths.cpu().clamp(min=1), batch_first=True, enforce_sorted=False
    )
    output, _ = lstm(packed)
    output, _ = pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])
    return output


class _Recurrent(nn.Module):
    """One LSTM layer on padded input with input dropout, run on packed sequences."""

    def __init__(self, input_size: int, units: int, bidirectional: bool, dropout: float) -> None:
        super().__init__()
        per_direction = units // 2 if bidirectional else units
        if per_direction < 1:
            raise ValueError(f"an LSTM layer of {units} units cannot be split in two directions")
        self.lstm = nn.LSTM(
            input_size, per_direction, batch_first=True, bidirectional=bidirectional
        )
        self.dropout = nn.Dropout(dropout)
        self.output_size = per_direction * (2 if bidirectional else 1)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return run_packed(self.lstm, self.dropout(x), lengths)


class StandardLSTM(nn.Module):
    """The paper's standard LSTM.

    Args:
        input_size: features per bin (76).
        hidden: units of the last LSTM (16 for in-hospital mortality in the paper).
        depth: LSTM layers in all (2 for in-hospital mortality).
        dropout: dropout on the layers' inputs and on the last output (0.3).
        num_outputs: output units (1, or 25 for phenotyping, 10 for length-of-stay classes).
        sequence_output: return an output at every bin (deep supervision; unidirectional).
    """

    def __init__(
        self,
        input_size: int = 76,
        hidden: int = 16,
        depth: int = 1,
        dropout: float = 0.3,
        num_outputs: int = 1,
        sequence_output: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1 or hidden < 1:
            raise ValueError(f"depth={depth}, hidden={hidden}: both must be at least 1")
        self.sequence_output = sequence_output
        layers = []
        size = input_size
        for _ in range(depth - 1):
            layers.append(
                _Recurrent(size, hidden, bidirectional=not sequence_output, dropout=dropout)
            )
            size = layers[-1].output_size
        layers.append(_Recurrent(size, hidden, bidirectional=False, dropout=dropout))
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_outputs)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Logits (B, outputs), or (B, T, outputs) with ``sequence_output``."""
        for layer in self.layers:
            x = layer(x, lengths)
        if not self.sequence_output:
            x = last_valid(x, lengths)
        return self.head(self.dropout(x))


def channel_groups(header: list[str]) -> list[list[int]]:
    """Column indices of each clinical variable (value columns and mask), variables sorted.

    As the authors: a column belongs to a variable when the variable's name occurs in it.
    """
    names = set()
    for column in header:
        if column.startswith("mask->"):
            continue
        names.add(column.split("->")[0])
    return [[i for i, column in enumerate(header) if name in column] for name in sorted(names)]


class GroupedLSTM(nn.Module):
    """Independent LSTMs over groups of input columns, run as one block-diagonal LSTM.

    Group ``g`` reads only its columns ``groups[g]`` and has ``hidden`` units (per direction);
    the input-to-hidden and hidden-to-hidden weights of one ``nn.LSTM`` with ``G * hidden``
    units are kept block-diagonal (off-block entries start at zero and their gradients are
    masked, so no optimizer moves them), which computes exactly ``G`` separate LSTMs in one
    fused kernel: the channel-wise LSTM's 17 small LSTMs cost about one.

    Args:
        input_size: columns of the input.
        groups: column indices of each group.
        hidden: units per group and direction.
        bidirectional: a backward direction too.
        dropout: dropout on the input.
    """

    def __init__(
        self,
        input_size: int,
        groups: list[list[int]],
        hidden: int,
        bidirectional: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        self.groups = [list(g) for g in groups]
        self.hidden = hidden
        self.bidirectional = bidirectional
        total = hidden * len(groups)
        self.lstm = nn.LSTM(input_size, total, batch_first=True, bidirectional=bidirectional)
        self.dropout = nn.Dropout(dropout)
        input_mask = torch.zeros(4 * total, input_size)
        hidden_mask = torch.zeros(4 * total, total)
        for index, columns in enumerate(self.groups):
            units = torch.arange(index * hidden, (index + 1) * hidden)
            rows = torch.cat([gate * total + units for gate in range(4)])
            input_mask[rows.unsqueeze(1), torch.tensor(columns).unsqueeze(0)] = 1.0
            hidden_mask[rows.unsqueeze(1), units.unsqueeze(0)] = 1.0
        self.register_buffer("input_mask", input_mask, persistent=False)
        self.register_buffer("hidden_mask", hidden_mask, persistent=False)
        bound = 1.0 / hidden**0.5  # the initialization of a separate LSTM of ``hidden`` units
        with torch.no_grad():
            for name, weight in self.lstm.named_parameters():
                weight.uniform_(-bound, bound)
                if name.startswith("weight_ih"):
                    weight.mul_(input_mask)
                    weight.register_hook(lambda grad: grad * self.input_mask)
                elif name.startswith("weight_hh"):
                    weight.mul_(hidden_mask)
                    weight.register_hook(lambda grad: grad * self.hidden_mask)
        self.output_size = total * (2 if bidirectional else 1)

    @property
    def output_groups(self) -> list[list[int]]:
        """Output columns of each group (forward units, then backward units)."""
        total = self.hidden * len(self.groups)
        out = []
        for index in range(len(self.groups)):
            columns = list(range(index * self.hidden, (index + 1) * self.hidden))
            if self.bidirectional:
                columns += [total + c for c in columns]
            out.append(columns)
        return out

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """(B, T, output_size) outputs, zero at padded steps."""
        return run_packed(self.lstm, self.dropout(x), lengths)


class ChannelWiseLSTM(nn.Module):
    """The paper's channel-wise LSTM.

    The per-variable LSTMs run as one block-diagonal LSTM (:class:`GroupedLSTM`), the same
    function as separate LSTMs (tested) at the cost of about one.

    Args:
        header: the discretizer's column names (to group columns by variable).
        hidden: units of each variable's LSTM (8 for in-hospital mortality in the paper).
        depth: LSTM layers per variable; ``depth - 1`` more after the concatenation.
        size_coef: the later layers have ``size_coef * hidden`` units (4.0).
        dropout: input / output dropout (0.3).
        num_outputs: output units.
        sequence_output: an output at every bin (deep supervision; unidirectional).
    """

    def __init__(
        self,
        header: list[str],
        hidden: int = 8,
        depth: int = 1,
        size_coef: float = 4.0,
        dropout: float = 0.3,
        num_outputs: int = 1,
        sequence_output: bool = False,
    ) -> None:
        super().__init__()
        self.groups = channel_groups(header)
        if not self.groups:
            raise ValueError("channel-wise LSTM: the header names no variables")
        bidirectional = not sequence_output
        per_direction = hidden // 2 if bidirectional else hidden
        if per_direction < 1:
            raise ValueError(
                f"channel-wise LSTM: hidden={hidden} cannot be split in two directions"
            )
        self.sequence_output = sequence_output
        self.channels = nn.ModuleList()
        size, groups = len(header), self.groups
        for _ in range(depth):
            layer = GroupedLSTM(size, groups, per_direction, bidirectional, dropout)
            self.channels.append(layer)
            size, groups = layer.output_size, layer.output_groups
        width = size
        units = int(size_coef * hidden)
        layers = []
        for _ in range(depth - 1):
            layers.append(_Recurrent(width, units, bidirectional=bidirectional, dropout=dropout))
            width = layers[-1].output_size
        layers.append(_Recurrent(width, units, bidirectional=False, dropout=dropout))
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(units, num_outputs)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Logits (B, outputs), or (B, T, outputs) with ``sequence_output``."""
        z = x
        for layer in self.channels:
            z = layer(z, lengths)
        for layer in self.layers:
            z = layer(z, lengths)
        if not self.sequence_output:
            z = last_valid(z, lengths)
        return self.head(self.dropout(z))


class MultitaskLSTM(nn.Module):
    """Shared LSTM layers with per-bin heads for the four tasks (the multitask baselines).

    With ``channel_header`` it is the multitask channel-wise LSTM: each variable first through
    its own LSTM of ``hidden`` units (a :class:`GroupedLSTM`; unidirectional, as every output is
    a per-hour prediction), then the shared layers have ``size_coef * hidden`` units.

    Args:
        input_size: features per bin.
        hidden: units per layer (512 in the authors' example), or per variable (channel-wise).
        depth: LSTM layers.
        dropout: input / output dropout.
        los_classes: 10 (the paper's classes) or 1 (regression of hours).
        phenotypes: phenotype labels (25).
        channel_header: the discretizer's column names, for the channel-wise variant.
        size_coef: width factor of the shared layers of the channel-wise variant.
    """

    def __init__(
        self,
        input_size: int = 76,
        hidden: int = 512,
        depth: int = 1,
        dropout: float = 0.3,
        los_classes: int = 10,
        phenotypes: int = 25,
        channel_header: list[str] | None = None,
        size_coef: float = 8.0,
    ) -> None:
        super().__init__()
        self.channels = None
        size, units = input_size, hidden
        if channel_header is not None:
            self.channels = GroupedLSTM(
                input_size,
                channel_groups(channel_header),
                hidden,
                bidirectional=False,
                dropout=dropout,
            )
            size, units = self.channels.output_size, int(size_coef * hidden)
        layers = []
        for _ in range(depth):
            layers.append(_Recurrent(size, units, bidirectional=False, dropout=dropout))
            size = units
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)
        self.ihm = nn.Linear(units, 1)
        self.decomp = nn.Linear(units, 1)
        self.los = nn.Linear(units, los_classes)
        self.pheno = nn.Linear(units, phenotypes)

    def forward(self, x: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Per-bin logits of the four heads.

        ``ihm`` (B, T), ``decomp`` (B, T), ``los`` (B, T, classes), and ``pheno`` (B, 25) at
        each sample's last bin.
        """
        if self.channels is not None:
            x = self.channels(x, lengths)
        for layer in self.layers:
            x = layer(x, lengths)
        x = self.dropout(x)
        return {
            "ihm": self.ihm(x).squeeze(-1),
            "decomp": self.decomp(x).squeeze(-1),
            "los": self.los(x),
            "pheno": self.pheno(last_valid(x, lengths)),
        }
