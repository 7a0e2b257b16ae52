"""Draw the learned univariate functions phi(x) of one KAN layer of a trained model, as a grid of line plots.

    python -m vision_kan.tools.plot_kan --checkpoint output/kan_cnn4/best.pth --layer head.fc --output phi.png
    python -m vision_kan.tools.plot_kan --checkpoint output/kan_cnn4/best.pth --list      # the layers it can draw

Row o, column i shows phi_{o,i}(x), the function on the edge from input i to output o (the first --max-out
outputs and --max-in inputs):

* KANLinear (B-spline): w_b[o,i] SiLU(x) + sum_k w_s[o,i,k] scaler[o,i] B_k(x), over the feature's knot span.
* FasterKANLinear (RSWAF): sum_k w[o,i,k] phi_k(u), u = the LayerNorm-ed input (the norm mixes features, so the
  function is drawn against u).
* KALN / monomial layers of KAL-Net / KANvolver: base term + polynomial terms of tanh(x).
* GRKANLinear (KAT): the group rationals F_g(x), one panel per group (the linear map after them is not univariate).
* conv-KAN layers: sum over kernel taps of the base and basis terms, the response to a patch of constant value x;
  a bottleneck Gram conv draws its inner Gram conv.

Biases are constants on no edge and are not drawn; neither is a norm after the layer's sum (KAL-Net, conv norms).

Problems in the input: one line on stderr, exit code 2.
"""
import argparse
import sys
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (
    FasterKANLinear, GRKANLinear, KALNLinear, KANLinear, MonomialKANLinear, bspline_basis_auto, rswaf_basis,
)
from ..layers.grkan import DENOMINATORS
from ..layers.kan_conv import BasisKANConv
from ..train.config import ArgumentParser
from ..train.errors import UserInputError, run_cli
from ..train.offline_eval import model_from_checkpoint

__all__ = ['edge_functions', 'drawable_layers', 'plot_layer', 'main']

Curves = Tuple[torch.Tensor, torch.Tensor, str]  # x (O, I, N), phi (O, I, N), x-axis label


def _kind(layer: nn.Module) -> Optional[str]:
    if isinstance(layer, KANLinear):
        return 'bspline'
    if isinstance(layer, FasterKANLinear):
        return 'rswaf'
    if isinstance(layer, GRKANLinear):
        return 'rational'
    if isinstance(layer, BasisKANConv):
        return 'conv'
    if isinstance(layer, KALNLinear):
        return 'legendre'
    if isinstance(layer, MonomialKANLinear):
        return 'monomial'
    return None


def drawable_layers(model: nn.Module) -> List[Tuple[str, str]]:
    """(module name, class name) of every layer plot_kan can draw."""
    return [(n, type(m).__name__) for n, m in model.named_modules() if n and _kind(m) is not None]


