r"""Graph networks on a normalized adjacency: MixHop (Abu-El-Haija et al., ICML 2019) and GCN.

Plain ``nn.Module`` s (no Lightning inside) that take the node features ``x`` (``N x F``, dense,
as torch-geometric's ``Data.x``) and the graph as ``edge_index`` / ``edge_weight`` holding the
normalized adjacency ``Â = D^-1/2 (A + I) D^-1/2`` with its self loops
(:func:`normalized_adjacency`; the citation datamodules store the graph this way, so a k-hop
subgraph of a mini-batch carries the weights of the *full* graph and its seed nodes get
exactly the full-graph outputs).

Why not torch-geometric's ``MixHopConv``. It gives every power the same width (the searched
architectures of the paper have their own width per power, some zero) and propagates the layer
*input* before projecting it, so on Cora the first layer multiplies ``Â`` with ``2708 x 1433``
dense features twice. Here a layer projects first, with one matrix product for all powers
(``x [W_0 | W_1 | W_2]``), and propagates only the narrow blocks: ``Â^j x W_j = Â^j (x W_j)``,
the same function. Input features enter as a sparse matrix (the citation features are 1 %
non-zero), built once per feature tensor and cached (:class:`SparseFeatures`).

Faithful to the authors' release (samihaija/mixhop, ``mixhop_trainer.py``/``mixhop_model.py``):

* input: binarized features (non-zero -> 1), dropout on the non-zero entries, then rows scaled
  to unit L2 norm (a row whose entries all dropped stays zero);
* a layer: ``concat_j Â^j h W_j`` over its powers, no bias, each block initialized Glorot-uniform
  on its own shape;
* between layers: batch norm (centering only, no scale, eps 1e-3, as TensorFlow's
  ``contrib.layers.batch_norm``), ReLU, dropout;
* ``psum`` output: the output layer's width is split into blocks of ``num_classes`` columns,
  summed with softmax weights of a learned zero-initialized vector ``q`` (the authors add
  ``1e-3 * mean(q^2)`` to the loss: :meth:`MixHopNet.psum_penalty`).

Batch statistics. TensorFlow's ``batch_norm`` is called there without ``is_training``, so it
normalizes with the statistics of the nodes in the forward pass in training *and* evaluation
(the whole graph in full batch). ``batch_norm="batch"`` does the same (default);
``"running"`` is PyTorch's usual running averages at evaluation, which makes evaluation
independent of the batch (mini-batch evaluation then equals full-batch evaluation).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FeatureNormalization = Literal["binary_l2", "sum", "l2", "none"]
BatchNormStatistics = Literal["batch", "running"]

__all__ = [
    "GCNNet",
    "MixHopLayer",
    "MixHopNet",
    "SparseFeatures",
    "adjacency_matrix",
    "normalized_adjacency",
    "propagate",
]


def normalized_adjacency(
    edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``Â = D^-1/2 (A + I) D^-1/2`` as ``(edge_index, edge_weight)`` with the self loops added.

    torch-geometric's ``gcn_norm`` (self loops of weight 1, degrees counted with them). The
    graph should be undirected (both directions present, as in ``Planetoid``).

    Args:
        edge_index: ``2 x E`` source / target node indices.
        num_nodes: Number of nodes N.
        edge_weight: Optional ``E`` weights of ``A`` (default 1).

    Returns:
        ``edge_index`` (``2 x (E + N)``) and the matching weights of ``Â``.
    """
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    index, weight = gcn_norm(
        edge_index, edge_weight, num_nodes, add_self_loops=True, dtype=torch.get_default_dtype()
    )
    return index, weight


def adjacency_matrix(edge_index: Tensor, edge_weight: Tensor, num_nodes: int) -> Tensor:
    """Sparse CSR ``N x N`` matrix ``M`` with ``M[target, source] = weight``.

    ``M @ h`` sums every node's incoming messages; duplicate edges are summed.

    Args:
        edge_index: ``2 x E`` (source, target).
        edge_weight: ``E`` weights.
        num_nodes: N.
    """
    with warnings.catch_warnings():  # "sparse CSR tensor support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_coo_tensor(edge_index.flip(0), edge_weight, (num_nodes, num_nodes))
        return matrix.coalesce().to_sparse_csr()


