"""Fused group-rational function (GR-KAN, orders 5/4) in Triton: one read of x, one write of y, forward and
backward, with the coefficient gradients reduced without global atomics.

Forward, per element (fp32 in registers, any input dtype):
    P = a0 + x(a1 + x(a2 + x(a3 + x(a4 + x a5)))),  T = x(b1 + x(b2 + x(b3 + x b4))),  y = P / (1 + |T|)
Backward, with Q = 1 + |T|, g = dy / Q and h = -dy P sign(T) / Q^2:
    dx = g P'(x) + h T'(x),  da_j = sum g x^j,  db_j = sum h x^j
Each backward program walks a strided set of row blocks for one column block and keeps 10 running (rows x
columns) sums in registers, folded over rows once at the end; it writes them to partials[split, 10, D] (no
atomics), and one torch reduction folds splits and the channels of each group: (splits, 10, D) -> (10, g).

The forward writes y in `out_dtype` (the autocast dtype under autocast: the matmul that follows reads it without a
cast pass); dx comes back in x's dtype. Exposed as `torch.library.triton_op`s (`torch.ops.vision_kan.rational_fwd`
/ `rational_bwd`, autograd registered): under torch.compile inductor traces into them and launches the Triton
kernels from its own generated code, with the fold of the partial sums as plain torch it fuses. Eager calls take an
autograd.Function over the same kernels (less dispatch per call). Triton is imported on first use.

Why triton_op and not an opaque custom op: a compiled vit_grkan_tiny step waited on the host with the opaque ops
(H200: 60.8 ms a step against ~19 ms of kernels), so backend 'auto' took a plain-torch fp32 form under compile
instead; the triton_op beats that form (H100, 2026-11-28, batch 256, bf16, bench_vit.py, one call: 10,269 against
8,454 img/s train, 0.84x against 0.69x DeiT-tiny compiled), and the form is gone.
"""
import contextlib
import functools
from typing import Iterator, Optional, Tuple

import torch

__all__ = ['rational_call', 'rational_fused', 'forced_launch', 'NUM_COEFFS', 'DEN_COEFFS']

NUM_COEFFS, DEN_COEFFS = 6, 4  # orders (5, 4): the only orders the kernel covers


@functools.lru_cache(maxsize=None)
def _kernels():
    import triton

    from . import _rational_kernels as k
    return triton, k.fwd_kernel, k.bwd_kernel


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == 'cuda' else 2


# Launch parameters. bwd: rows and columns per tile, FOLD_ROWS (the running sums folded over each tile's rows, or
# kept per row until the end), software-pipelining stages of the row loop, warps, programs per SM; None: by x's
# element size (_BWD_BY_SIZE). Chosen with benchmarks/bench_rational.py (H100, 2026-11-28, 50,432 tokens): 768 wide
# bf16 (fc1's output) 0.182 ms with (8, 64, 4 warps) against 0.198 for the former (8, 128, 4 warps); 192 wide fp32
# (LayerNorm's output) 0.089 ms with (4, 64, 8 warps) against 0.138. Folding per tile was 2-3x slower everywhere.
_LAUNCH = {'fwd': {'BLOCK_M': 32, 'BLOCK_D': 128, 'num_warps': 4},
           'bwd': {'BLOCK_M': None, 'BLOCK_D': 64, 'FOLD_ROWS': False, 'STAGES': 1, 'num_warps': None, 'per_sm': 4}}
_BWD_BY_SIZE = {4: {'BLOCK_M': 4, 'num_warps': 8}, 2: {'BLOCK_M': 8, 'num_warps': 4}}


@contextlib.contextmanager
def forced_launch(kernel: str, **params) -> Iterator[None]:
    """Run the 'fwd' or 'bwd' kernel with some launch parameters replaced (benchmarks: the sweep; tests)."""
    if kernel not in _LAUNCH or not set(params) <= set(_LAUNCH[kernel]):
        raise ValueError(f'forced_launch: unknown kernel {kernel!r} or parameters {sorted(params)}')
    saved = dict(_LAUNCH[kernel])
    _LAUNCH[kernel].update(params)
    try:
        yield
    finally:
        _LAUNCH[kernel] = saved


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).contiguous()  # (M, D)


