"""Per-sample Jacobians of network outputs with respect to all trainable parameters.

The Jacobian of a network ``f_w`` at inputs ``x_1..x_n`` is returned as a tensor of shape
``(n, k, p)``: sample, output, parameter. Parameters are flattened in the order of
``model.named_parameters()`` (only those with ``requires_grad=True``), each one in row-major
(``Tensor.flatten``) order, so the same model always gives the same layout; see
:func:`parameter_names` and :func:`flatten_parameters`.

The network is evaluated in eval mode with its buffers passed as fixed tensors, so BatchNorm uses
(and never updates) its running statistics and dropout is off: the Jacobian is that of the
deterministic function that the linearized model of smooth unique information is built around.

For networks too large to hold ``n x k x p`` numbers, an optional random projection ("sketch") of
the parameter dimension maps every Jacobian row ``g`` (length ``p``) to ``P^T g`` (length ``d``),
with ``P`` a random ``p x d`` matrix with ``E[P P^T] = I``, so that ``E[(J P)(J P)^T] = J J^T``.
Two kinds (``sketch_type``):

* ``"gaussian"`` (default): i.i.d. ``N(0, 1/d)`` entries, generated block by block from
  ``sketch_seed`` (one generator per parameter tensor and row block), so it never exists as a
  whole; two calls with the same seed, the same model layout, device and dtype use exactly the
  same projection, and in another dtype the same one up to rounding (the normals are always
  drawn in float32, then converted). It costs ``p d`` random normals and a ``(k p) x d``
  product per chunk of samples: for ResNet-18 (``p = 11.2M``) and ``d = 4096``, 46e9 normals
  per chunk.
* ``"countsketch"``: every parameter coordinate ``j`` gets a bucket ``h(j)`` in ``[0, d)`` and a
  sign ``s(j) = +-1`` (row ``j`` of ``P`` is ``s(j) e_{h(j)}``), so
  ``(P^T g)[b] = sum_{j: h(j) = b} s(j) g[j]``: ``O(p)`` per row and ``p`` random integers per
  call. ``E[<P^T a, P^T b>] = <a, b>`` with variance
  ``(|a|^2 |b|^2 + <a, b>^2 - 2 sum_j a_j^2 b_j^2) / d``, at most the Gaussian sketch's
  (``(|a|^2 |b|^2 + <a, b>^2) / d``). The hashes are drawn on the CPU from ``sketch_seed`` (one
  generator per parameter tensor) and only then moved, so they are the same on every device and
  in every dtype; see :func:`countsketch_hashes`. On GPUs the sums use atomic adds, so repeated
  calls agree up to rounding, not bit for bit.

Compute train and test Jacobians with the same seed and sketch type for their kernels to match.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

__all__ = [
    "countsketch_hashes",
    "flatten_parameters",
    "network_jacobian",
    "parameter_names",
    "sketch_matrix",
]

# Rows of the sketch matrix generated at once per parameter tensor (bounds the memory used).
_SKETCH_BLOCK_ROWS = 4096
SKETCH_TYPES = ("gaussian", "countsketch")


def parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters that :func:`network_jacobian` differentiates, in column order.

    Args:
        model: The network.

    Returns:
        Names of the parameters with ``requires_grad=True``, in ``named_parameters()`` order.
    """
    return [name for name, p in model.named_parameters() if p.requires_grad]