def propagate(adjacency: Tensor, h: Tensor, power: int) -> Tensor:
    """``adjacency^power @ h`` by ``power`` sparse-dense products (``power = 0``: ``h``)."""
    for _ in range(power):
        h = torch.sparse.mm(adjacency, h)
    return h


class SparseFeatures(nn.Module):
    """Input features as a sparse matrix: normalization, dropout on the non-zero entries.

    Modes (``normalization``):

    * ``binary_l2`` (MixHop): non-zero entries set to 1, dropout (on the non-zero entries, each
      kept with probability ``1 - dropout``), rows scaled to unit L2 norm;
    * ``sum`` (GCN, Kipf & Welling): rows scaled to sum 1 (before dropout, as their
      preprocessing), then dropout with the usual ``1 / (1 - p)`` scaling of kept entries;
    * ``l2``: rows to unit L2 norm, then dropout with scaling; ``none``: dropout with scaling.

    The non-zero pattern of a feature tensor is found once and cached (one entry: the tensor
    object of the last call and its version counter), so full-batch training scans the dense
    ``N x F`` tensor once, not every step.

    Args:
        normalization: See above.
        dropout: Probability to drop a non-zero entry in training.
    """

    def __init__(self, normalization: FeatureNormalization = "binary_l2", dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.normalization = normalization
        self.dropout = dropout
        self._cache: tuple[tuple, Tensor, Tensor, Tensor] | None = None

    def _entries(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # the cache holds the tensor itself (its memory cannot be reused by another tensor)
        version = -1 if x.is_inference() else x._version
        if self._cache is not None and self._cache[0][0] is x and self._cache[0][1] == version:
            return self._cache[1], self._cache[2], self._cache[3]
        rows, cols = x.nonzero(as_tuple=True)
        values = x[rows, cols]
        if self.normalization == "binary_l2":
            values = torch.ones_like(values)
        elif self.normalization == "sum":
            sums = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device).index_add_(
                0, rows, values
            )
            values = values / sums.clamp(min=torch.finfo(x.dtype).tiny)[rows]
        elif self.normalization == "l2":
            sq = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device).index_add_(
                0, rows, values * values
            )
            values = values * sq.clamp(min=torch.finfo(x.dtype).tiny).rsqrt()[rows]
        self._cache = ((x, version), rows, cols, values)
        return rows, cols, values

    def forward(self, x: Tensor) -> Tensor:
        """Return the sparse CSR ``N x F`` input matrix (dropout applied in training)."""
        rows, cols, values = self._entries(x)
        if self.training and self.dropout > 0:
            keep = torch.rand(rows.shape, device=x.device) >= self.dropout
            rows, cols, values = rows[keep], cols[keep], values[keep]
            if self.normalization != "binary_l2":
                values = values / (1.0 - self.dropout)
        if self.normalization == "binary_l2":
            counts = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device).index_add_(
                0, rows, torch.ones_like(values)
            )
            values = counts.clamp(min=1.0).rsqrt()[rows]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            matrix = torch.sparse_coo_tensor(
                torch.stack([rows, cols]), values, tuple(x.shape), is_coalesced=True
            )
            return matrix.to_sparse_csr()


def _matmul(h: Tensor, weight: Tensor) -> Tensor:
    if h.dtype != weight.dtype:
        h = h.to(weight.dtype)
    return torch.sparse.mm(h, weight) if h.layout != torch.strided else h @ weight


