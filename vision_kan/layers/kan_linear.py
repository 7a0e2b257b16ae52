"""KAN linear layers: a learned univariate function on every (input, output) edge, summed over inputs.

* `KANLinear` (efficient-KAN semantics): y = W_b . SiLU(x) + (W_s * scaler) . B(x), B the cubic B-spline basis.
* `FasterKANLinear` (FasterKAN): y = W . phi(LayerNorm(x)), phi the RSWAF basis on a symmetric grid.

Both take any leading dims: (..., d) -> (..., d').
"""
import functools
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from .basis import bspline_basis_auto, knots_are_uniform, rswaf_basis, uniform_knots
from .kernels import KIND_BSPLINE, KIND_RSWAF, basis_linear_call, compute_dtype, fused_path
from .kernels.dispatch import backend_repr, check_backend

__all__ = ['KANLinear', 'FasterKANLinear', 'spline_regularization']


def _check_features(x: torch.Tensor, in_features: int, layer: str) -> None:
    if x.shape[-1] != in_features:
        raise ValueError(f'{layer}: input last dim must be in_features={in_features}, got shape {tuple(x.shape)}')


def spline_regularization(
        weight: torch.Tensor,
        regularize_activation: float = 1.0,
        regularize_entropy: float = 1.0,
) -> torch.Tensor:
    """efficient-KAN's penalty from a (d', d, K) coefficient tensor: L1 of the edges' mean |coefficient| plus the
    entropy of their distribution. Finite value and gradient also for an all-zero weight."""
    l1 = weight.abs().mean(-1)  # (d', d): one "activation size" per edge
    total = l1.sum()
    p = l1 / total.clamp_min(torch.finfo(l1.dtype).tiny)
    positive = p > 0
    # p log p with 0 log 0 = 0; the inner where keeps log's gradient finite where p == 0
    plogp = torch.where(positive, p * torch.log(torch.where(positive, p, torch.ones_like(p))), torch.zeros_like(p))
    return regularize_activation * total - regularize_entropy * plogp.sum()