def flatten_parameters(model: nn.Module) -> Tensor:
    """Concatenate the trainable parameters in the column order of :func:`network_jacobian`.

    Args:
        model: The network.

    Returns:
        A detached vector of length ``p`` (the ``w0`` of the linearized model).
    """
    params = [p.detach().flatten() for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters with requires_grad=True")
    return torch.cat(params)


def _check_positive_int(value: int | None, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


def _check_sketch_type(sketch_type: str) -> None:
    if not isinstance(sketch_type, str) or sketch_type not in SKETCH_TYPES:
        raise ValueError(f"sketch_type must be one of {SKETCH_TYPES}, got {sketch_type!r}")


def _seeded_generator(key: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded deterministically from the string ``key``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(
        int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1
    )
    return gen


def _sketch_block(
    param_index: int,
    row_start: int,
    rows: int,
    sketch_dim: int,
    sketch_seed: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """Rows ``row_start:row_start + rows`` of the sketch block of parameter ``param_index``."""
    # A distinct, deterministic stream per (seed, parameter tensor, row block).
    gen = _seeded_generator(
        f"{int(sketch_seed)}:{param_index}:{row_start // _SKETCH_BLOCK_ROWS}", device
    )
    # Drawn in float32 whatever ``dtype`` (randn draws other numbers in float64), so a float64
    # and a float32 Jacobian of the same model get the same projection up to rounding.
    out = torch.randn(rows, sketch_dim, generator=gen, device=device, dtype=torch.float32)
    return out.to(dtype) / sketch_dim**0.5


def _countsketch_block(
    param_index: int, size: int, sketch_dim: int, sketch_seed: int
) -> tuple[Tensor, Tensor]:
    """CPU buckets (int64 in ``[0, d)``) and signs (int64 ``+-1``) of one parameter tensor."""
    # One draw in [0, 2d) per coordinate: (r mod d, r div d) is uniform on buckets x signs.
    gen = _seeded_generator(f"countsketch:{int(sketch_seed)}:{param_index}")
    draw = torch.randint(0, 2 * sketch_dim, (size,), generator=gen)
    return draw % sketch_dim, 1 - 2 * (draw // sketch_dim)


def _trainable(model: nn.Module) -> list[Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters with requires_grad=True")
    return params


def countsketch_hashes(
    model: nn.Module,
    sketch_dim: int,
    sketch_seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Buckets and signs of the CountSketch (``sketch_type="countsketch"``) of a model.

    Row ``j`` of the projection ``P`` (``p x sketch_dim``) is ``signs[j] * e_{buckets[j]}``:
    ``P[torch.arange(p), buckets] = signs``. They depend only on the seed, ``sketch_dim`` and
    the sizes of the trainable parameters (drawn on the CPU, then moved), not on device or dtype.

    Args:
        model: The network (its trainable parameter shapes define the layout).
        sketch_dim: Number of projected dimensions ``d``.
        sketch_seed: Seed of the projection.
        device: Device of the outputs (default: that of the parameters).
        dtype: Dtype of ``signs`` (default: that of the parameters).

    Returns:
        ``(buckets, signs)``, both of length ``p``: int64 buckets in ``[0, sketch_dim)`` and
        signs ``+-1`` in ``dtype``, in the column order of :func:`network_jacobian`.
    """
    _check_positive_int(sketch_dim, "sketch_dim")
    params = _trainable(model)
    device = torch.device(device) if device is not None else params[0].device
    dtype = dtype or params[0].dtype
    hashes = [
        _countsketch_block(index, p.numel(), sketch_dim, sketch_seed)
        for index, p in enumerate(params)
    ]
    buckets = torch.cat([b for b, _ in hashes]).to(device)
    signs = torch.cat([s for _, s in hashes]).to(device=device, dtype=dtype)
    return buckets, signs


def sketch_matrix(
    model: nn.Module,
    sketch_dim: int,
    sketch_seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    sketch_type: str = "gaussian",
) -> Tensor:
    """Materialize the ``p x sketch_dim`` projection used by :func:`network_jacobian`.

    Only meant for small models (tests, inspection): :func:`network_jacobian` never builds it.

    Args:
        model: The network (its trainable parameter shapes define the layout).
        sketch_dim: Number of projected dimensions ``d``.
        sketch_seed: Seed of the projection.
        device: Device of the matrix (default: that of the parameters).
        dtype: Dtype of the matrix (default: that of the parameters).
        sketch_type: ``"gaussian"`` or ``"countsketch"`` (see the module docstring).

    Returns:
        The matrix ``P`` with
        ``network_jacobian(..., sketch_dim, sketch_seed, sketch_type=sketch_type) == J @ P``.
    """
    _check_positive_int(sketch_dim, "sketch_dim")
    _check_sketch_type(sketch_type)
    params = _trainable(model)
    device = torch.device(device) if device is not None else params[0].device
    dtype = dtype or params[0].dtype
    if sketch_type == "countsketch":
        buckets, signs = countsketch_hashes(model, sketch_dim, sketch_seed, device, dtype)
        out = torch.zeros(buckets.shape[0], sketch_dim, device=device, dtype=dtype)
        out[torch.arange(buckets.shape[0], device=device), buckets] = signs
        return out
    blocks = []
    for index, p in enumerate(params):
        size = p.numel()
        for start in range(0, size, _SKETCH_BLOCK_ROWS):
            rows = min(_SKETCH_BLOCK_ROWS, size - start)
            blocks.append(_sketch_block(index, start, rows, sketch_dim, sketch_seed, device, dtype))
    return torch.cat(blocks)


def network_jacobian(
    model: nn.Module,
    inputs: Tensor,
    chunk_size: int | None = 64,
    sketch_dim: int | None = None,
    sketch_seed: int = 0,
    parameters: Sequence[str] | None = None,
    sketch_type: str = "gaussian",
) -> Tensor:
    """Jacobian of the outputs of ``model`` with respect to all its trainable parameters.

    Uses ``torch.func`` (``functional_call``, ``jacrev``, ``vmap``) on chunks of ``chunk_size``
    samples; the model is put in eval mode for the computation (BatchNorm frozen, dropout off)
    and its previous mode is restored afterwards.

    Args:
        model: Network mapping a batch ``(N, ...)`` to outputs ``(N, k)`` or ``(N,)`` (``k = 1``).
        inputs: Inputs of shape ``(n, ...)``.
        chunk_size: Samples per vectorized call (bounds memory to ``chunk_size * k * p``); None
            processes all samples at once.
        sketch_dim: If given, project the parameter dimension to this many random directions
            (see the module docstring); None returns the exact Jacobian.
        sketch_seed: Seed of the projection; use the same one for train and test inputs.
        parameters: Names (as in :func:`parameter_names`) of the trainable parameters to
            differentiate, a subset of them; the others are held fixed. Columns keep the
            ``named_parameters()`` order whatever the order of ``parameters``, and a sketch is
            then defined over the selected parameters only. None (default) selects all of them.
        sketch_type: ``"gaussian"`` (default) or ``"countsketch"`` (``O(p)`` per Jacobian row,
            much cheaper for large ``p``); see the module docstring. Unused without
            ``sketch_dim``.

    Returns:
        Tensor of shape ``(n, k, p)`` (or ``(n, k, sketch_dim)``) with
        ``J[i, c, j] = d f_c(x_i) / d w_j``, detached, in the parameters' dtype and device.

    Raises:
        ValueError: If an argument is invalid or the model output has an unsupported shape.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, Tensor) or inputs.ndim < 1 or inputs.shape[0] < 1:
        raise ValueError("inputs must be a tensor of shape (n, ...) with n >= 1")
    _check_positive_int(chunk_size, "chunk_size")
    _check_positive_int(sketch_dim, "sketch_dim")
    _check_sketch_type(sketch_type)
    names = parameter_names(model)
    if not names:
        raise ValueError("model has no parameters with requires_grad=True")
    if parameters is not None:
        names = _select_parameters(names, parameters)
    selected = set(names)
    named = dict(model.named_parameters())
    params = {name: named[name].detach() for name in names}
    frozen = {name: p.detach() for name, p in named.items() if name not in selected}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def single_output(p: dict[str, Tensor], x: Tensor) -> Tensor:
        out = functional_call(model, ({**p, **frozen}, buffers), (x.unsqueeze(0),))
        if out.ndim == 1:
            return out  # (1,): one output
        if out.ndim != 2:
            raise ValueError(
                f"model output must have shape (N, k) or (N,), got {tuple(out.shape)} for N=1"
            )
        return out.squeeze(0)

    jac_fn = vmap(jacrev(single_output), in_dims=(None, 0))
    n = inputs.shape[0]
    step = n if chunk_size is None else chunk_size
    was_training = model.training
    model.eval()
    hashes = None
    if sketch_dim is not None and sketch_type == "countsketch":
        # Drawn once per call (p integers), shared by all chunks.
        hashes = []
        for index, name in enumerate(names):
            p = params[name]
            buckets, signs = _countsketch_block(index, p.numel(), sketch_dim, sketch_seed)
            hashes.append((buckets.to(p.device), signs.to(device=p.device, dtype=p.dtype)))
    chunks = []
    try:
        for start in range(0, n, step):
            jac = jac_fn(params, inputs[start : start + step])
            blocks = [jac[name].flatten(start_dim=2) for name in names]  # (c, k, p_b)
            if sketch_dim is None:
                chunks.append(torch.cat(blocks, dim=2).detach())
            elif hashes is not None:
                chunks.append(_countsketch_project(blocks, sketch_dim, hashes).detach())
            else:
                chunks.append(_project(blocks, sketch_dim, sketch_seed).detach())
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def _select_parameters(names: list[str], parameters: Sequence[str]) -> list[str]:
    """The trainable ``names`` that are in ``parameters``, in ``names`` order (validated)."""
    if isinstance(parameters, str) or not isinstance(parameters, Sequence):
        raise ValueError(
            f"parameters must be a sequence of parameter names or None, got {parameters!r}"
        )
    wanted = set(parameters)
    unknown = sorted(str(name) for name in wanted - set(names))
    if unknown:
        raise ValueError(
            f"parameters {unknown} are not trainable parameters of the model "
            "(see parameter_names(model))"
        )
    if not wanted:
        raise ValueError("parameters must name at least one trainable parameter")
    return [name for name in names if name in wanted]


def _project(blocks: list[Tensor], sketch_dim: int, sketch_seed: int) -> Tensor:
    """Apply the block-generated sketch to the per-parameter Jacobian blocks ``(c, k, p_b)``."""
    first = blocks[0]
    out = first.new_zeros(first.shape[0], first.shape[1], sketch_dim)
    for index, block in enumerate(blocks):
        size = block.shape[2]
        for start in range(0, size, _SKETCH_BLOCK_ROWS):
            rows = min(_SKETCH_BLOCK_ROWS, size - start)
            proj = _sketch_block(
                index, start, rows, sketch_dim, sketch_seed, block.device, block.dtype
            )
            out += block[:, :, start : start + rows] @ proj
    return out


def _countsketch_project(
    blocks: list[Tensor], sketch_dim: int, hashes: list[tuple[Tensor, Tensor]]
) -> Tensor:
    """``out[..., h(j)] += s(j) * J[..., j]`` over the per-parameter blocks ``(c, k, p_b)``."""
    first = blocks[0]
    c, k = first.shape[0], first.shape[1]
    out = first.new_zeros(c * k, sketch_dim)
    for block, (buckets, signs) in zip(blocks, hashes, strict=True):
        rows = block.reshape(c * k, block.shape[2]) * signs.to(block.dtype)
        out.scatter_add_(1, buckets.expand(c * k, -1), rows)
    return out.reshape(c, k, sketch_dim)