class MixHopLayer(nn.Module):
    """``concat_j Â^j h W_j`` over the powers ``j``, each with its own width (0 = unused).

    One weight matrix ``F_in x sum(widths)`` holds the blocks ``W_j`` side by side (one product
    for all powers); each block is initialized Glorot-uniform on its own ``F_in x width_j``
    shape, as separate dense layers would be.

    Args:
        in_features: Input width.
        powers: Adjacency powers, e.g. ``(0, 1, 2)``.
        widths: Output width per power (same length as ``powers``; zeros allowed).
        bias: Add a bias per output column (MixHop: no; GCN: yes).
    """

    def __init__(
        self, in_features: int, powers: Sequence[int], widths: Sequence[int], bias: bool = False
    ):
        super().__init__()
        powers, widths = [int(p) for p in powers], [int(w) for w in widths]
        if len(powers) != len(widths):
            raise ValueError(f"powers {powers} and widths {widths} differ in length")
        if any(p < 0 for p in powers) or any(w < 0 for w in widths) or sum(widths) == 0:
            raise ValueError(f"powers and widths must be >= 0 with some width > 0: {widths}")
        self.in_features = in_features
        self.powers, self.widths = powers, widths
        self.weight = nn.Parameter(torch.empty(in_features, sum(widths)))
        self.bias = nn.Parameter(torch.zeros(sum(widths))) if bias else None
        self.reset_parameters()

    @property
    def out_features(self) -> int:
        """Total output width ``sum(widths)``."""
        return sum(self.widths)

    def blocks(self) -> list[tuple[int, slice]]:
        """``(power, column slice of the weight)`` for every power with a non-zero width."""
        out, start = [], 0
        for power, width in zip(self.powers, self.widths, strict=True):
            if width:
                out.append((power, slice(start, start + width)))
            start += width
        return out

    def reset_parameters(self) -> None:
        """Glorot-uniform per power block; zero bias."""
        with torch.no_grad():
            for _, cols in self.blocks():
                nn.init.xavier_uniform_(self.weight[:, cols])
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, h: Tensor, adjacency: Tensor) -> Tensor:
        """``h`` (``N x F_in``, dense or sparse) -> ``N x sum(widths)``."""
        projected = _matmul(h, self.weight)
        parts = [propagate(adjacency, projected[:, cols], power) for power, cols in self.blocks()]
        out = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return out if self.bias is None else out + self.bias

    def column_norms(self) -> dict[int, Tensor]:
        """L2 norm of every output column, per power (the group-lasso groups)."""
        norms = self.weight.detach().norm(dim=0)
        return {power: norms[cols] for power, cols in self.blocks()}

    def extra_repr(self) -> str:
        """Powers and widths."""
        return f"in={self.in_features}, powers={self.powers}, widths={self.widths}"


class CenteredBatchNorm(nn.Module):
    """Batch norm without scale (``beta`` only), eps 1e-3: TensorFlow's ``batch_norm`` default.

    Args:
        num_features: Width.
        statistics: ``batch`` (normalize with the statistics of the forward pass, also in
            evaluation) or ``running`` (running averages, momentum 0.001 as TensorFlow's decay
            0.999, used in evaluation).
    """

    def __init__(self, num_features: int, statistics: BatchNormStatistics = "batch"):
        super().__init__()
        self.statistics = statistics
        self.norm = nn.BatchNorm1d(
            num_features,
            eps=1e-3,
            momentum=0.001 if statistics == "running" else None,
            affine=False,
            track_running_stats=statistics == "running",
        )
        self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, h: Tensor) -> Tensor:
        return self.norm(h) + self.beta