class KANLinear(nn.Module):
    """B-spline KAN layer. Parameters: d * d' * (G + k + 2) (+ d' with bias).

    Args:
        in_features: d.
        out_features: d'.
        grid_size: G, number of grid intervals on grid_range.
        spline_order: k, B-spline order (3 = cubic; cubic on a uniform grid takes the closed form).
        scale_noise: amplitude of the random initial spline coefficients.
        scale_base: gain of the base weight init.
        scale_spline: gain of the spline scaler init.
        base_activation: the b(x) of the residual branch, SiLU by default.
        grid_eps: in `update_grid`, weight of the uniform grid against the data quantiles.
        grid_range: initial grid span.
        bias: add a learned bias (efficient-KAN has none).
        kernel_backend: 'auto', 'reference' or 'fused', this layer's path (`kernels.set_backend` sets a model's).
    """

    def __init__(
            self,
            in_features: int,
            out_features: int,
            grid_size: int = 5,
            spline_order: int = 3,
            scale_noise: float = 0.1,
            scale_base: float = 1.0,
            scale_spline: float = 1.0,
            base_activation: type = nn.SiLU,
            grid_eps: float = 0.02,
            grid_range: Tuple[float, float] = (-1.0, 1.0),
            bias: bool = False,
            device=None,
            dtype=None,
            kernel_backend: str = 'auto',
    ):
        super().__init__()
        self.kernel_backend = check_backend(kernel_backend, 'KANLinear')
        if not isinstance(grid_size, int) or grid_size < 1:
            raise ValueError(f'KANLinear: grid_size must be an integer >= 1, got {grid_size!r}')
        if not isinstance(spline_order, int) or spline_order < 0:
            raise ValueError(f'KANLinear: spline_order must be an integer >= 0, got {spline_order!r}')
        if not grid_range[0] < grid_range[1]:
            raise ValueError(f'KANLinear: grid_range must be (low, high) with low < high, got {grid_range!r}')
        dd = {'device': device, 'dtype': dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.grid_size = grid_size
        self.spline_order = spline_order
        self.scale_noise = scale_noise
        self.scale_base = scale_base
        self.scale_spline = scale_spline
        self.grid_eps = grid_eps
        self.grid_range = tuple(grid_range)
        num_basis = grid_size + spline_order

        knots = uniform_knots(in_features, grid_size, spline_order, grid_range, dtype=dtype or torch.float32,
                              device=device)
        self.register_buffer('grid', knots)  # (d, G + 2k + 1)
        self.grid_uniform = True  # each feature's knots equally spaced: closed form applies; re-derived on load
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features, **dd))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, num_basis, **dd))
        self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features, **dd))
        self.bias = nn.Parameter(torch.empty(out_features, **dd)) if bias else None
        self.base_activation = base_activation()
        self.reset_parameters()

    @property
    def num_basis(self) -> int:
        return self.grid_size + self.spline_order

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5) * self.scale_base)
        nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5) * self.scale_spline)
        with torch.no_grad():
            # small random spline coefficients: the layer starts close to its base branch
            self.spline_weight.uniform_(-0.5, 0.5).mul_(self.scale_noise / self.grid_size)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def init_weights(self) -> None:
        """timm's ViT init calls this instead of overwriting the layer."""
        self.reset_parameters()

    def scaled_spline_weight(self) -> torch.Tensor:
        return self.spline_weight * self.spline_scaler.unsqueeze(-1)  # (d', d, K)

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., d, G + k)."""
        return bspline_basis_auto(x, self.grid, self.spline_order, self.grid_uniform)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.in_features, 'KANLinear')
        if fused_path(self, x):  # self.kernel_backend, x's device and this layer's configuration
            return self.fused_forward(x)
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features)  # (M, d)
        base = F.linear(self.base_activation(x), self.base_weight, self.bias)
        basis = self.basis(x).reshape(x.shape[0], -1)  # (M, d * K)
        spline = F.linear(basis, self.scaled_spline_weight().reshape(self.out_features, -1))
        return (base + spline).reshape(*lead, self.out_features)

    def fused_unsupported(self) -> Optional[str]:
        """Why the fused kernel cannot run this layer (None: it can): cubic, uniform grid, SiLU base only."""
        if self.spline_order != 3:
            return f'spline_order={self.spline_order} (only cubic)'
        if not self.grid_uniform:
            return 'a non-uniform grid (after update_grid)'
        if type(self.base_activation) is not nn.SiLU:
            return f'base_activation {type(self.base_activation).__name__} (only SiLU)'
        return None

    def fused_forward(self, x: torch.Tensor) -> torch.Tensor:
        """forward through the fused kernel (ask `kernels.fused_path` first). One kernel does both branches over
        the slot-major weight [base_weight; spline_weight * scaler] (1 + K, d', d).

        x keeps its dtype (fp32 after a LayerNorm under autocast): the kernel evaluates the basis in fp32 from x as
        given and rounds only the basis to the matmul dtype, as the reference path does. Rounding x to bf16 first
        moved a basis value by up to |dB/dx| * 2^-9 |x| (~5e-3 of its range at |x| ~ 2).
        """
        dtype = compute_dtype(x)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (M, d)
        spline = self.scaled_spline_weight().permute(2, 0, 1)  # (K, d', d)
        weight = torch.cat([self.base_weight.unsqueeze(0), spline], 0).to(dtype)  # (1 + K, d', d), contiguous
        bias = None if self.bias is None else self.bias.to(dtype)
        y = basis_linear_call(x2, weight, self.grid_params(), bias, KIND_BSPLINE, 1.0)
        return y.reshape(*lead, self.out_features)

    def grid_params(self) -> torch.Tensor:
        """(2, d) fp32 [first knot; 1 / knot spacing] of each feature's uniform grid, the kernel's view of it.
        Cached in eager mode on the grid's (version, storage): rebuilt only after the knots change (update_grid,
        load_state_dict, .to()); under torch.compile computed in the graph (fused there)."""
        if torch.compiler.is_compiling():
            return _uniform_grid_params(self.grid)
        key = (self.grid._version, self.grid.data_ptr(), self.grid.device)
        cached = getattr(self, '_grid_params_cache', None)
        if cached is None or cached[0] != key:
            cached = (key, _uniform_grid_params(self.grid))
            self._grid_params_cache = cached
        return cached[1]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.grid_uniform = knots_are_uniform(self.grid)

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor, margin: float = 0.01, grid: Optional[torch.Tensor] = None,
                    grid_eps: Optional[float] = None) -> None:
        """Re-place the knots on the data and refit the coefficients so the layer keeps its function on x.

        New knots: (1 - grid_eps) * data quantiles + grid_eps * uniform span of the data (+- margin), extended by
        k uniform steps each side. The spline part is refitted by least squares on x.

        Changes `grid`, `spline_weight` and `spline_scaler` in place, without autograd: call it between optimizer
        steps, never between a forward and the backward through it (that backward would fail, its saved weights
        having been modified).

        Args:
            x: (..., d) inputs the layer sees, e.g. gathered by a forward hook; all leading dims are samples.
            margin: widening of the data span on each side.
            grid: (d, G + 2k + 1) knots to move to instead of computing them from x (e.g. an EMA copy adopting
                the live model's knots while refitting its own coefficients).
            grid_eps: this update's blend (default: the layer's `grid_eps`); 1.0 places the knots uniformly over
                the data span, so the closed-form basis and the fused kernels keep applying.
        """
        _check_features(x, self.in_features, 'KANLinear.update_grid')
        x = x.reshape(-1, self.in_features).to(self.grid.dtype)
        old_spline = torch.einsum('mik,oik->imo', self.basis(x), self.scaled_spline_weight())  # (d, M, d')
        eps = self.grid_eps if grid_eps is None else grid_eps
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f'KANLinear.update_grid: grid_eps must be in [0, 1], got {grid_eps!r}')
        knots = self._knots_from_data(x, margin, eps) if grid is None else grid.to(self.grid)
        if knots.shape != self.grid.shape:
            raise ValueError(f'KANLinear.update_grid: grid must have shape {tuple(self.grid.shape)}, '
                             f'got {tuple(knots.shape)}')
        self.grid.copy_(knots)
        self.grid_uniform = knots_are_uniform(self.grid)

        coeff = _least_squares(self.basis(x).transpose(0, 1), old_spline)  # (d, K, d')
        coeff = coeff.permute(2, 0, 1)  # (d', d, K) = scaled spline weight
        # store W_s = coeff / scaler (the published refit stores coeff and scales it a second time)
        scaler = self.spline_scaler
        tiny = scaler.abs() < 1e-8
        self.spline_scaler.copy_(torch.where(tiny, torch.ones_like(scaler), scaler))
        self.spline_weight.copy_(coeff / self.spline_scaler.unsqueeze(-1))

    def _knots_from_data(self, x: torch.Tensor, margin: float, grid_eps: float) -> torch.Tensor:
        """x (M, d) -> knots (d, G + 2k + 1)."""
        m, k, g = x.shape[0], self.spline_order, self.grid_size
        x_sorted = x.sort(dim=0).values  # (M, d)
        quantile_idx = torch.linspace(0, m - 1, g + 1, device=x.device).round().long()
        grid_adaptive = x_sorted[quantile_idx]  # (G + 1, d)
        step = (x_sorted[-1] - x_sorted[0] + 2 * margin) / g  # (d,)
        grid_uniform = x_sorted[0] - margin + step * torch.arange(g + 1, device=x.device, dtype=x.dtype)[:, None]
        inner = grid_eps * grid_uniform + (1 - grid_eps) * grid_adaptive  # (G + 1, d)
        ext = torch.arange(1, k + 1, device=x.device, dtype=x.dtype)[:, None] * step  # (k, d)
        return torch.cat([inner[:1] - ext.flip(0), inner, inner[-1:] + ext], dim=0).T  # (d, G + 2k + 1)

    def regularization_loss(self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0):
        return spline_regularization(self.spline_weight, regularize_activation, regularize_entropy)

    def extra_repr(self) -> str:
        s = (f'in_features={self.in_features}, out_features={self.out_features}, grid_size={self.grid_size}, '
             f'spline_order={self.spline_order}, bias={self.bias is not None}')
        return s + backend_repr(self)


def _uniform_grid_params(grid: torch.Tensor) -> torch.Tensor:
    """knots (d, n) of uniform grids -> (2, d) fp32: first knot, 1 / spacing."""
    grid = grid.detach().float()
    return torch.stack([grid[:, 0], 1.0 / (grid[:, 1] - grid[:, 0])])


def _least_squares(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched min ||a x - b|| through ridge-damped normal equations in float64, on any device.

    a (d, M, K), b (d, M, d') -> (d, K, d'). Rank-deficient a (constant or duplicated data, fewer samples than
    basis functions) is fine: the damping picks the small-norm solution instead of failing like CUDA's `gels`.
    """
    a64, b64 = a.double(), b.double()
    ata = a64.transpose(1, 2) @ a64  # (d, K, K)
    atb = a64.transpose(1, 2) @ b64  # (d, K, d')
    scale = ata.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-30)  # (d,)
    eye = torch.eye(ata.shape[-1], dtype=ata.dtype, device=ata.device)
    ata = ata + (1e-10 * scale)[:, None, None] * eye
    return torch.linalg.solve(ata, atb).to(b.dtype)


