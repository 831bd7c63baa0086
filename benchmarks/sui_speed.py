"""Speed of lit_info's SI / F-SI computation against a straightforward reference.

Setting (the paper's MNIST 4 vs 9 MLP, Harutyunyan et al. ICLR 2021): real MNIST test images of
4s and 9s (``n`` training, ``--val`` validation for F-SI), the MLP 784 -> 1024 -> 1 at its
initialization, linearized and trained by ``--steps`` full-batch gradient-descent steps with
learning rate ``--lr`` (MSE, targets +-1); SI (weights, ``||w - w_{-i}||^2 / (2 sigma^2)``) and F-SI
(``1/(2 sigma^2)`` mean squared change of the validation predictions) for every training sample.

* ``lit_info`` (fast): kernel ``Theta = J J^T`` and ``Theta(val, train)`` per layer without
  forming ``J`` (:func:`lit_info.info.structured_ntk_pair`), one ``eigh``, every leave-one-out
  solution from the Chebyshev expansion of the GD filter in the eigenbasis
  (:func:`lit_info.info.leave_one_out_coefficients`), SI and F-SI as batched contractions.
* ``reference`` (the paper's algorithm, written plainly): the Jacobian one sample and one output
  at a time with ``torch.autograd.grad``, ``Theta = J J^T``, then for every left-out sample a
  fresh ``(n-1) x (n-1)`` kernel and the ``t``-th matrix power of the GD iteration
  (:func:`lit_info.info.linearized.reference_coefficients`), SI and F-SI from that sample's
  coefficients. With ``--reference-samples M < n`` the leave-one-out part runs for ``M`` samples
  and its time is scaled by ``n / M`` (marked ``extrapolated``); numbers are compared on those.

Everything is float64. Output: a table of stage times, then script-readable lines::

    speedup n=1000: 123.4x
    max rel diff n=1000: si 1.2e-12 fsi 3.4e-12

(relative difference = ``max_i |fast_i - ref_i| / max_i |ref_i|``).

Usage::

    python benchmarks/sui_speed.py                        # n = 250, 500, 1000 on the CPU
    python benchmarks/sui_speed.py --sizes 9500 --digits all --device cuda --reference-samples 2
"""

from __future__ import annotations

import argparse

import torch
from sui_common import Stopwatch, add_setting_arguments, mlp, mnist_4v9, parse_settings
from torch import Tensor, nn

from lit_info.info import (
    eigh_kernel,
    functional_si,
    leave_one_out_differences,
    structured_ntk_pair,
    weight_si,
)
from lit_info.info.linearized import reference_coefficients


def fast_sample_information(
    model: nn.Module, x: Tensor, y: Tensor, xv: Tensor, args: argparse.Namespace, clock: Stopwatch
) -> tuple[Tensor, Tensor]:
    """SI and F-SI of every training sample, the lit_info way."""
    gd = dict(eta=args.lr, t=args.steps, lam=args.lam, mode="discrete")
    with clock("kernel (per layer, train + val)"):
        theta, theta_v = structured_ntk_pair(model, x, xv)
        with torch.no_grad():
            residual = model(x) - y
    with clock("eigh"):
        eig = eigh_kernel(theta)
    with clock("leave-one-out (Chebyshev)"):
        _, delta = leave_one_out_differences(theta, residual, eig=eig, **gd)
    with clock("SI + F-SI"):
        si = weight_si(theta, delta, args.sigma2)
        fsi = functional_si(theta_v, delta, args.sigma2)
    return si, fsi


def per_sample_jacobian(model: nn.Module, x: Tensor) -> Tensor:
    """``(n k, p)`` Jacobian, one sample and one output at a time with autograd."""
    params = [p for p in model.parameters() if p.requires_grad]
    width = sum(p.numel() for p in params)
    jac = None
    for i in range(x.shape[0]):
        out = model(x[i : i + 1])[0]
        k = out.shape[0]
        if jac is None:
            jac = torch.empty(x.shape[0] * k, width, dtype=out.dtype, device=out.device)
        for c in range(k):
            grads = torch.autograd.grad(out[c], params, retain_graph=c + 1 < k)
            torch.cat([g.reshape(-1) for g in grads], out=jac[i * k + c])
    return jac