def _fwd(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, out_dtype: Optional[torch.dtype],
         traced: bool = False) -> torch.Tensor:
    """traced: inside the triton_op on CUDA (the kernel through `wrap_triton`, which torch.compile traces into)."""
    triton, fwd_kernel, _ = _kernels()
    rows = _as_rows(x)
    m, d = rows.shape
    y = torch.empty(m, d, dtype=out_dtype or x.dtype, device=x.device)
    cfg = _LAUNCH['fwd']
    grid = (triton.cdiv(m, cfg['BLOCK_M']), triton.cdiv(d, cfg['BLOCK_D']))
    kernel = torch.library.wrap_triton(fwd_kernel) if traced else fwd_kernel
    kernel[grid](rows, a.float().contiguous(), b.float().contiguous(), y, m, d, d // a.shape[0], **cfg)
    return y.reshape(x.shape)


def _bwd_grid(m: int, d: int, x: torch.Tensor) -> Tuple[int, int, int, dict]:
    """(splits, column blocks, row-block iterations per program, kernel keywords) of the backward launch on x."""
    by_size = _BWD_BY_SIZE.get(x.element_size(), _BWD_BY_SIZE[2])
    cfg = {k: by_size[k] if v is None else v for k, v in _LAUNCH['bwd'].items()}
    per_sm = cfg.pop('per_sm')
    col_blocks = -(-d // cfg['BLOCK_D'])
    row_blocks = -(-m // cfg['BLOCK_M'])
    splits = max(1, min(row_blocks, (per_sm * _num_sms(x.device)) // col_blocks))  # programs per SM
    return splits, col_blocks, -(-row_blocks // splits), cfg


def _bwd_partials(dy: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                  traced: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """dy (..., D) -> dx (..., D) in x's dtype and the coefficient-gradient partial sums (splits, 10, D) fp32."""
    _, _, bwd_kernel = _kernels()
    rows, dy_rows = _as_rows(x), _as_rows(dy)
    m, d = rows.shape
    splits, col_blocks, iters, cfg = _bwd_grid(m, d, x)
    dx = torch.empty_like(rows)
    partials = torch.empty(splits, 10, d, device=x.device, dtype=torch.float32)
    kernel = torch.library.wrap_triton(bwd_kernel) if traced else bwd_kernel
    kernel[(splits, col_blocks)](rows, dy_rows, a.float().contiguous(), b.float().contiguous(), dx, partials,
                                 m, d, d // a.shape[0], iters, **cfg)
    return dx.reshape(x.shape), partials


def _fold(partials: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(splits, 10, D) partial sums -> da (g, 6), db (g, 4): over splits and each group's channels."""
    splits, _, d = partials.shape
    groups = a.shape[0]
    sums = partials.view(splits, 10, groups, d // groups).sum((0, 3))  # (10, g)
    return sums[:NUM_COEFFS].T.contiguous().to(a.dtype), sums[NUM_COEFFS:].T.contiguous().to(b.dtype)


def _bwd(dy: torch.Tensor, x: torch.Tensor, a: torch.Tensor,
         b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, partials = _bwd_partials(dy, x, a, b)
    return (dx,) + _fold(partials, a, b)


# Under Triton's CPU interpreter (the tests) wrap_triton cannot trace an interpreted kernel: there the triton_ops
# below call these opaque custom ops instead, so the CPU tests still check schema, fake shapes, autograd and compile.
@torch.library.custom_op('vision_kan::rational_fwd_interpreted', mutates_args=())
def _fwd_interpreted(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                     out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    return _fwd(x, a, b, out_dtype)


@_fwd_interpreted.register_fake
def _(x, a, b, out_dtype=None):
    return torch.empty_like(x, dtype=out_dtype or x.dtype, memory_format=torch.contiguous_format)


@torch.library.custom_op('vision_kan::rational_bwd_interpreted', mutates_args=())
def _bwd_interpreted(dy: torch.Tensor, x: torch.Tensor, a: torch.Tensor,
                     b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return _bwd_partials(dy, x, a, b)


@_bwd_interpreted.register_fake
def _(dy, x, a, b):
    splits = _bwd_grid(x.numel() // x.shape[-1], x.shape[-1], x)[0]
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty(splits, 10, x.shape[-1], dtype=torch.float32))


# torch.library.triton_op: under torch.compile inductor sees the Triton kernels inside and launches them from its
# own generated code (no Python op dispatch per call); the fold of the partial sums stays plain torch for it to fuse.
@torch.library.triton_op('vision_kan::rational_fwd', mutates_args=())
def rational_fwd(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                 out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """x (..., D), a (g, 6), b (g, 4) -> y (..., D) in out_dtype (default x's)."""
    if not x.is_cuda:
        return _fwd_interpreted(x, a, b, out_dtype)
    return _fwd(x, a, b, out_dtype, traced=True)


@torch.library.triton_op('vision_kan::rational_bwd', mutates_args=())
def rational_bwd(dy: torch.Tensor, x: torch.Tensor, a: torch.Tensor,
                 b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """dy (..., D) -> (dx in x's dtype, partial sums (splits, 10, D) of the coefficient gradients)."""
    if not x.is_cuda:
        return _bwd_interpreted(dy, x, a, b)
    return _bwd_partials(dy, x, a, b, traced=True)


def _setup_context(ctx, inputs, output):
    x, a, b, _ = inputs
    ctx.save_for_backward(x, a, b)


def _backward(ctx, dy):
    x, a, b = ctx.saved_tensors
    dx, partials = rational_bwd(dy, x, a, b)
    return (dx,) + _fold(partials, a, b) + (None,)


rational_fwd.register_autograd(_backward, setup_context=_setup_context)


class _RationalEager(torch.autograd.Function):
    """The eager twin of the custom ops: same kernels, same saved tensors, less dispatch per call."""

    @staticmethod
    def forward(ctx, x, a, b, out_dtype):
        ctx.save_for_backward(x, a, b)
        return _fwd(x, a, b, out_dtype)

    @staticmethod
    def backward(ctx, dy):
        x, a, b = ctx.saved_tensors
        return _bwd(dy, x, a, b) + (None,)


def rational_call(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                  out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The fused rational for the layers: the triton_op under torch.compile, the autograd.Function in eager."""
    if torch.compiler.is_compiling():
        return rational_fwd(x, a, b, out_dtype)
    return _RationalEager.apply(x, a, b, out_dtype)


def rational_fused(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Same function as `vision_kan.layers.grkan.rational`, fused, output in x's dtype. x (..., D), a (g, 6),
    b (g, 4) -> (..., D)."""
    return rational_call(x, a, b)