_MATMULS = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default)


def _save_matmuls(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Selective checkpoint policy: keep matmul outputs, recompute the rest (the elementwise basis)."""
    return CheckpointPolicy.MUST_SAVE if op in _MATMULS else CheckpointPolicy.PREFER_RECOMPUTE


_SAVE_MATMULS_CONTEXT = functools.partial(create_selective_checkpoint_contexts, _save_matmuls)


class FasterKANLinear(nn.Module):
    """FasterKAN layer: LayerNorm -> RSWAF basis on K grid points -> linear (d * K -> d').

    The grid is symmetric, grid_range = (-r, r), with h the grid spacing by default, and the forward applies the
    1/h that FasterKAN's shipped code forgets; the input gradient is autograd's, the true derivative.
    kernel_backend: 'auto', 'reference' or 'fused', this layer's path (`kernels.set_backend` sets a model's).
    """

    def __init__(
            self,
            in_features: int,
            out_features: int,
            num_grids: int = 8,
            grid_range: Tuple[float, float] = (-2.0, 2.0),
            denominator: Optional[float] = None,
            bias: bool = False,
            device=None,
            dtype=None,
            kernel_backend: str = 'auto',
    ):
        super().__init__()
        self.kernel_backend = check_backend(kernel_backend, 'FasterKANLinear')
        if not isinstance(num_grids, int) or num_grids < 2:
            raise ValueError(f'FasterKANLinear: num_grids must be an integer >= 2, got {num_grids!r}')
        if not grid_range[0] < grid_range[1]:
            raise ValueError(f'FasterKANLinear: grid_range must be (low, high) with low < high, got {grid_range!r}')
        dd = {'device': device, 'dtype': dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.num_grids = num_grids
        self.grid_range = tuple(grid_range)
        h = denominator if denominator is not None else (grid_range[1] - grid_range[0]) / (num_grids - 1)
        if h <= 0:
            raise ValueError(f'FasterKANLinear: denominator must be > 0, got {denominator!r}')
        self.inv_h = 1.0 / h
        self.norm = nn.LayerNorm(in_features, **dd)
        self.register_buffer('grid', torch.linspace(grid_range[0], grid_range[1], num_grids, **dd))
        self.weight = nn.Parameter(torch.empty(out_features, in_features * num_grids, **dd))  # (d', d * K)
        self.bias = nn.Parameter(torch.empty(out_features, **dd)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        bound = 1.0 / math.sqrt(self.in_features * self.num_grids)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def init_weights(self) -> None:
        self.reset_parameters()

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., d, K), on the normalised input."""
        return rswaf_basis(self.norm(x), self.grid, self.inv_h)

    # Under torch.compile with kernel_backend 'auto', where the kernels would run: 'recompute' (the default) takes
    # `recompute_forward`, plain torch that inductor fuses and cuBLAS multiplies, the basis recomputed in the
    # backward (a selective checkpoint: the matmul outputs saved); 'fused' takes the kernels (as eager does). Chosen
    # by measurement (H200, 2026-11-28, bf16): vit_fasterkan_tiny compiled, x DeiT-tiny, 3 interleaved rounds, train
    # img/s 0.85 recompute / 0.81 fused / 0.77 compiled reference, peak memory 0.65 / 0.85 / 1.42 (eleventh run). The
    # layer pair alone moves more between calls than the forms differ (ms fwd + bwd: recompute as a plain checkpoint
    # 2.009 / fused 2.251 / reference 2.051 in one call; selective 1.968 / 1.611 / 1.865 in another).
    compiled_auto_form = 'recompute'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.in_features, 'FasterKANLinear')
        if fused_path(self, x):  # self.kernel_backend and x's device
            if (self.compiled_auto_form == 'recompute' and self.kernel_backend == 'auto'
                    and torch.compiler.is_compiling()):
                return self.recompute_forward(x)
            return self.fused_forward(x)
        lead = x.shape[:-1]
        basis = self.basis(x.reshape(-1, self.in_features)).flatten(1)  # (M, d * K)
        return F.linear(basis, self.weight, self.bias).reshape(*lead, self.out_features)

    def recompute_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reference path with the basis recomputed in the backward instead of saved: LayerNorm, then the
        RSWAF basis + linear inside torch.utils.checkpoint, so the backward keeps LayerNorm(x) (M, d) where the
        reference keeps the (M, d K) basis (and its tanh). Same values and gradients as the reference path.
        Selective: the matmul's output (M, d') is saved, only the basis recomputed. A plain checkpoint recomputes the
        matmul too wherever its output is needed in the backward (the next layer's LayerNorm backward reads it): in
        vit_fasterkan_tiny's compiled backward that was fc1's whole forward GEMM again (graph counted on the CPU)."""
        lead = x.shape[:-1]
        xn = self.norm(x.reshape(-1, self.in_features))  # (M, d)
        y = checkpoint(self._basis_linear, xn, use_reentrant=False, context_fn=_SAVE_MATMULS_CONTEXT)
        return y.reshape(*lead, self.out_features)

    def _basis_linear(self, xn: torch.Tensor) -> torch.Tensor:
        """(M, d) normalised input -> (M, d') = RSWAF basis (M, d K) @ weight^T (+ bias)."""
        return F.linear(rswaf_basis(xn, self.grid, self.inv_h).flatten(1), self.weight, self.bias)

    def fused_unsupported(self) -> Optional[str]:
        return None  # every FasterKANLinear configuration has a kernel

    def fused_forward(self, x: torch.Tensor) -> torch.Tensor:
        """forward through the fused kernel (ask `kernels.fused_path` first): LayerNorm in torch, then the RSWAF
        basis + matmul in one kernel over the slot-major weight (K, d', d). LayerNorm(x) keeps its dtype (fp32 under
        autocast): the basis is evaluated from it in fp32, as in the reference path (see KANLinear.fused_forward)."""
        dtype = compute_dtype(x)
        lead = x.shape[:-1]
        xn = self.norm(x.reshape(-1, self.in_features))  # (M, d)
        weight = self.weight.view(self.out_features, self.in_features, self.num_grids).permute(2, 0, 1)  # (K, d', d)
        weight = weight.to(dtype, memory_format=torch.contiguous_format)
        bias = None if self.bias is None else self.bias.to(dtype)
        y = basis_linear_call(xn, weight, self.grid.float(), bias, KIND_RSWAF, float(self.inv_h))
        return y.reshape(*lead, self.out_features)

    def regularization_loss(self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0):
        weight = self.weight.view(self.out_features, self.in_features, self.num_grids)
        return spline_regularization(weight, regularize_activation, regularize_entropy)

    def extra_repr(self) -> str:
        s = (f'in_features={self.in_features}, out_features={self.out_features}, num_grids={self.num_grids}, '
             f'grid_range={self.grid_range}, bias={self.bias is not None}')
        return s + backend_repr(self)
