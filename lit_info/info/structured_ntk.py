r"""Structured empirical NTK: the kernel of ``nn.Linear`` layers without their Jacobian.

Novak, Sohl-Dickstein and Schoenholz (ICML 2022), "Fast finite width neural tangent kernel": for
a linear layer ``y = a W^T + b`` applied to a per-sample input ``a_i`` (length ``d_in``), the
gradient of output ``c`` with respect to ``W`` is the outer product ``g_{i,c} a_i^T`` of the
output gradient ``g_{i,c} = d f_c(x_i) / d y_i`` (length ``d_out``) and the input, so the layer's
contribution to the empirical NTK factorizes:

.. math::

    \Theta_l[(i, c), (j, d)] = \langle g_{i,c}, g_{j,d} \rangle
        \left(\langle a_i, a_j \rangle + [\text{bias}]\right).

Only the features ``A_l`` (``n x d_in``) and ``G_l`` (``n x k x d_out``) are kept (one forward
and ``k`` backward passes per chunk of samples), never the ``n x k x d_out d_in`` Jacobian block.
The contributions of all such layers are summed; every other trainable parameter (convolutions,
BatchNorm affine parameters, ...) goes through the exact Jacobian of
:func:`lit_info.info.network_jacobian` restricted to those parameters. The result equals
``empirical_ntk(network_jacobian(model, x))`` (same layout: ``(n1 * k, n2 * k)``, sample-major,
entry ``(i * k + c, j * k + d)``; see :mod:`lit_info.info.ntk`) up to rounding.

A ``Linear`` layer is handled structurally only when that is exact; otherwise its parameters go to
the Jacobian path:

* it is a plain ``nn.Linear`` (its class does not override ``forward``), its weight and bias are
  ordinary parameters owned by no other module (no parametrization, no weight tying) and it has
  no forward hooks of its own;
* in every forward pass it is called at most once (no weight sharing across calls), on one 2-D
  input ``(N, d_in)`` with the batch dimension ``N`` of the model input (e.g. not on a sequence
  ``(N, T, d_in)``). These are checked while running: a layer that breaks them is demoted to the
  Jacobian path and the computation starts again.

A frozen weight or bias (``requires_grad=False``) contributes nothing, as in
:func:`lit_info.info.network_jacobian`. The model runs in eval mode (BatchNorm frozen at its
running statistics, dropout off; every module's mode is restored afterwards), so samples are
processed independently and ``d f_c / d y`` can be taken from ``out[:, c].sum()``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .jacobian import network_jacobian, parameter_names

__all__ = ["structured_ntk", "structured_ntk_pair"]


@dataclass
class _Layer:
    """A ``Linear`` layer handled structurally."""

    name: str
    module: nn.Linear
    weight: bool  # the weight is trainable: contributes <g, g'> <a, a'>
    bias: bool  # the bias is trainable: contributes <g, g'>


@dataclass
class _Features:
    """Per-sample features of one set of inputs."""

    num_samples: int
    num_outputs: int
    inputs: list[Tensor | None] = field(default_factory=list)  # A_l (n, d_in) or None
    grads: list[Tensor] = field(default_factory=list)  # G_l (n, k, d_out)
    jacobian: Tensor | None = None  # (n, k, p_fallback), parameters' dtype


class _Demote(Exception):
    """Raised when Linear layers turn out not to be structurally tractable."""

    def __init__(self, reasons: dict[str, str]) -> None:
        super().__init__(reasons)
        self.reasons = reasons


@dataclass
class _HookState:
    """What the forward hook of one layer saw during the current forward pass."""

    calls: int = 0
    a: Tensor | None = None
    y: Tensor | None = None


def _check_inputs(inputs: object, name: str) -> Tensor:
    if not isinstance(inputs, Tensor) or inputs.ndim < 1 or inputs.shape[0] < 1:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"{name} must be a non-empty tensor of shape (n, ...), got {shape}")
    return inputs


def _check_arguments(
    model: object, inputs: list[Tensor], names: list[str], chunk_size: object, dtype: object
) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for x, name in zip(inputs, names, strict=True):
        _check_inputs(x, name)
    for x, name in zip(inputs[1:], names[1:], strict=True):
        if x.shape[1:] != inputs[0].shape[1:]:
            raise ValueError(
                f"{names[0]} and {name} must agree beyond the batch dimension, got "
                f"{tuple(inputs[0].shape)} and {tuple(x.shape)}"
            )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    if not parameter_names(model):
        raise ValueError("model has no parameters with requires_grad=True")


def _candidate_layers(model: nn.Module) -> list[_Layer]:
    """Linear layers that can be handled structurally, judging from the model alone."""
    owners: Counter[int] = Counter()
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None:
                owners[id(p)] += 1
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or type(module).forward is not nn.Linear.forward:
            continue
        if parametrize.is_parametrized(module) or module._forward_hooks:
            continue
        weight = module._parameters.get("weight")
        bias = module._parameters.get("bias")
        if not isinstance(weight, nn.Parameter) or weight is not module.weight:
            continue  # e.g. old-style weight_norm recomputes the weight
        if module.bias is not None and bias is not module.bias:
            continue
        own = [p for p in (weight, bias) if p is not None]
        if any(owners[id(p)] > 1 for p in own):
            continue  # tied to another module's parameter
        use_weight = weight.requires_grad
        use_bias = bias is not None and bias.requires_grad
        if use_weight or use_bias:
            layers.append(_Layer(name, module, use_weight, use_bias))
    return layers


def _fallback_names(model: nn.Module, layers: list[_Layer]) -> list[str]:
    """Trainable parameters not covered by the structured layers, in column order."""
    covered = set()
    for layer in layers:
        if layer.weight:
            covered.add(id(layer.module.weight))
        if layer.bias:
            covered.add(id(layer.module.bias))
    named = dict(model.named_parameters())
    return [name for name in parameter_names(model) if id(named[name]) not in covered]


def _extract(
    model: nn.Module,
    layers: list[_Layer],
    fallback: list[str],
    inputs: Tensor,
    chunk_size: int,
    dtype: torch.dtype,
    num_outputs: int | None,
) -> _Features:
    """Features of ``inputs`` (model already in eval mode, gradients enabled)."""
    states = {id(layer.module): _HookState() for layer in layers}
    names = {id(layer.module): layer.name for layer in layers}
    wants_input = {id(layer.module): layer.weight for layer in layers}
    phase = {"value": "off", "batch": 0}
    problems: dict[str, str] = {}

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: object) -> object:
        key = id(module)
        if phase["value"] == "off":
            return None
        if phase["value"] != "record":
            problems[names[key]] = "called outside the forward pass"
            return None
        state = states[key]
        state.calls += 1
        if len(args) == 1 and not kwargs:
            x = args[0]
        elif not args and len(kwargs) == 1:
            x = next(iter(kwargs.values()))
        else:
            x = None
        batch = phase["batch"]
        if state.calls > 1:
            problems[names[key]] = "called more than once per forward pass (weight sharing)"
        elif not (
            isinstance(x, Tensor)
            and isinstance(output, Tensor)
            and x.ndim == 2
            and output.ndim == 2
            and x.shape[0] == batch
            and output.shape[0] == batch
        ):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            problems[names[key]] = f"input {shape} is not (N, d_in) with N={batch}"
        else:
            if wants_input[key]:
                state.a = x.detach().to(dtype, copy=True)
            state.y = output
            # Downstream in-place operations (e.g. ReLU(inplace=True)) act on the copy, so the
            # gradient taken with respect to ``output`` stays that of the layer's output.
            return output.clone()
        return None

    handles = [
        layer.module.register_forward_hook(hook, with_kwargs=True, prepend=False)
        for layer in layers
    ]
    n = inputs.shape[0]
    chunk_inputs: list[list[Tensor]] = [[] for _ in layers]
    chunk_grads: list[list[Tensor]] = [[] for _ in layers]
    chunk_jacs: list[Tensor] = []
    k = num_outputs
    try:
        for start in range(0, n, chunk_size):
            x = inputs[start : start + chunk_size]
            if x.is_inference():
                x = x.clone()
            m = x.shape[0]
            for state in states.values():
                state.calls, state.a, state.y = 0, None, None
            phase["value"], phase["batch"] = "record", m
            out = model(x)
            phase["value"] = "idle"
            if not isinstance(out, Tensor) or out.ndim not in (1, 2) or out.shape[0] != m:
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(
                    f"model output must have shape (N, k) or (N,), got {shape} for N={m}"
                )
            if out.ndim == 1:
                out = out[:, None]
            if k is None:
                k = out.shape[1]
            elif out.shape[1] != k:
                raise ValueError(f"model output has {out.shape[1]} outputs, expected {k}")
            if problems:
                raise _Demote(dict(problems))
            called = [i for i, layer in enumerate(layers) if states[id(layer.module)].calls]
            ys = [states[id(layers[i].module)].y for i in called]
            per_output: list[list[Tensor | None]] = []
            for c in range(k):
                if ys and out.requires_grad:
                    grads = torch.autograd.grad(
                        out[:, c].sum(), ys, retain_graph=c < k - 1, allow_unused=True
                    )
                else:
                    grads = (None,) * len(ys)
                per_output.append(list(grads))
            if problems:  # e.g. recomputed in the backward pass (activation checkpointing)
                raise _Demote(dict(problems))
            position = {i: j for j, i in enumerate(called)}
            for i, layer in enumerate(layers):
                module = layer.module
                d_out, d_in = module.out_features, module.in_features
                g = x.new_zeros((m, k, d_out), dtype=dtype)
                a = states[id(module)].a
                if i in position:
                    for c in range(k):
                        grad = per_output[c][position[i]]
                        if grad is not None:
                            g[:, c] = grad.detach()
                if layer.weight:
                    chunk_inputs[i].append(a if a is not None else g.new_zeros((m, d_in)))
                chunk_grads[i].append(g)
            del out, ys, per_output
            for state in states.values():
                state.a, state.y = None, None
            if fallback:
                phase["value"] = "off"
                chunk_jacs.append(
                    network_jacobian(model, x, chunk_size=chunk_size, parameters=fallback)
                )
    finally:
        phase["value"] = "off"
        for handle in handles:
            handle.remove()
    features = _Features(num_samples=n, num_outputs=k)
    for i, layer in enumerate(layers):
        features.inputs.append(torch.cat(chunk_inputs[i]) if layer.weight else None)
        features.grads.append(torch.cat(chunk_grads[i]))
    if fallback:
        features.jacobian = torch.cat(chunk_jacs)
    return features


def _all_features(
    model: nn.Module, inputs: list[Tensor], chunk_size: int, dtype: torch.dtype
) -> tuple[list[_Layer], list[_Features]]:
    """Features of every input set under one plan, demoting layers until the plan is exact."""
    candidates = _candidate_layers(model)
    demoted: set[str] = set()
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            while True:
                layers = [layer for layer in candidates if layer.name not in demoted]
                fallback = _fallback_names(model, layers)
                try:
                    features: list[_Features] = []
                    for x in inputs:
                        k = features[0].num_outputs if features else None
                        features.append(_extract(model, layers, fallback, x, chunk_size, dtype, k))
                    return layers, features
                except _Demote as err:
                    demoted |= set(err.reasons)
    finally:
        for module, training in modes.items():
            module.training = training


def _gram(
    rows: _Features, cols: _Features, layers: list[_Layer], dtype: torch.dtype, block: int
) -> Tensor:
    """``Theta(rows, cols)`` of shape ``(n1 * k, n2 * k)`` from the features."""
    k = rows.num_outputs
    n1, n2 = rows.num_samples, cols.num_samples
    device = rows.grads[0].device if rows.grads else rows.jacobian.device
    theta = torch.zeros(n1 * k, n2 * k, dtype=dtype, device=device)
    if rows.jacobian is not None:
        j1 = rows.jacobian.reshape(n1 * k, -1)
        j2 = cols.jacobian.reshape(n2 * k, -1)
        step = block * k
        for r in range(0, n1 * k, step):
            left = j1[r : r + step].to(dtype)
            for c in range(0, n2 * k, step):
                theta[r : r + step, c : c + step] = left @ j2[c : c + step].to(dtype).T
    for index, layer in enumerate(layers):
        g2 = cols.grads[index].reshape(n2 * k, -1)
        a2 = cols.inputs[index]
        for start in range(0, n1, block):
            stop = min(start + block, n1)
            m = stop - start
            gg = rows.grads[index][start:stop].reshape(m * k, -1) @ g2.T
            if layer.weight:
                factor = rows.inputs[index][start:stop] @ a2.T
                if layer.bias:
                    factor += 1.0
                gg.view(m, k, n2, k).mul_(factor[:, None, :, None])
            theta[start * k : stop * k] += gg
    return theta


def structured_ntk(
    model: nn.Module,
    inputs1: Tensor,
    inputs2: Tensor | None = None,
    *,
    chunk_size: int = 256,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Empirical NTK over all outputs, with ``nn.Linear`` layers in factorized form.

    Equal (up to rounding) to
    ``empirical_ntk(network_jacobian(model, inputs1), network_jacobian(model, inputs2), dtype)``
    but much cheaper for networks whose parameters sit mostly in linear layers: see the module
    docstring.

    Args:
        model: Network mapping a batch ``(N, ...)`` to outputs ``(N, k)`` or ``(N,)`` (``k = 1``),
            with every sample processed independently in eval mode. Only parameters with
            ``requires_grad=True`` count.
        inputs1: Inputs ``(n1, ...)`` (e.g. test inputs, or the training set).
        inputs2: Inputs ``(n2, ...)`` (e.g. the training set); None uses ``inputs1`` and returns
            the symmetric train kernel (exactly symmetrized).
        chunk_size: Samples per forward/backward pass and per vectorized Jacobian call of the
            non-linear-layer parameters (bounds the memory); also the row block of the products.
        dtype: Dtype of the Gram products and of the result (features are converted to it).

    Returns:
        Kernel of shape ``(n1 * k, n2 * k)``; entry ``(i*k + c, j*k + d)`` is
        ``<d f_c(x_i)/dw, d f_d(x_j)/dw>``, on the parameters' device.

    Raises:
        ValueError: If an argument is invalid, the inputs disagree in shape beyond the batch
            dimension, or the model output has an unsupported shape.
    """
    inputs = [inputs1] if inputs2 is None else [inputs1, inputs2]
    _check_arguments(model, inputs, ["inputs1", "inputs2"][: len(inputs)], chunk_size, dtype)
    layers, features = _all_features(model, inputs, chunk_size, dtype)
    theta = _gram(features[0], features[-1], layers, dtype, chunk_size)
    if inputs2 is None:
        theta = (theta + theta.T) / 2
    return theta


def structured_ntk_pair(
    model: nn.Module,
    x_train: Tensor,
    x_test: Tensor,
    *,
    chunk_size: int = 256,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """Train kernel and test-train kernel in one pass (the train features are computed once).

    Args:
        model: The network (see :func:`structured_ntk`).
        x_train: Training inputs ``(n, ...)``.
        x_test: Test inputs ``(m, ...)``, same shape beyond the batch dimension.
        chunk_size: See :func:`structured_ntk`.
        dtype: See :func:`structured_ntk`.

    Returns:
        ``(theta_train, theta_test_train)`` of shapes ``(n * k, n * k)`` (exactly symmetric) and
        ``(m * k, n * k)``, equal to ``structured_ntk(model, x_train)`` and
        ``structured_ntk(model, x_test, x_train)``.

    Raises:
        ValueError: As :func:`structured_ntk`.
    """
    _check_arguments(model, [x_train, x_test], ["x_train", "x_test"], chunk_size, dtype)
    layers, (train, test) = _all_features(model, [x_train, x_test], chunk_size, dtype)
    theta = _gram(train, train, layers, dtype, chunk_size)
    theta = (theta + theta.T) / 2
    return theta, _gram(test, train, layers, dtype, chunk_size)