class MixHopNet(nn.Module):
    """The authors' MixHop node classifier: MixHop layers, batch norm + ReLU + dropout between.

    ``input -> SparseFeatures -> MixHopLayer -> [BN -> ReLU -> dropout -> MixHopLayer]* -> psum``

    Args:
        in_features: Node feature width F.
        num_classes: Number of classes C.
        powers: Adjacency powers of every layer, e.g. ``(0, 1, 2)``.
        hidden_widths: Width per power of each hidden layer: one list per hidden layer
            (``[[24, 18, 18]]`` = one hidden layer).
        output_widths: Width per power of the output layer; its total must be a multiple of C
            (psum blocks), e.g. ``[0, 7, 7]``.
        output: ``psum`` (softmax-weighted sum of the C-wide blocks) or ``fc`` (a bias-free
            linear layer from the output layer's width to C).
        input_normalization: See :class:`SparseFeatures`.
        input_dropout: Dropout on the input's non-zero entries.
        dropout: Dropout before every layer after the first.
        batch_norm: ``batch`` or ``running`` statistics (see the module docstring).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        powers: Sequence[int] = (0, 1, 2),
        hidden_widths: Sequence[Sequence[int]] = ((24, 18, 18),),
        output_widths: Sequence[int] = (0, 7, 7),
        output: Literal["psum", "fc"] = "psum",
        input_normalization: FeatureNormalization = "binary_l2",
        input_dropout: float = 0.5,
        dropout: float = 0.9,
        batch_norm: BatchNormStatistics = "batch",
    ):
        super().__init__()
        if output == "psum" and sum(output_widths) % num_classes:
            raise ValueError(
                f"output_widths {list(output_widths)} sum to {sum(output_widths)}, not a multiple "
                f"of num_classes={num_classes} (psum output)"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_classes = num_classes
        self.output = output
        self.dropout = dropout
        self.features = SparseFeatures(input_normalization, input_dropout)
        widths = [list(w) for w in hidden_widths] + [list(output_widths)]
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = in_features
        for index, layer_widths in enumerate(widths):
            layer = MixHopLayer(width, powers, layer_widths)
            self.layers.append(layer)
            if index < len(widths) - 1:
                self.norms.append(CenteredBatchNorm(layer.out_features, batch_norm))
            width = layer.out_features
        if output == "psum":
            self.psum_logits = nn.Parameter(torch.zeros(width // num_classes))
            self.fc = None
        else:
            self.psum_logits = None
            self.fc = nn.Linear(width, num_classes, bias=False)
            nn.init.xavier_uniform_(self.fc.weight)

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        """Logits ``N x C`` of every node of the (sub)graph."""
        h = self.features(x)
        for index, layer in enumerate(self.layers):
            if index > 0:
                h = F.dropout(h, self.dropout, self.training)
            h = layer(h, adjacency)
            if index < len(self.norms):
                h = F.relu(self.norms[index](h))
        if self.fc is not None:
            return self.fc(F.dropout(h, self.dropout, self.training))
        weights = torch.softmax(self.psum_logits, dim=0)
        return torch.einsum("nbc,b->nc", h.view(h.shape[0], -1, self.num_classes), weights)

    def kernels(self) -> list[Tensor]:
        """The weight matrices the L2 and group-lasso penalties act on (layers and ``fc``)."""
        out = [layer.weight for layer in self.layers]
        return out + ([self.fc.weight.t()] if self.fc is not None else [])

    def psum_penalty(self) -> Tensor:
        """``mean(q^2)`` of the psum weights (the authors weight it by 1e-3); 0 for ``fc``."""
        if self.psum_logits is None:
            return self.layers[0].weight.new_zeros(())
        return self.psum_logits.pow(2).mean()


class GCNNet(nn.Module):
    """Kipf & Welling's GCN: ``Â relu(Â x W_1 + b_1) W_2 + b_2`` with dropout (ICLR 2017).

    Its layers are MixHop layers with the single power 1 and a bias. Inputs row-normalized to
    sum 1 (``input_normalization="sum"``), dropout on the input's non-zero entries and on the
    hidden layer.

    Args:
        in_features: F.
        num_classes: C.
        hidden: Hidden widths, one per hidden layer (``[16]``).
        dropout: Dropout on the input and before every later layer.
        input_normalization: See :class:`SparseFeatures`.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (16,),
        dropout: float = 0.5,
        input_normalization: FeatureNormalization = "sum",
    ):
        super().__init__()
        self.dropout = dropout
        self.features = SparseFeatures(input_normalization, dropout)
        sizes = [in_features, *[int(h) for h in hidden], num_classes]
        self.layers = nn.ModuleList(
            MixHopLayer(a, [1], [b], bias=True) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        """Logits ``N x C``."""
        h = self.features(x)
        for index, layer in enumerate(self.layers):
            if index > 0:
                h = F.dropout(F.relu(h), self.dropout, self.training)
            h = layer(h, adjacency)
        return h

    def kernels(self) -> list[Tensor]:
        """The weight matrices (weight decay acts on the first only, as Kipf & Welling)."""
        return [layer.weight for layer in self.layers]