@torch.no_grad()
def edge_functions(layer: nn.Module, outputs: Sequence[int], inputs: Sequence[int], num: int = 200,
                   x_range: Optional[Tuple[float, float]] = None) -> Curves:
    """phi_{o,i} sampled on num points for the given outputs o and inputs i: (x, phi, x label), x and phi (O, I, N).

    For a GRKANLinear, `outputs` are ignored and `inputs` index the groups (O = 1)."""
    kind = _kind(layer)
    if kind is None:
        raise UserInputError(f'--layer: {type(layer).__name__} is not a KAN layer plot_kan can draw')
    o_idx, i_idx = torch.as_tensor(list(outputs)), torch.as_tensor(list(inputs))
    lo, hi = x_range or (-2.0, 2.0)
    t = torch.linspace(lo, hi, num, dtype=torch.float64)

    if kind == 'bspline':
        k = layer.spline_order
        grid = layer.grid.double()[i_idx]  # (I, G + 2k + 1)
        if x_range is None:  # the span where the spline is defined, a little beyond the inner grid
            span = grid[:, -k - 1] - grid[:, k]
            a, b = grid[:, k] - 0.1 * span, grid[:, -k - 1] + 0.1 * span
            x = a[:, None] + (b - a)[:, None] * torch.linspace(0, 1, num, dtype=torch.float64)  # (I, N)
        else:
            x = t.expand(len(i_idx), -1)
        basis = _bspline(x, grid, k, layer.grid_uniform)  # (I, N, K)
        ws = layer.scaled_spline_weight().double()[o_idx][:, i_idx]  # (O, I, K)
        wb = layer.base_weight.double()[o_idx][:, i_idx]  # (O, I)
        phi = wb[..., None] * F.silu(x)[None] + torch.einsum('oik,ink->oin', ws, basis)
        return x.expand(len(o_idx), -1, -1), phi, 'x'
    if kind == 'rswaf':
        if x_range is None:
            lo, hi = layer.grid_range[0] - 0.5, layer.grid_range[1] + 0.5
            t = torch.linspace(lo, hi, num, dtype=torch.float64)
        basis = rswaf_basis(t, layer.grid.double(), layer.inv_h)  # (N, K)
        w = layer.weight.double().view(layer.out_features, layer.in_features, layer.num_grids)[o_idx][:, i_idx]
        phi = torch.einsum('oik,nk->oin', w, basis)
        return t.expand(len(o_idx), len(i_idx), -1), phi, 'u = LayerNorm(x)'
    if kind == 'rational':
        r = layer.rational
        a, b = r.weight_numerator.double()[i_idx], r.weight_denominator.double()[i_idx]  # (I, m+1), (I, n)
        if x_range is None:
            t = torch.linspace(-3.0, 3.0, num, dtype=torch.float64)
        fn = DENOMINATORS[getattr(r, 'denominator', 'abs_sum')]  # the layer's own denominator (ours or KAT's)
        phi = torch.stack([fn(t[:, None], a[j:j + 1], b[j:j + 1])[:, 0] for j in range(len(i_idx))])
        return t.expand(1, len(i_idx), -1), phi[None], 'x (group rational)'
    if kind == 'legendre':
        w_poly = layer.poly_weight.double().view(layer.out_features, layer.in_features, -1)[o_idx][:, i_idx]
        basis = layer.legendre(t[:, None]).squeeze(1)  # (N, n + 1)
        phi = layer.base_weight.double()[o_idx][:, i_idx][..., None] * F.silu(t) + torch.einsum(
            'oik,nk->oin', w_poly, basis)
        return t.expand(len(o_idx), len(i_idx), -1), phi, 'x'
    if kind == 'monomial':
        w_poly = layer.poly_weight.double().view(layer.out_features, layer.in_features, -1)[o_idx][:, i_idx]
        basis = layer.monomials(t[:, None]).squeeze(1)  # (N, n)
        phi = layer.base.weight.double()[o_idx][:, i_idx][..., None] * t + torch.einsum('oik,nk->oin', w_poly, basis)
        return t.expand(len(o_idx), len(i_idx), -1), phi, 'x'
    return _conv_functions(layer, o_idx, i_idx, t)


def _bspline(x: torch.Tensor, grid: torch.Tensor, k: int, uniform: bool) -> torch.Tensor:
    """x (I, N), knots (I, G + 2k + 1) -> (I, N, G + k) basis values of each feature on its own knots."""
    return bspline_basis_auto(x.T, grid, k, uniform).transpose(0, 1)  # (N, I) -> (N, I, K) -> (I, N, K)