def reference_sample_information(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    xv: Tensor,
    args: argparse.Namespace,
    clock: Stopwatch,
    samples: Tensor,
) -> tuple[Tensor, Tensor]:
    """SI and F-SI of ``samples``, the straightforward way (see the module docstring)."""
    gd = dict(eta=args.lr, t=args.steps, lam=args.lam, mode="discrete")
    with clock("jacobians (per sample, per output)"):
        jac = per_sample_jacobian(model, x)
        jac_v = per_sample_jacobian(model, xv)
    with clock("kernel (J J^T)"):
        theta = jac @ jac.T
        theta_v = jac_v @ jac.T
        with torch.no_grad():
            residual = model(x) - y
    n = x.shape[0]
    si, fsi = [], []
    with clock("leave-one-out (matrix powers)"):
        beta = reference_coefficients(theta, residual, **gd)
        for i in samples.tolist():
            keep = torch.arange(n, device=x.device) != i
            loo = torch.zeros_like(beta)
            loo[keep] = reference_coefficients(theta[keep][:, keep], residual[keep], **gd)
            delta = beta - loo
            si.append(delta @ theta @ delta / (2 * args.sigma2))
            fsi.append((theta_v @ delta).pow(2).mean() / (2 * args.sigma2))
    return torch.stack(si), torch.stack(fsi)


def relative_difference(fast: Tensor, ref: Tensor) -> float:
    """``max_i |fast_i - ref_i| / max_i |ref_i|``."""
    return float((fast - ref).abs().max() / ref.abs().max())


def main() -> None:
    """Run the benchmark and print the table and the summary lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--reference-samples", type=int, default=None, help="default: all")
    parser.add_argument("--no-reference", action="store_true", help="time lit_info only")
    parser.add_argument(
        "--digits", default="4v9", choices=["4v9", "all"], help="all: for n > 1,491"
    )
    add_setting_arguments(parser)
    args, device = parse_settings(parser)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    summary = []
    # warm-up (library initialization, GPU kernels, allocator), not timed
    x, y, xv, _ = mnist_4v9(20, 10)
    x, y, xv = x.to(device), y.to(device), xv.to(device)
    model = mlp(args.hidden).to(device)
    fast_sample_information(model, x, y, xv, args, Stopwatch(device))
    if not args.no_reference:
        samples = torch.arange(2, device=device)
        reference_sample_information(model, x, y, xv, args, Stopwatch(device), samples)
    for n in args.sizes:
        x, y, xv, _ = mnist_4v9(n, args.val, digits=args.digits)
        x, y, xv = x.to(device), y.to(device), xv.to(device)
        model = mlp(args.hidden).to(device)
        fast_clock = Stopwatch(device)
        fast_si, fast_fsi = fast_sample_information(model, x, y, xv, args, fast_clock)
        print(f"\nn={n} (val {args.val}, p={sum(p.numel() for p in model.parameters())})")
        print(f"  {'stage':40s} {'seconds':>10s}")
        for stage, sec in fast_clock.seconds.items():
            print(f"  lit_info  {stage:30s} {sec:10.3f}")
        print(f"  lit_info  {'total':30s} {fast_clock.total:10.3f}")
        if args.no_reference:
            summary.append(f"lit_info seconds n={n}: {fast_clock.total:.3f}")
            continue
        m = n if args.reference_samples is None else min(n, args.reference_samples)
        samples = torch.linspace(0, n - 1, m, device=device).round().long()
        ref_clock = Stopwatch(device)
        ref_si, ref_fsi = reference_sample_information(model, x, y, xv, args, ref_clock, samples)
        loo_stage = "leave-one-out (matrix powers)"
        note = ""
        if m < n:
            ref_clock.seconds[loo_stage] *= n / m
            note = f"  (leave-one-out extrapolated from {m} samples)"
        for stage, sec in ref_clock.seconds.items():
            print(f"  reference {stage:30s} {sec:10.3f}")
        print(f"  reference {'total':30s} {ref_clock.total:10.3f}{note}")
        speedup = ref_clock.total / fast_clock.total
        d_si = relative_difference(fast_si[samples], ref_si)
        d_fsi = relative_difference(fast_fsi[samples], ref_fsi)
        summary.append(f"speedup n={n}: {speedup:.1f}x{note}")
        summary.append(f"max rel diff n={n}: si {d_si:.1e} fsi {d_fsi:.1e}")
    print()
    print("\n".join(summary))


if __name__ == "__main__":
    main()