def _conv_functions(layer: BasisKANConv, o_idx: torch.Tensor, i_idx: torch.Tensor, t: torch.Tensor) -> Curves:
    if getattr(layer, 'inner', None) is not None and layer.basis is None:  # bottleneck: its Gram conv
        layer = layer.inner
    cin_g = layer.in_channels // layer.groups  # inputs per group; i indexes within the output's group
    if int(i_idx.max()) >= cin_g:
        raise UserInputError(f'--max-in: this conv has {cin_g} inputs per output, asked for input {int(i_idx.max())}')
    dtype = torch.float64
    x = t.to(dtype).expand(1, layer.in_channels, -1).contiguous()  # (1, Cin, N): channel c sees the values t
    terms, weights = [], []
    if layer.base_act is not None:
        terms.append(layer.base_act(x)[:, :, None])  # (1, Cin, 1, N)
        weights.append(layer.base_weight[:, :, None])  # (Cout, Cin/g, 1, *k)
    if layer.basis is not None:
        out = torch.empty(1, layer.in_channels, layer.num_functions, x.shape[-1], dtype=dtype)
        layer.basis.expand(x, out, [p.double() for p in layer.basis.tensors()])
        terms.append(out)  # (1, Cin, K, N)
        weights.append(layer.basis_weight)
    feats = torch.cat(terms, dim=2)[0]  # (Cin, K', N)
    w = torch.cat(weights, dim=2).double().flatten(3).sum(-1)  # (Cout, Cin/g, K'): summed over the kernel taps
    cout_g = layer.out_channels // layer.groups
    channel = (o_idx // cout_g)[:, None] * cin_g + i_idx[None, :]  # (O, I): input channel of edge (o, i)
    phi = torch.einsum('oik,oikn->oin', w[o_idx][:, i_idx], feats[channel])
    return t.expand(len(o_idx), len(i_idx), -1), phi, 'x (constant patch)'


def plot_layer(layer: nn.Module, title: str, output: str, max_out: int = 6, max_in: int = 6,
               x_range: Optional[Tuple[float, float]] = None) -> str:
    """Draw phi_{o,i} for the first max_out outputs and max_in inputs (a grid of panels) to a PNG; returns output."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    kind = _kind(layer)
    n_in, n_out = _sizes(layer)
    outputs = range(1 if kind == 'rational' else min(max_out, n_out))
    inputs = range(n_in if kind == 'rational' else min(max_in, n_in))  # every group of a GR-KAN layer
    if kind == 'conv' and getattr(layer, 'inner', None) is not None and layer.basis is None:
        title += ' - its inner Gram conv'
    x, phi, xlabel = edge_functions(layer, outputs, inputs, x_range=x_range)
    rows, cols = phi.shape[0], phi.shape[1]
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols + 0.6, 1.35 * rows + 0.8), squeeze=False,
                             sharex='col')
    for o in range(rows):
        for i in range(cols):
            ax = axes[o][i]
            ax.plot(x[o, i].numpy(), phi[o, i].numpy(), lw=1.2, color='tab:blue')
            ax.axhline(0.0, color='0.8', lw=0.6, zorder=0)
            ax.tick_params(labelsize=6)
            if o == 0:
                ax.set_title(f'group {i}' if kind == 'rational' else f'in {i}', fontsize=8)
            if i == 0 and kind != 'rational':
                ax.set_ylabel(f'out {o}', fontsize=8)
            if o == rows - 1:
                ax.set_xlabel(xlabel, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def _sizes(layer: nn.Module) -> Tuple[int, int]:
    """(inputs, outputs) of a drawable layer; inputs per group for convs, groups for GR-KAN."""
    if isinstance(layer, GRKANLinear):
        return layer.rational.groups, 1
    if isinstance(layer, BasisKANConv):
        inner = layer.inner if getattr(layer, 'inner', None) is not None and layer.basis is None else layer
        return inner.in_channels // inner.groups, inner.out_channels
    return layer.in_features, layer.out_features


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser('python -m vision_kan.tools.plot_kan', description=__doc__.split('\n\n')[0], allow_abbrev=False)
    p.add_argument('--checkpoint', required=True, help='a main.py checkpoint')
    p.add_argument('--layer', default=None, help='module name, e.g. head.fc, layers.0, blocks.0.mlp.fc1')
    p.add_argument('--list', action='store_true', help='print the layers that can be drawn and exit')
    p.add_argument('--output', default=None, help='PNG file (default: phi_<layer>.png)')
    p.add_argument('--model', default=None, help='model name, for a checkpoint without main.py config')
    p.add_argument('--max-out', type=int, default=6, help='rows: the first outputs')
    p.add_argument('--max-in', type=int, default=6, help='columns: the first inputs')
    p.add_argument('--x-range', type=float, nargs=2, default=None, metavar=('LOW', 'HIGH'))
    p.add_argument('--ema', action=argparse.BooleanOptionalAction, default=False, help='draw the EMA weights')
    return p


def run(args: argparse.Namespace, log=print) -> Optional[str]:
    if args.max_out < 1 or args.max_in < 1:
        raise UserInputError(f'--max-out and --max-in must be >= 1, got {args.max_out} and {args.max_in}')
    if args.x_range is not None and not args.x_range[0] < args.x_range[1]:
        raise UserInputError(f'--x-range: LOW must be below HIGH, got {args.x_range}')
    model, info = model_from_checkpoint(args.checkpoint, args.model, use_ema=args.ema)
    layers = drawable_layers(model)
    if args.list or not args.layer:
        if not args.list:
            raise UserInputError(f'--layer: name one of the KAN layers of {info["model"]}, e.g. '
                                 f'{", ".join(n for n, _ in layers[:3]) or "(none)"}; --list shows them all')
        for name, cls in layers:
            log(f'{name}\t{cls}')
        return None
    modules = dict(model.named_modules())
    if args.layer not in modules or _kind(modules[args.layer]) is None:
        hint = ', '.join(n for n, _ in layers[:3]) or 'none'
        what = 'is not a KAN layer' if args.layer in modules else 'is not a module'
        raise UserInputError(f'--layer {args.layer} {what} of {info["model"]} (KAN layers: {hint}, ...; --list)')
    output = args.output or f'phi_{args.layer.replace(".", "_")}.png'
    layer = modules[args.layer]
    trained = f', after epoch {info["epoch"] + 1}' if isinstance(info['epoch'], int) else ''
    title = f'{info["model"]}: {args.layer} ({type(layer).__name__}), learned phi(x){trained}'
    try:
        plot_layer(layer, title, output, args.max_out, args.max_in, tuple(args.x_range) if args.x_range else None)
    except OSError as e:  # the PNG cannot be written
        raise UserInputError(f'--output: {e.strerror or e}: {getattr(e, "filename", "")}') from e
    log(f'wrote {output}')
    return output


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == '__main__':
    sys.exit(main())
